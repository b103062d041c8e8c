//! Pre-decode guard for Kafka request frames.
//!
//! `kafka-protocol` decodes arrays with `Vec::with_capacity(n)` and some strings/bytes with
//! `vec![0; n]`, where `n` comes straight off the wire. A four-byte body that claims 2^31
//! elements makes the process abort on the failed allocation, which cannot be caught. Before a
//! frame reaches the decoder, [`check_request`] walks it field by field, exactly as the decoder
//! would, without allocating, and refuses it when any length or count is larger than the bytes
//! that are left, or when the frame is truncated or otherwise malformed.
//!
//! The walk is driven by small static schema tables written from the generated decoders in
//! `kafka-protocol` 0.18.0 (`src/messages/*_request.rs`). Fields that only exist above the
//! highest version the guard supports are left out of the tables. Version ranges are clamped
//! to what that crate can decode (e.g. Produce starts at v3 there).
//!
//! The guard is slightly stricter than the decoder where the decoder is lax: varints longer
//! than 32 bits and known tagged fields whose content does not match their declared size are
//! refused. Since every array element is walked, a count accepted here is backed by real bytes;
//! the memory the decoder then reserves stays proportional to the frame size, which the
//! connection caps separately.

use std::fmt;

/// Why a request frame was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardError {
    /// The frame ended before the header or a field was complete, or a length/count is larger
    /// than the bytes left.
    Malformed(&'static str),
    /// The API key is not one the guard has a schema for (the broker answers it as unsupported).
    UnknownApi {
        /// API key from the request header.
        api_key: i16,
        /// API version from the request header.
        api_version: i16,
        /// Correlation id to echo in the error response.
        correlation_id: i32,
    },
    /// The version is outside the guard's schema range for that API.
    UnsupportedVersion {
        /// API key from the request header.
        api_key: i16,
        /// API version from the request header.
        api_version: i16,
        /// Correlation id to echo in the error response.
        correlation_id: i32,
    },
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Malformed(why) => write!(f, "malformed request frame: {why}"),
            GuardError::UnknownApi {
                api_key,
                api_version,
                correlation_id,
            } => write!(
                f,
                "unknown api key {api_key} (version {api_version}, correlation id {correlation_id})"
            ),
            GuardError::UnsupportedVersion {
                api_key,
                api_version,
                correlation_id,
            } => write!(
                f,
                "unsupported version {api_version} of api key {api_key} (correlation id {correlation_id})"
            ),
        }
    }
}

impl std::error::Error for GuardError {}

/// Result of a successful check: enough of the header to route the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedHeader {
    /// API key from the request header.
    pub api_key: i16,
    /// API version from the request header.
    pub api_version: i16,
    /// Correlation id to echo in the response.
    pub correlation_id: i32,
    /// Request header version (1 or 2; 0 is never used here), needed to decode the header.
    pub header_version: i16,
}

