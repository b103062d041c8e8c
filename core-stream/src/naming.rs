//! How names made of levels (MQTT topic levels, AMQP routing-key words) become stream names
//! and back, by one reversible rule that every protocol shares.
//!
//! A stream name is dot-separated segments of `[A-Za-z0-9_-]` (what a Kafka topic name may
//! hold, minus the dot that separates segments). Each level becomes one segment:
//!
//! - a level made only of `[A-Za-z0-9_-]` that does not start with `__` is kept as it is
//!   (`sensors/temperature` ↔ `sensors.temperature`);
//! - any other level (empty, holding `.`, a space, `$`, non-ASCII, or starting with `__`) is
//!   written `__` followed by the lowercase hex of its UTF-8 bytes (`room 1` ↔ `__726f6f6d2031`,
//!   the empty level ↔ `__`).
//!
//! Decoding a segment reverses this; a segment starting with `__` that is not valid lowercase
//! hex of UTF-8 (a Kafka topic such as `__consumer_offsets`) is taken literally. So every level
//! sequence round-trips exactly, and every stream name reads as a level sequence.

use crate::error::{Result, StreamError};

/// Longest stream name (Kafka's topic-name limit).
pub const MAX_STREAM_NAME: usize = 249;

/// Marks a segment written as hex.
const HEX_MARK: &str = "__";

fn plain(level: &str) -> bool {
    !level.is_empty()
        && !level.starts_with(HEX_MARK)
        && level
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The stream-name segment for one level.
pub fn encode_segment(level: &str, out: &mut String) {
    if plain(level) {
        out.push_str(level);
        return;
    }
    out.push_str(HEX_MARK);
    for b in level.bytes() {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

/// The level a stream-name segment stands for.
pub fn decode_segment(segment: &str) -> std::borrow::Cow<'_, str> {
    let Some(hex) = segment.strip_prefix(HEX_MARK) else {
        return segment.into();
    };
    let valid = hex.len() % 2 == 0 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return segment.into();
    }
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| {
                if c.is_ascii_digit() {
                    c - b'0'
                } else {
                    c - b'a' + 10
                }
            };
            d(p[0]) << 4 | d(p[1])
        })
        .collect();
    match String::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => segment.into(),
    }
}

/// The stream name for a sequence of levels. Errors when it would be longer than
/// [`MAX_STREAM_NAME`] or there are no levels.
pub fn stream_name<'a>(levels: impl IntoIterator<Item = &'a str>) -> Result<String> {
    let mut out = String::new();
    for (i, level) in levels.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        encode_segment(level, &mut out);
        if out.len() > MAX_STREAM_NAME {
            return Err(StreamError::InvalidName(
                out.chars().take(40).collect::<String>() + "…",
                "longer than 249 characters once its levels are encoded",
            ));
        }
    }
    if out.is_empty() {
        return Err(StreamError::InvalidName(String::new(), "empty"));
    }
    Ok(out)
}

/// The levels a stream name stands for.
pub fn levels(stream: &str) -> Vec<std::borrow::Cow<'_, str>> {
    stream.split('.').map(decode_segment).collect()
}

/// True when a stream-name segment stands for a level starting with `$` (MQTT's system
/// topics, which filters starting with a wildcard must not match).
pub fn is_dollar_segment(segment: &str) -> bool {
    segment.starts_with("__24")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(levels_in: &[&str]) -> String {
        let name = stream_name(levels_in.iter().copied()).unwrap();
        crate::stream::validate_name(&name).unwrap();
        let back: Vec<String> = levels(&name).into_iter().map(|c| c.into_owned()).collect();
        assert_eq!(back, levels_in, "via {name}");
        name
    }

    #[test]
    fn plain_levels_are_kept_and_others_are_hex() {
        assert_eq!(
            round_trip(&["sensors", "temperature"]),
            "sensors.temperature"
        );
        assert_eq!(
            round_trip(&["devices", "d-1_a", "telemetry"]),
            "devices.d-1_a.telemetry"
        );
        assert_eq!(round_trip(&["room 1"]), "__726f6f6d2031");
        assert_eq!(round_trip(&["", "TopicA"]), "__.TopicA");
        assert_eq!(round_trip(&["v1.2"]), "__76312e32");
        assert_eq!(round_trip(&["$SYS", "x"]), "__24535953.x");
        assert!(is_dollar_segment("__24535953"));
        round_trip(&["__consumer_offsets"]);
        round_trip(&["über", "日本", "a+b#c"]);
    }

    #[test]
    fn kafka_names_read_as_levels() {
        let l: Vec<_> = levels("__consumer_offsets").into_iter().collect();
        assert_eq!(l, vec!["__consumer_offsets"]);
        let l: Vec<_> = levels("orders.eu_new").into_iter().collect();
        assert_eq!(l, vec!["orders", "eu_new"]);
        // Valid hex that is not UTF-8 is literal.
        assert_eq!(decode_segment("__ff"), "__ff");
    }

    #[test]
    fn too_long_is_refused() {
        assert!(stream_name(["x".repeat(250).as_str()]).is_err());
        assert!(stream_name(["é".repeat(70).as_str()]).is_err());
        assert!(stream_name(std::iter::empty()).is_err());
    }

    #[test]
    fn random_level_sequences_round_trip() {
        // A small deterministic generator (no dev-dependency needed): levels of mixed bytes.
        let alphabet: Vec<char> = "aZ09_-. $/+#é日\u{0}".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let n = (next() % 4 + 1) as usize;
            let lv: Vec<String> = (0..n)
                .map(|_| {
                    let len = (next() % 6) as usize;
                    (0..len)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .filter(|c| *c != '/')
                        .collect()
                })
                .collect();
            let refs: Vec<&str> = lv.iter().map(String::as_str).collect();
            if let Ok(name) = stream_name(refs.iter().copied()) {
                crate::stream::validate_name(&name).unwrap();
                let back: Vec<String> = levels(&name).into_iter().map(|c| c.into_owned()).collect();
                assert_eq!(back, lv);
            }
        }
    }
}
