//! Tests of the request guard: every schema against kafka-protocol's decoder, and hostile input.

use super::*;
use bytes::Bytes as Buf;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

// -- byte writer ---------------------------------------------------------------------

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn i16(self, v: i16) -> Self {
        self.raw(&v.to_be_bytes())
    }
    fn i32(self, v: i32) -> Self {
        self.raw(&v.to_be_bytes())
    }
    fn uvarint(mut self, v: u32) -> Self {
        put_uvarint(&mut self.0, v);
        self
    }
    fn str(self, s: &str) -> Self {
        self.i16(s.len() as i16).raw(s.as_bytes())
    }
    fn cstr(self, s: &str) -> Self {
        self.uvarint(s.len() as u32 + 1).raw(s.as_bytes())
    }
    /// Request header; v2 (flexible) adds an empty tagged-field section.
    fn header(key: i16, version: i16, correlation_id: i32, flexible: bool) -> Self {
        let w = W::default()
            .i16(key)
            .i16(version)
            .i32(correlation_id)
            .str("cli");
        if flexible {
            w.uvarint(0)
        } else {
            w
        }
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn malformed(frame: &[u8]) -> bool {
    matches!(check_request(frame), Err(GuardError::Malformed(_)))
}

// -- schema-driven generator of valid frames -------------------------------------------

/// Unknown tag written into every flexible struct (must not collide with a known tag).
const UNKNOWN_TAG: u32 = 1000;

/// Writes a valid value for every field: 2-element arrays, non-null unique strings
/// ("s1", "s2", ...) and bytes ("b3", ...), plus known and unknown tagged fields.
/// Every string, bytes and array written is a numbered "slot"; with `null_at = Some(k)`
/// slot k is written as null instead, to compare nullability with the decoder.
#[derive(Default)]
struct Gen {
    out: Vec<u8>,
    next: u32,
    markers: Vec<String>,
    slots: u32,
    null_at: Option<u32>,
}

impl Gen {
    fn len(&mut self, flexible: bool, wide: bool, n: Option<usize>) {
        match (flexible, n) {
            (true, n) => put_uvarint(&mut self.out, n.map_or(0, |n| n as u32 + 1)),
            (false, n) if wide => {
                let n = n.map_or(-1, |n| n as i32);
                self.out.extend_from_slice(&n.to_be_bytes());
            }
            (false, n) => {
                let n = n.map_or(-1, |n| n as i16);
                self.out.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    /// Takes the next slot; writes null and returns false when it is the one to null.
    fn slot(&mut self, flexible: bool, wide: bool) -> bool {
        let slot = self.slots;
        self.slots += 1;
        if self.null_at == Some(slot) {
            self.len(flexible, wide, None);
            return false;
        }
        true
    }

    fn marker(&mut self, prefix: char, flexible: bool, wide: bool) {
        if self.slot(flexible, wide) {
            self.next += 1;
            let m = format!("{prefix}{}", self.next);
            self.len(flexible, wide, Some(m.len()));
            self.out.extend_from_slice(m.as_bytes());
            self.markers.push(m);
        }
    }

    fn ty(&mut self, ty: Ty, version: i16, flexible: bool) {
        match ty {
            Ty::Fixed(n) => self.out.extend(std::iter::repeat_n(1u8, n)),
            Ty::Str(_) => self.marker('s', flexible, false),
            Ty::Bytes(_) => self.marker('b', flexible, true),
            Ty::Array(_, elem) => {
                if self.slot(flexible, true) {
                    self.len(flexible, true, Some(2));
                    self.ty(elem.ty(), version, flexible);
                    self.ty(elem.ty(), version, flexible);
                }
            }
            Ty::Struct(s) => self.strukt(s, version, flexible),
            Ty::OptionStruct(s) => {
                // A slot like a nullable string: null is the marker -1.
                let slot = self.slots;
                self.slots += 1;
                if self.null_at == Some(slot) {
                    self.out.push(0xff);
                } else {
                    self.out.push(1);
                    self.strukt(s, version, flexible);
                }
            }
        }
    }

    fn strukt(&mut self, s: &Struct, version: i16, flexible: bool) {
        for f in s.fields.iter().filter(|f| f.covers(version)) {
            self.ty(f.ty, version, flexible);
        }
        if flexible {
            let known: Vec<&Tagged> = s
                .tagged
                .iter()
                .filter(|t| t.field.covers(version))
                .collect();
            put_uvarint(&mut self.out, known.len() as u32 + 1);
            for t in known {
                // Tagged content is written on its own to learn its size.
                let outer = std::mem::take(&mut self.out);
                self.ty(t.field.ty, version, true);
                let content = std::mem::replace(&mut self.out, outer);
                put_uvarint(&mut self.out, t.tag);
                put_uvarint(&mut self.out, content.len() as u32);
                self.out.extend_from_slice(&content);
            }
            // An unknown tag, which the decoder keeps as raw bytes.
            put_uvarint(&mut self.out, UNKNOWN_TAG);
            put_uvarint(&mut self.out, 3);
            self.out.extend_from_slice(&[7, 7, 7]);
        }
    }
}

fn correlation_id(version: i16) -> i32 {
    0x0102_0000 + i32::from(version)
}

/// A frame for `api` at `version` (valid when `null_at` is None), with its generator state.
fn frame(api: &Api, version: i16, null_at: Option<u32>) -> Gen {
    let flexible = version >= api.flexible_from;
    let mut head = W::default()
        .i16(api.key)
        .i16(version)
        .i32(correlation_id(version))
        .str("client");
    if flexible {
        head = head.uvarint(1).uvarint(UNKNOWN_TAG).uvarint(2).raw(&[9, 9]);
    }
    let mut g = Gen {
        out: head.0,
        null_at,
        ..Gen::default()
    };
    g.strukt(api.body, version, flexible);
    g
}

fn valid_frame(api: &Api, version: i16) -> (Vec<u8>, Vec<String>) {
    let g = frame(api, version, None);
    (g.out, g.markers)
}

fn all_valid_frames() -> Vec<(i16, i16, Vec<u8>, Vec<String>)> {
    APIS.iter()
        .flat_map(|api| {
            (api.min..=api.max).map(move |v| {
                let (frame, markers) = valid_frame(api, v);
                (api.key, v, frame, markers)
            })
        })
        .collect()
}

/// Decodes with kafka-protocol exactly as the broker would after the guard.
fn decode(
    frame: &[u8],
    checked: CheckedHeader,
) -> Result<(RequestHeader, RequestKind, usize), String> {
    let mut buf = Buf::copy_from_slice(frame);
    let header =
        RequestHeader::decode(&mut buf, checked.header_version).map_err(|e| format!("{e:#}"))?;
    let key = ApiKey::try_from(checked.api_key).map_err(|()| "api key".to_string())?;
    let body =
        RequestKind::decode(key, &mut buf, checked.api_version).map_err(|e| format!("{e:#}"))?;
    Ok((header, body, buf.len()))
}

// -- tests -----------------------------------------------------------------------------

#[test]
fn every_supported_version_is_accepted_and_decodes() {
    let frames = all_valid_frames();
    assert!(frames.len() > 100);
    for (key, version, frame, markers) in frames {
        let checked =
            check_request(&frame).unwrap_or_else(|e| panic!("api {key} v{version} refused: {e}"));
        assert_eq!((checked.api_key, checked.api_version), (key, version));
        assert_eq!(checked.correlation_id, correlation_id(version));
        let (header, body, left) = decode(&frame, checked)
            .unwrap_or_else(|e| panic!("api {key} v{version} does not decode: {e}"));
        assert_eq!(left, 0, "api {key} v{version}: decoder left {left} bytes");
        assert_eq!(header.request_api_key, key);
        assert_eq!(header.correlation_id, checked.correlation_id);
        assert_eq!(header.client_id.as_deref(), Some("client"));
        // Every string/bytes value written must come back as such from the decoder.
        let dbg = format!("{body:?}");
        for m in markers {
            assert!(
                dbg.contains(&format!("\"{m}\"")),
                "api {key} v{version}: {m} missing from {dbg}"
            );
        }
    }
}

#[test]
fn nullability_of_every_field_matches_the_decoder() {
    let mut nullable = 0;
    for api in &APIS {
        for version in api.min..=api.max {
            let slots = frame(api, version, None).slots;
            for k in 0..slots {
                let f = frame(api, version, Some(k)).out;
                let header = CheckedHeader {
                    api_key: api.key,
                    api_version: version,
                    correlation_id: correlation_id(version),
                    header_version: if version >= api.flexible_from { 2 } else { 1 },
                };
                // These frames carry no oversized lengths, so decoding them is safe.
                let decoded = decode(&f, header);
                let guard = check_request(&f);
                assert_eq!(
                    guard.is_ok(),
                    decoded.is_ok(),
                    "api {} v{version} null in slot {k}: guard {guard:?}, decoder {:?}",
                    api.key,
                    decoded.err()
                );
                if let Ok((_, _, left)) = decoded {
                    assert_eq!(guard, Ok(header));
                    assert_eq!(left, 0);
                    nullable += 1;
                }
            }
        }
    }
    assert!(nullable > 0);
}

#[test]
fn ranges_and_header_versions_agree_with_kafka_protocol() {
    for api in &APIS {
        let key = ApiKey::try_from(api.key).expect("known to kafka-protocol");
        let range = key.valid_versions();
        assert!(
            range.min <= api.min && api.max <= range.max,
            "api {}",
            api.key
        );
        assert_eq!(supported_versions(api.key), Some((api.min, api.max)));
        for v in api.min..=api.max {
            let hv = if v >= api.flexible_from { 2 } else { 1 };
            assert_eq!(key.request_header_version(v), hv, "api {} v{v}", api.key);
        }
    }
    assert_eq!(supported_versions(999), None);
    assert_eq!(supported_versions(17), None);
}

#[test]
fn metadata_with_huge_array_count_is_rejected() {
    let frame = W::header(3, 1, 7, false).raw(&[0x7f, 0xff, 0xff, 0xff]).0;
    assert!(malformed(&frame));
    // Also with the topics present as far as the frame goes.
    let frame = W::header(3, 1, 7, false).i32(3).str("a").str("b").0;
    assert!(malformed(&frame));
}

#[test]
fn flexible_metadata_with_huge_compact_count_is_rejected() {
    for count in [u32::MAX, 0x8000_0000, 1 << 20, 3] {
        let frame = W::header(3, 9, 7, true)
            .uvarint(count)
            .cstr("a")
            .uvarint(0)
            .0;
        assert!(malformed(&frame), "count {count}");
    }
}

#[test]
fn produce_with_huge_partition_count_is_rejected() {
    let frame = W::header(0, 3, 7, false)
        .i16(-1) // transactional_id
        .i16(1)
        .i32(1000)
        .i32(1) // one topic
        .str("t")
        .i32(0x7fff_ffff) // partitions
        .i32(0)
        .i32(-1)
        .0;
    assert!(malformed(&frame));
    // Same shape with a sane count is fine.
    let frame = W::header(0, 3, 7, false)
        .i16(-1)
        .i16(1)
        .i32(1000)
        .i32(1)
        .str("t")
        .i32(1)
        .i32(0)
        .i32(-1)
        .0;
    assert!(check_request(&frame).is_ok());
    // Huge records length.
    let frame = W::header(0, 3, 7, false)
        .i16(-1)
        .i16(1)
        .i32(1000)
        .i32(1)
        .str("t")
        .i32(1)
        .i32(0)
        .i32(i32::MAX)
        .raw(&[0; 16])
        .0;
    assert!(malformed(&frame));
}

#[test]
fn compact_string_of_max_length_is_rejected() {
    // ApiVersions v3 client_software_name with length prefix 2^32-1 (len 2^32-2).
    let frame = W::header(18, 3, 7, true).uvarint(u32::MAX).raw(b"abc").0;
    assert!(malformed(&frame));
    // Compact bytes of a flexible Produce record field.
    let frame = W::header(0, 9, 7, true)
        .uvarint(0)
        .i16(1)
        .i32(0)
        .uvarint(2)
        .cstr("t")
        .uvarint(2)
        .i32(0)
        .uvarint(u32::MAX)
        .0;
    assert!(malformed(&frame));
}

#[test]
fn non_compact_string_longer_than_frame_is_rejected() {
    let frame = W::header(12, 0, 7, false).i16(i16::MAX).raw(b"g").0;
    assert!(malformed(&frame));
    let frame = W::default().i16(12).i16(0).i32(7).i16(100).0; // client_id
    assert!(malformed(&frame));
}

#[test]
fn truncated_metadata_is_malformed_at_every_length() {
    for version in [0, 1, 4, 8, 9, 10, 12] {
        let (frame, _) = valid_frame(find_api(3).unwrap(), version);
        assert!(check_request(&frame).is_ok());
        for cut in 0..frame.len() {
            assert!(malformed(&frame[..cut]), "v{version} cut at {cut}");
        }
    }
}

#[test]
fn every_truncation_of_every_valid_frame_is_malformed() {
    for (key, version, frame, _) in all_valid_frames() {
        for cut in 0..frame.len() {
            assert!(
                malformed(&frame[..cut]),
                "api {key} v{version} cut at {cut}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_allowed() {
    let (mut frame, _) = valid_frame(find_api(3).unwrap(), 1);
    frame.extend_from_slice(&[0xff; 5]);
    assert!(check_request(&frame).is_ok());
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_frames_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for i in 0..10_000 {
        let len = (rng.next() % 200) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half of the frames get a real api key and version so the body walker runs.
        if i % 2 == 0 && frame.len() >= 4 {
            let api = &APIS[(rng.next() % APIS.len() as u64) as usize];
            let span = (api.max - api.min + 1) as u64;
            let version = api.min + (rng.next() % span) as i16;
            frame[..2].copy_from_slice(&api.key.to_be_bytes());
            frame[2..4].copy_from_slice(&version.to_be_bytes());
            // A null client id, so that more random bodies reach the body walker.
            if frame.len() >= 10 {
                frame[8..10].copy_from_slice(&(-1i16).to_be_bytes());
            }
        }
        if let Ok(checked) = check_request(&frame) {
            accepted += 1;
            // Only frames the guard accepts may reach the decoder.
            let _ = decode(&frame, checked);
        }
    }
    assert!(
        accepted > 10,
        "only {accepted} random frames reached the decoder"
    );
}

#[test]
fn mutated_valid_frames_never_slip_past_the_guard() {
    let frames = all_valid_frames();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut accepted = 0;
    for round in 0..20_000 {
        let (key, version, frame, _) = &frames[round % frames.len()];
        let mut frame = frame.clone();
        for _ in 0..1 + rng.next() % 3 {
            let at = (rng.next() % frame.len() as u64) as usize;
            frame[at] = match rng.next() % 4 {
                0 => 0xff,
                1 => 0x7f,
                2 => 0,
                _ => rng.next() as u8,
            };
        }
        if let Ok(checked) = check_request(&frame) {
            accepted += 1;
            // The decoder must not abort; when it fails, it is only over text encoding
            // (the guard does not validate UTF-8).
            if let Err(e) = decode(&frame, checked) {
                assert!(
                    e.contains("utf-8") || e.contains("UTF-8") || e.contains("utf8"),
                    "api {key} v{version}: guard accepted what the decoder refuses: {e}"
                );
            }
        }
    }
    assert!(
        accepted > 1000,
        "only {accepted} mutated frames were accepted"
    );
}

#[test]
fn api_versions_above_max_is_unsupported() {
    for version in [5, 7, i16::MAX] {
        let frame = W::header(18, version, 0x0a0b_0c0d, true).0;
        assert_eq!(
            check_request(&frame),
            Err(GuardError::UnsupportedVersion {
                api_key: 18,
                api_version: version,
                correlation_id: 0x0a0b_0c0d,
            })
        );
        // The first 8 bytes are enough.
        assert_eq!(check_request(&frame[..8]), check_request(&frame));
    }
    let frame = W::header(18, -1, 5, false).0;
    assert!(matches!(
        check_request(&frame),
        Err(GuardError::UnsupportedVersion {
            correlation_id: 5,
            ..
        })
    ));
    // Produce below what kafka-protocol decodes.
    let frame = W::header(0, 2, 5, false).0;
    assert!(matches!(
        check_request(&frame),
        Err(GuardError::UnsupportedVersion {
            api_key: 0,
            api_version: 2,
            ..
        })
    ));
}

#[test]
fn api_versions_v0_to_v4_are_accepted() {
    for version in 0..=2 {
        let frame = W::header(18, version, 1, false).0;
        assert_eq!(check_request(&frame).map(|h| h.header_version), Ok(1));
    }
    for version in 3..=4 {
        let frame = W::header(18, version, 1, true)
            .cstr("x")
            .cstr("1")
            .uvarint(0)
            .0;
        assert_eq!(check_request(&frame).map(|h| h.header_version), Ok(2));
    }
}

#[test]
fn unknown_api_key_is_reported() {
    let frame = W::default().i16(999).i16(0).i32(42).0;
    assert_eq!(
        check_request(&frame),
        Err(GuardError::UnknownApi {
            api_key: 999,
            api_version: 0,
            correlation_id: 42,
        })
    );
    assert!(GuardError::UnknownApi {
        api_key: 999,
        api_version: 0,
        correlation_id: 42
    }
    .to_string()
    .contains("999"));
}

#[test]
fn short_frames_are_malformed() {
    let frame = W::default().i16(18).i16(3).i32(42).0;
    for cut in 0..8 {
        assert!(malformed(&frame[..cut]));
    }
}

#[test]
fn bad_lengths_and_nulls_are_rejected() {
    // Negative string length other than -1.
    let frame = W::header(12, 0, 7, false).i16(-2).0;
    assert!(malformed(&frame));
    // Null group_id (not nullable).
    let frame = W::header(12, 0, 7, false).i16(-1).i32(1).str("m").0;
    assert!(malformed(&frame));
    // Null compact group_id.
    let frame = W::header(12, 4, 7, true)
        .uvarint(0)
        .i32(1)
        .cstr("m")
        .uvarint(0)
        .uvarint(0)
        .0;
    assert!(malformed(&frame));
    // Null (non-nullable) Produce topic array, and negative array count.
    for count in [-1, -2] {
        let frame = W::header(0, 3, 7, false).i16(-1).i16(1).i32(0).i32(count).0;
        assert!(malformed(&frame), "count {count}");
    }
    // Null Metadata topics is allowed (all topics).
    let frame = W::header(3, 1, 7, false).i32(-1).0;
    assert!(check_request(&frame).is_ok());
    // Negative bytes length other than -1.
    let frame = W::header(0, 3, 7, false)
        .i16(-1)
        .i16(1)
        .i32(0)
        .i32(1)
        .str("t")
        .i32(1)
        .i32(0)
        .i32(-5)
        .0;
    assert!(malformed(&frame));
}

#[test]
fn overlong_varints_are_rejected() {
    // Continuation bit on the fifth byte.
    let frame = W::header(3, 9, 7, true)
        .raw(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00])
        .0;
    assert!(malformed(&frame));
    // Fifth byte carrying bits past 32.
    let frame = W::header(3, 9, 7, true)
        .raw(&[0x81, 0x80, 0x80, 0x80, 0x10])
        .uvarint(0)
        .0;
    assert!(malformed(&frame));
    // Huge tagged-field count in the header.
    let frame = W::header(3, 9, 7, false).uvarint(u32::MAX).0;
    assert!(malformed(&frame));
}

/// Fetch v12 with an empty topic list and the given top-level tagged section.
fn fetch_v12(tagged: &[u8]) -> Vec<u8> {
    W::header(1, 12, 7, true)
        .i32(-1)
        .i32(500)
        .i32(1)
        .i32(1 << 20)
        .raw(&[0])
        .i32(0)
        .i32(-1)
        .uvarint(1) // topics: empty
        .uvarint(1) // forgotten topics: empty
        .cstr("") // rack_id
        .raw(tagged)
        .0
}

#[test]
fn fetch_known_tagged_fields_are_walked() {
    // cluster_id (tag 0) with matching size.
    let ok = fetch_v12(&W::default().uvarint(1).uvarint(0).uvarint(4).cstr("abc").0);
    let checked = check_request(&ok).unwrap();
    let (_, body, left) = decode(&ok, checked).unwrap();
    assert_eq!(left, 0);
    assert!(format!("{body:?}").contains("\"abc\""));
    // Null cluster_id.
    assert!(check_request(&fetch_v12(&[1, 0, 1, 0])).is_ok());
    // Declared size disagrees with the content the decoder would read.
    let bad = fetch_v12(&W::default().uvarint(1).uvarint(0).uvarint(1).cstr("abc").0);
    assert!(malformed(&bad));
    // Small declared size hiding a huge compact string length.
    let bad = fetch_v12(
        &W::default()
            .uvarint(1)
            .uvarint(0)
            .uvarint(1)
            .uvarint(u32::MAX)
            .0,
    );
    assert!(malformed(&bad));
    // replica_state (tag 1) only exists from v15; the decoder fails on it at v12.
    let bad = fetch_v12(
        &W::default()
            .uvarint(1)
            .uvarint(1)
            .uvarint(12)
            .raw(&[0; 12])
            .0,
    );
    assert!(malformed(&bad));
    // Unknown tag: skipped by size, which must fit.
    assert!(check_request(&fetch_v12(
        &W::default().uvarint(1).uvarint(5).uvarint(2).raw(&[1, 2]).0
    ))
    .is_ok());
    assert!(malformed(&fetch_v12(
        &W::default().uvarint(1).uvarint(5).uvarint(3).raw(&[1, 2]).0
    )));
}

#[test]
fn admin_requests_with_huge_counts_are_rejected() {
    // DeleteRecords v1 claiming 2^31-1 topics.
    let frame = W::header(21, 1, 7, false).i32(i32::MAX).str("t").0;
    assert!(malformed(&frame));
    // DescribeLogDirs v1: one topic claiming 2^31-1 partitions.
    let frame = W::header(35, 1, 7, false).i32(1).str("t").i32(i32::MAX).0;
    assert!(malformed(&frame));
    // CreateAcls v2 (flexible) with a compact count of 2^32-2.
    let frame = W::header(30, 2, 7, true)
        .uvarint(u32::MAX)
        .raw(&[1, 2, 3])
        .0;
    assert!(malformed(&frame));
    // AlterPartitionReassignments v0: one topic, one partition, replicas claiming 2^20.
    let frame = W::header(45, 0, 7, true)
        .i32(1000)
        .uvarint(2)
        .cstr("t")
        .uvarint(2)
        .i32(0)
        .uvarint(1 << 20)
        .0;
    assert!(malformed(&frame));
    // ElectLeaders v1 truncated after the election type.
    let frame = W::header(43, 1, 7, false).raw(&[0]).0;
    assert!(malformed(&frame));
    // The same requests with honest counts pass.
    let frame = W::header(21, 1, 7, false)
        .i32(1)
        .str("t")
        .i32(1)
        .i32(0)
        .raw(&(-1i64).to_be_bytes())
        .i32(1000)
        .0;
    assert!(check_request(&frame).is_ok());
    let frame = W::header(35, 1, 7, false).i32(-1).0;
    assert!(check_request(&frame).is_ok(), "null topic list = all");
}