/// Checks one request frame (header then body, WITHOUT the 4-byte size prefix) before it is
/// handed to `kafka-protocol`.
///
/// Returns `Ok` when the whole frame is walkable and every length and count fits in the bytes
/// left. Bytes after the end of the body are allowed, as the decoder ignores them.
///
/// # Errors
///
/// [`GuardError::UnknownApi`] / [`GuardError::UnsupportedVersion`] when the API key or version
/// has no schema (these only need the first 8 bytes of the frame), and
/// [`GuardError::Malformed`] when the frame is truncated, has a bad varint or null/negative
/// length, or claims a length or count larger than the bytes left.
pub fn check_request(frame: &[u8]) -> Result<CheckedHeader, GuardError> {
    let mut c = Cursor { rest: frame };
    let (Ok(api_key), Ok(api_version), Ok(correlation_id)) = (c.i16(), c.i16(), c.i32()) else {
        return Err(GuardError::Malformed(
            "frame is shorter than the request header",
        ));
    };
    let api = find_api(api_key).ok_or(GuardError::UnknownApi {
        api_key,
        api_version,
        correlation_id,
    })?;
    if !(api.min..=api.max).contains(&api_version) {
        return Err(GuardError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let flexible = api_version >= api.flexible_from;
    // The header's client_id is a non-compact nullable string even in header v2.
    walk(&mut c, NSTR, api_version, false)?;
    if flexible {
        walk_tagged(&mut c, &[], api_version)?;
    }
    walk_struct(&mut c, api.body, api_version, flexible)?;
    Ok(CheckedHeader {
        api_key,
        api_version,
        correlation_id,
        header_version: if flexible { 2 } else { 1 },
    })
}

/// The inclusive version range the guard can scan for an API key, used by the broker to build
/// its `ApiVersions` answer.
#[must_use]
pub fn supported_versions(api_key: i16) -> Option<(i16, i16)> {
    find_api(api_key).map(|api| (api.min, api.max))
}

// ---------------------------------------------------------------------------------------------
// Schema DSL
// ---------------------------------------------------------------------------------------------

/// Upper bound for fields that exist in every later version.
const FOREVER: i16 = i16::MAX;

/// Wire type of one field. Strings, bytes and arrays are compact in flexible versions.
#[derive(Clone, Copy)]
enum Ty {
    /// Fixed-width value (ints, bool, uuid): just its size in bytes.
    Fixed(usize),
    /// String (i16 length, or compact); `true` when null is allowed.
    Str(bool),
    /// Bytes (i32 length, or compact); `true` when null is allowed.
    Bytes(bool),
    /// Array (i32 count, or compact); `true` when null is allowed.
    Array(bool, Elem),
    /// Nested struct, inline (only used for tagged fields).
    Struct(&'static Struct),
}

/// Element type of an array.
#[derive(Clone, Copy)]
enum Elem {
    I32,
    Str,
    Struct(&'static Struct),
}

impl Elem {
    fn ty(self) -> Ty {
        match self {
            Elem::I32 => I32,
            Elem::Str => STR,
            Elem::Struct(s) => Ty::Struct(s),
        }
    }
}

const I8: Ty = Ty::Fixed(1);
const BOOL: Ty = Ty::Fixed(1);
const I16: Ty = Ty::Fixed(2);
const I32: Ty = Ty::Fixed(4);
const I64: Ty = Ty::Fixed(8);
const UUID: Ty = Ty::Fixed(16);
const STR: Ty = Ty::Str(false);
const NSTR: Ty = Ty::Str(true);
const BYTES: Ty = Ty::Bytes(false);
/// Produce record batches: nullable bytes, kept raw by the decoder.
const RECORDS: Ty = Ty::Bytes(true);
const ARRAY_I32: Ty = Ty::Array(false, Elem::I32);
const ARRAY_STR: Ty = Ty::Array(false, Elem::Str);
const NULLABLE_ARRAY_STR: Ty = Ty::Array(true, Elem::Str);

const fn array(s: &'static Struct) -> Ty {
    Ty::Array(false, Elem::Struct(s))
}

const fn nullable_array(s: &'static Struct) -> Ty {
    Ty::Array(true, Elem::Struct(s))
}

/// A field present in versions `min..=max`.
#[derive(Clone, Copy)]
struct Field {
    min: i16,
    max: i16,
    ty: Ty,
}

impl Field {
    fn covers(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

const fn all(ty: Ty) -> Field {
    Field {
        min: 0,
        max: FOREVER,
        ty,
    }
}

const fn from(min: i16, ty: Ty) -> Field {
    Field {
        min,
        max: FOREVER,
        ty,
    }
}

const fn upto(max: i16, ty: Ty) -> Field {
    Field { min: 0, max, ty }
}

const fn span(min: i16, max: i16, ty: Ty) -> Field {
    Field { min, max, ty }
}

/// A tagged field the decoder knows by number: it decodes the content in place (ignoring the
/// declared size), and fails when the tag is used outside the field's versions.
struct Tagged {
    tag: u32,
    field: Field,
}

/// A struct: its fields in wire order, plus tagged fields the decoder knows (flexible only).
struct Struct {
    fields: &'static [Field],
    tagged: &'static [Tagged],
}

/// One API: key, the supported version range, first flexible version, and the body schema.
struct Api {
    key: i16,
    min: i16,
    max: i16,
    flexible_from: i16,
    body: &'static Struct,
}

fn find_api(key: i16) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key == key)
}

// ---------------------------------------------------------------------------------------------
// Schemas (from kafka-protocol 0.18.0 decoders; the ranges are clamped to what it can decode)
// ---------------------------------------------------------------------------------------------

static APIS: [Api; 20] = [
    api(0, 3, 9, 9, &PRODUCE),
    api(1, 4, 12, 12, &FETCH),
    api(2, 1, 7, 6, &LIST_OFFSETS),
    api(3, 0, 12, 9, &METADATA),
    api(8, 2, 8, 8, &OFFSET_COMMIT),
    api(9, 1, 7, 6, &OFFSET_FETCH),
    api(10, 0, 4, 3, &FIND_COORDINATOR),
    api(11, 0, 7, 6, &JOIN_GROUP),
    api(12, 0, 4, 4, &HEARTBEAT),
    api(13, 0, 4, 4, &LEAVE_GROUP),
    api(14, 0, 5, 4, &SYNC_GROUP),
    api(15, 0, 5, 5, &DESCRIBE_GROUPS),
    api(16, 0, 4, 3, &LIST_GROUPS),
    api(18, 0, 3, 3, &API_VERSIONS),
    api(19, 2, 7, 5, &CREATE_TOPICS),
    api(20, 1, 6, 4, &DELETE_TOPICS),
    api(22, 0, 4, 2, &INIT_PRODUCER_ID),
    api(23, 2, 4, 4, &OFFSET_FOR_LEADER_EPOCH),
    api(32, 1, 4, 4, &DESCRIBE_CONFIGS),
    api(37, 0, 3, 2, &CREATE_PARTITIONS),
];

const fn api(key: i16, min: i16, max: i16, flexible_from: i16, body: &'static Struct) -> Api {
    Api {
        key,
        min,
        max,
        flexible_from,
        body,
    }
}

// Produce (0)
static PRODUCE: Struct = Struct {
    fields: &[
        all(NSTR), // transactional_id
        all(I16),  // acks
        all(I32),  // timeout_ms
        all(array(&PRODUCE_TOPIC)),
    ],
    tagged: &[],
};
static PRODUCE_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&PRODUCE_PARTITION))],
    tagged: &[],
};
static PRODUCE_PARTITION: Struct = Struct {
    fields: &[all(I32), all(RECORDS)],
    tagged: &[],
};

// Fetch (1)
static FETCH: Struct = Struct {
    fields: &[
        upto(14, I32), // replica_id
        all(I32),      // max_wait_ms
        all(I32),      // min_bytes
        all(I32),      // max_bytes
        all(I8),       // isolation_level
        from(7, I32),  // session_id
        from(7, I32),  // session_epoch
        all(array(&FETCH_TOPIC)),
        from(7, array(&FETCH_FORGOTTEN_TOPIC)),
        from(11, STR), // rack_id
    ],
    tagged: &[
        Tagged {
            tag: 0,
            field: all(NSTR), // cluster_id
        },
        Tagged {
            tag: 1,
            field: from(15, Ty::Struct(&FETCH_REPLICA_STATE)),
        },
    ],
};
static FETCH_REPLICA_STATE: Struct = Struct {
    fields: &[from(15, I32), from(15, I64)],
    tagged: &[],
};
static FETCH_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&FETCH_PARTITION))],
    tagged: &[],
};
static FETCH_PARTITION: Struct = Struct {
    fields: &[
        all(I32),      // partition
        from(9, I32),  // current_leader_epoch
        all(I64),      // fetch_offset
        from(12, I32), // last_fetched_epoch
        from(5, I64),  // log_start_offset
        all(I32),      // partition_max_bytes
    ],
    tagged: &[
        Tagged {
            tag: 0,
            field: from(17, UUID), // replica_directory_id
        },
        Tagged {
            tag: 1,
            field: from(18, I64), // high_watermark
        },
    ],
};
static FETCH_FORGOTTEN_TOPIC: Struct = Struct {
    fields: &[span(7, 12, STR), from(7, ARRAY_I32)],
    tagged: &[],
};

// ListOffsets (2)
static LIST_OFFSETS: Struct = Struct {
    fields: &[
        all(I32),    // replica_id
        from(2, I8), // isolation_level
        all(array(&LIST_OFFSETS_TOPIC)),
    ],
    tagged: &[],
};
static LIST_OFFSETS_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&LIST_OFFSETS_PARTITION))],
    tagged: &[],
};
static LIST_OFFSETS_PARTITION: Struct = Struct {
    fields: &[
        all(I32),     // partition_index
        from(4, I32), // current_leader_epoch
        all(I64),     // timestamp
    ],
    tagged: &[],
};

// Metadata (3)
static METADATA: Struct = Struct {
    fields: &[
        all(nullable_array(&METADATA_TOPIC)),
        from(4, BOOL),     // allow_auto_topic_creation
        span(8, 10, BOOL), // include_cluster_authorized_operations
        from(8, BOOL),     // include_topic_authorized_operations
    ],
    tagged: &[],
};
static METADATA_TOPIC: Struct = Struct {
    fields: &[from(10, UUID), all(NSTR)],
    tagged: &[],
};

// OffsetCommit (8)
static OFFSET_COMMIT: Struct = Struct {
    fields: &[
        all(STR),      // group_id
        all(I32),      // generation_id_or_member_epoch
        all(STR),      // member_id
        from(7, NSTR), // group_instance_id
        upto(4, I64),  // retention_time_ms
        all(array(&OFFSET_COMMIT_TOPIC)),
    ],
    tagged: &[],
};
static OFFSET_COMMIT_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&OFFSET_COMMIT_PARTITION))],
    tagged: &[],
};
static OFFSET_COMMIT_PARTITION: Struct = Struct {
    fields: &[
        all(I32),     // partition_index
        all(I64),     // committed_offset
        from(6, I32), // committed_leader_epoch
        all(NSTR),    // committed_metadata
    ],
    tagged: &[],
};

// OffsetFetch (9); the v8+ `groups` layout is above the supported range.
static OFFSET_FETCH: Struct = Struct {
    fields: &[
        upto(7, STR), // group_id
        upto(7, nullable_array(&OFFSET_FETCH_TOPIC)),
        from(7, BOOL), // require_stable
    ],
    tagged: &[],
};
static OFFSET_FETCH_TOPIC: Struct = Struct {
    fields: &[upto(7, STR), upto(7, ARRAY_I32)],
    tagged: &[],
};

// FindCoordinator (10)
static FIND_COORDINATOR: Struct = Struct {
    fields: &[
        upto(3, STR),       // key
        from(1, I8),        // key_type
        from(4, ARRAY_STR), // coordinator_keys
    ],
    tagged: &[],
};

// JoinGroup (11)
static JOIN_GROUP: Struct = Struct {
    fields: &[
        all(STR),      // group_id
        all(I32),      // session_timeout_ms
        from(1, I32),  // rebalance_timeout_ms
        all(STR),      // member_id
        from(5, NSTR), // group_instance_id
        all(STR),      // protocol_type
        all(array(&JOIN_GROUP_PROTOCOL)),
    ],
    tagged: &[],
};
static JOIN_GROUP_PROTOCOL: Struct = Struct {
    fields: &[all(STR), all(BYTES)],
    tagged: &[],
};

// Heartbeat (12)
static HEARTBEAT: Struct = Struct {
    fields: &[
        all(STR),      // group_id
        all(I32),      // generation_id
        all(STR),      // member_id
        from(3, NSTR), // group_instance_id
    ],
    tagged: &[],
};

// LeaveGroup (13)
static LEAVE_GROUP: Struct = Struct {
    fields: &[
        all(STR),     // group_id
        upto(2, STR), // member_id
        from(3, array(&LEAVE_GROUP_MEMBER)),
    ],
    tagged: &[],
};
static LEAVE_GROUP_MEMBER: Struct = Struct {
    fields: &[from(3, STR), from(3, NSTR)],
    tagged: &[],
};

// SyncGroup (14)
static SYNC_GROUP: Struct = Struct {
    fields: &[
        all(STR),      // group_id
        all(I32),      // generation_id
        all(STR),      // member_id
        from(3, NSTR), // group_instance_id
        from(5, NSTR), // protocol_type
        from(5, NSTR), // protocol_name
        all(array(&SYNC_GROUP_ASSIGNMENT)),
    ],
    tagged: &[],
};
static SYNC_GROUP_ASSIGNMENT: Struct = Struct {
    fields: &[all(STR), all(BYTES)],
    tagged: &[],
};

// DescribeGroups (15)
static DESCRIBE_GROUPS: Struct = Struct {
    fields: &[all(ARRAY_STR), from(3, BOOL)],
    tagged: &[],
};

// ListGroups (16)
static LIST_GROUPS: Struct = Struct {
    fields: &[from(4, ARRAY_STR)], // states_filter
    tagged: &[],
};

// ApiVersions (18)
static API_VERSIONS: Struct = Struct {
    fields: &[from(3, STR), from(3, STR)], // client_software_name, client_software_version
    tagged: &[],
};

// CreateTopics (19)
static CREATE_TOPICS: Struct = Struct {
    fields: &[
        all(array(&CREATE_TOPICS_TOPIC)),
        all(I32),  // timeout_ms
        all(BOOL), // validate_only
    ],
    tagged: &[],
};
static CREATE_TOPICS_TOPIC: Struct = Struct {
    fields: &[
        all(STR), // name
        all(I32), // num_partitions
        all(I16), // replication_factor
        all(array(&CREATE_TOPICS_ASSIGNMENT)),
        all(array(&CREATE_TOPICS_CONFIG)),
    ],
    tagged: &[],
};
static CREATE_TOPICS_ASSIGNMENT: Struct = Struct {
    fields: &[all(I32), all(ARRAY_I32)],
    tagged: &[],
};
static CREATE_TOPICS_CONFIG: Struct = Struct {
    fields: &[all(STR), all(NSTR)],
    tagged: &[],
};

// DeleteTopics (20)
static DELETE_TOPICS: Struct = Struct {
    fields: &[
        from(6, array(&DELETE_TOPICS_TOPIC)),
        upto(5, ARRAY_STR), // topic_names
        all(I32),           // timeout_ms
    ],
    tagged: &[],
};
static DELETE_TOPICS_TOPIC: Struct = Struct {
    fields: &[from(6, NSTR), from(6, UUID)],
    tagged: &[],
};

// InitProducerId (22)
static INIT_PRODUCER_ID: Struct = Struct {
    fields: &[
        all(NSTR),    // transactional_id
        all(I32),     // transaction_timeout_ms
        from(3, I64), // producer_id
        from(3, I16), // producer_epoch
    ],
    tagged: &[],
};

// OffsetForLeaderEpoch (23)
static OFFSET_FOR_LEADER_EPOCH: Struct = Struct {
    fields: &[from(3, I32), all(array(&OFFSET_FOR_LEADER_EPOCH_TOPIC))],
    tagged: &[],
};
static OFFSET_FOR_LEADER_EPOCH_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&OFFSET_FOR_LEADER_EPOCH_PARTITION))],
    tagged: &[],
};
static OFFSET_FOR_LEADER_EPOCH_PARTITION: Struct = Struct {
    fields: &[all(I32), all(I32), all(I32)],
    tagged: &[],
};

// DescribeConfigs (32)
static DESCRIBE_CONFIGS: Struct = Struct {
    fields: &[
        all(array(&DESCRIBE_CONFIGS_RESOURCE)),
        all(BOOL),     // include_synonyms
        from(3, BOOL), // include_documentation
    ],
    tagged: &[],
};
static DESCRIBE_CONFIGS_RESOURCE: Struct = Struct {
    fields: &[all(I8), all(STR), all(NULLABLE_ARRAY_STR)],
    tagged: &[],
};

// CreatePartitions (37)
static CREATE_PARTITIONS: Struct = Struct {
    fields: &[
        all(array(&CREATE_PARTITIONS_TOPIC)),
        all(I32),  // timeout_ms
        all(BOOL), // validate_only
    ],
    tagged: &[],
};
static CREATE_PARTITIONS_TOPIC: Struct = Struct {
    fields: &[
        all(STR), // name
        all(I32), // count
        all(nullable_array(&CREATE_PARTITIONS_ASSIGNMENT)),
    ],
    tagged: &[],
};
static CREATE_PARTITIONS_ASSIGNMENT: Struct = Struct {
    fields: &[all(ARRAY_I32)],
    tagged: &[],
};

// ---------------------------------------------------------------------------------------------
// Walker
// ---------------------------------------------------------------------------------------------

type Walk<T = ()> = Result<T, GuardError>;

const TRUNCATED: GuardError = GuardError::Malformed("frame ends in the middle of a field");
const TOO_LONG: GuardError =
    GuardError::Malformed("length or count is larger than the bytes left in the frame");

/// Read position over the frame; never allocates, never panics.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn skip(&mut self, n: usize) -> Walk {
        self.rest = self.rest.get(n..).ok_or(TRUNCATED)?;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Walk<[u8; N]> {
        let bytes = self
            .rest
            .get(..N)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or(TRUNCATED)?;
        self.skip(N)?;
        Ok(bytes)
    }

    fn i16(&mut self) -> Walk<i16> {
        self.fixed().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Walk<i32> {
        self.fixed().map(i32::from_be_bytes)
    }

    /// Unsigned varint of at most 5 bytes. The decoder silently drops bits past 32 and stops
    /// after the fifth byte; the guard refuses such encodings instead.
    fn uvarint(&mut self) -> Walk<u32> {
        let mut value = 0u32;
        for shift in [0, 7, 14, 21, 28] {
            let [b] = self.fixed()?;
            if shift == 28 && b > 0x0f {
                return Err(GuardError::Malformed(
                    "unsigned varint does not fit in 32 bits",
                ));
            }
            value |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(GuardError::Malformed("unsigned varint is too long"))
    }

    /// Reads a string/bytes length or an array count (0 for null) and checks it against the
    /// bytes left: every byte of a string and every array element takes at least one byte.
    fn length(&mut self, flexible: bool, wide: bool, nullable: bool) -> Walk<usize> {
        let len = if flexible {
            match self.uvarint()? {
                0 => None,
                n => Some(usize::try_from(n - 1).map_err(|_| TOO_LONG)?),
            }
        } else {
            let n = if wide {
                self.i32()?
            } else {
                i32::from(self.i16()?)
            };
            match n {
                -1 => None,
                n => {
                    Some(usize::try_from(n).map_err(|_| GuardError::Malformed("negative length"))?)
                }
            }
        };
        match len {
            None if nullable => Ok(0),
            None => Err(GuardError::Malformed("null where the schema forbids it")),
            Some(n) if n > self.rest.len() => Err(TOO_LONG),
            Some(n) => Ok(n),
        }
    }
}

fn walk(c: &mut Cursor<'_>, ty: Ty, version: i16, flexible: bool) -> Walk {
    match ty {
        Ty::Fixed(n) => c.skip(n),
        Ty::Str(nullable) => {
            let n = c.length(flexible, false, nullable)?;
            c.skip(n)
        }
        Ty::Bytes(nullable) => {
            let n = c.length(flexible, true, nullable)?;
            c.skip(n)
        }
        Ty::Array(nullable, elem) => {
            for _ in 0..c.length(flexible, true, nullable)? {
                walk(c, elem.ty(), version, flexible)?;
            }
            Ok(())
        }
        Ty::Struct(s) => walk_struct(c, s, version, flexible),
    }
}

fn walk_struct(c: &mut Cursor<'_>, s: &Struct, version: i16, flexible: bool) -> Walk {
    for field in s.fields.iter().filter(|f| f.covers(version)) {
        walk(c, field.ty, version, flexible)?;
    }
    if flexible {
        walk_tagged(c, s.tagged, version)?;
    }
    Ok(())
}

/// Tagged-field section: uvarint count, then (uvarint tag, uvarint size, content) each.
fn walk_tagged(c: &mut Cursor<'_>, known: &[Tagged], version: i16) -> Walk {
    let count = c.uvarint()?;
    // Each tagged field takes at least two bytes (tag and size).
    if usize::try_from(count).map_or(true, |n| n > c.rest.len() / 2) {
        return Err(TOO_LONG);
    }
    for _ in 0..count {
        let tag = c.uvarint()?;
        let size = usize::try_from(c.uvarint()?).map_err(|_| TOO_LONG)?;
        if size > c.rest.len() {
            return Err(TOO_LONG);
        }
        match known.iter().find(|t| t.tag == tag) {
            None => c.skip(size)?,
            Some(t) if !t.field.covers(version) => {
                return Err(GuardError::Malformed(
                    "tagged field is not valid for this version",
                ));
            }
            Some(t) => {
                // The decoder reads known tags in place and ignores `size`; insisting that
                // they agree keeps the guard and the decoder on the same bytes.
                let before = c.rest.len();
                walk(c, t.field.ty, version, true)?;
                if before - c.rest.len() != size {
                    return Err(GuardError::Malformed(
                        "tagged field content does not match its declared size",
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        let header = RequestHeader::decode(&mut buf, checked.header_version)
            .map_err(|e| format!("{e:#}"))?;
        let key = ApiKey::try_from(checked.api_key).map_err(|()| "api key".to_string())?;
        let body = RequestKind::decode(key, &mut buf, checked.api_version)
            .map_err(|e| format!("{e:#}"))?;
        Ok((header, body, buf.len()))
    }

    // -- tests -----------------------------------------------------------------------------

    #[test]
    fn every_supported_version_is_accepted_and_decodes() {
        let frames = all_valid_frames();
        assert!(frames.len() > 100);
        for (key, version, frame, markers) in frames {
            let checked = check_request(&frame)
                .unwrap_or_else(|e| panic!("api {key} v{version} refused: {e}"));
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
            }
            if let Ok(checked) = check_request(&frame) {
                accepted += 1;
                // Only frames the guard accepts may reach the decoder.
                let _ = decode(&frame, checked);
            }
        }
        assert!(accepted > 0);
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
        for version in [4, 7, i16::MAX] {
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
    fn api_versions_v0_to_v3_are_accepted() {
        for version in 0..=2 {
            let frame = W::header(18, version, 1, false).0;
            assert_eq!(check_request(&frame).map(|h| h.header_version), Ok(1));
        }
        let frame = W::header(18, 3, 1, true).cstr("x").cstr("1").uvarint(0).0;
        assert_eq!(check_request(&frame).map(|h| h.header_version), Ok(2));
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
}
