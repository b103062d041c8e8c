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
    /// Nullable struct: an i8 marker (1 = present, followed by the struct; anything else = null).
    OptionStruct(&'static Struct),
}

/// Element type of an array.
#[derive(Clone, Copy)]
enum Elem {
    I32,
    I64,
    Str,
    Struct(&'static Struct),
}

impl Elem {
    fn ty(self) -> Ty {
        match self {
            Elem::I32 => I32,
            Elem::I64 => I64,
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
const ARRAY_I64: Ty = Ty::Array(false, Elem::I64);
const ARRAY_STR: Ty = Ty::Array(false, Elem::Str);
const NULLABLE_ARRAY_STR: Ty = Ty::Array(true, Elem::Str);
const NULLABLE_ARRAY_I32: Ty = Ty::Array(true, Elem::I32);

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

/// Every API the guard has a schema for, as `(key, min version, max version)`, in key order.
/// This is the list of served APIs: ApiVersions advertises exactly it.
pub fn served() -> impl Iterator<Item = (i16, i16, i16)> {
    APIS.iter().map(|a| (a.key, a.min, a.max))
}

fn find_api(key: i16) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key == key)
}

// ---------------------------------------------------------------------------------------------
// Schemas (from kafka-protocol 0.18.0 decoders; the ranges are clamped to what it can decode)
// ---------------------------------------------------------------------------------------------

static APIS: [Api; 41] = [
    api(0, 3, 9, 9, &PRODUCE),
    api(1, 4, 12, 12, &FETCH),
    api(2, 1, 10, 6, &LIST_OFFSETS),
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
    api(18, 0, 4, 3, &API_VERSIONS),
    api(19, 2, 7, 5, &CREATE_TOPICS),
    api(20, 1, 6, 4, &DELETE_TOPICS),
    api(21, 0, 2, 2, &DELETE_RECORDS),
    api(22, 0, 4, 2, &INIT_PRODUCER_ID),
    api(23, 2, 4, 4, &OFFSET_FOR_LEADER_EPOCH),
    api(24, 0, 3, 3, &ADD_PARTITIONS_TO_TXN),
    api(25, 0, 3, 3, &ADD_OFFSETS_TO_TXN),
    api(26, 0, 3, 3, &END_TXN),
    api(28, 0, 3, 3, &TXN_OFFSET_COMMIT),
    api(29, 1, 3, 2, &DESCRIBE_ACLS),
    api(30, 1, 3, 2, &CREATE_ACLS),
    api(31, 1, 3, 2, &DELETE_ACLS),
    api(32, 1, 4, 4, &DESCRIBE_CONFIGS),
    api(33, 0, 2, 2, &ALTER_CONFIGS),
    api(34, 1, 2, 2, &ALTER_REPLICA_LOG_DIRS),
    api(35, 1, 4, 2, &DESCRIBE_LOG_DIRS),
    api(37, 0, 3, 2, &CREATE_PARTITIONS),
    api(42, 0, 2, 2, &DELETE_GROUPS),
    api(43, 0, 2, 2, &ELECT_LEADERS),
    api(44, 0, 1, 1, &INCREMENTAL_ALTER_CONFIGS),
    api(45, 0, 1, 0, &ALTER_PARTITION_REASSIGNMENTS),
    api(46, 0, 0, 0, &LIST_PARTITION_REASSIGNMENTS),
    api(55, 0, 2, 0, &DESCRIBE_QUORUM),
    api(60, 0, 1, 0, &DESCRIBE_CLUSTER),
    api(65, 0, 0, 0, &DESCRIBE_TRANSACTIONS),
    api(66, 0, 1, 0, &LIST_TRANSACTIONS),
    api(75, 0, 0, 0, &DESCRIBE_TOPIC_PARTITIONS),
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
        from(10, I32), // timeout_ms
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

// AddPartitionsToTxn (24), v0-v3: one transaction per request (v4+ batch several, broker
// to broker).
static ADD_PARTITIONS_TO_TXN: Struct = Struct {
    fields: &[
        upto(3, STR), // transactional_id
        upto(3, I64), // producer_id
        upto(3, I16), // producer_epoch
        upto(3, array(&ADD_PARTITIONS_TO_TXN_TOPIC)),
    ],
    tagged: &[],
};
static ADD_PARTITIONS_TO_TXN_TOPIC: Struct = Struct {
    fields: &[all(STR), all(ARRAY_I32)],
    tagged: &[],
};

// AddOffsetsToTxn (25)
static ADD_OFFSETS_TO_TXN: Struct = Struct {
    fields: &[all(STR), all(I64), all(I16), all(STR)],
    tagged: &[],
};

// EndTxn (26)
static END_TXN: Struct = Struct {
    fields: &[all(STR), all(I64), all(I16), all(BOOL)],
    tagged: &[],
};

// TxnOffsetCommit (28)
static TXN_OFFSET_COMMIT: Struct = Struct {
    fields: &[
        all(STR),      // transactional_id
        all(STR),      // group_id
        all(I64),      // producer_id
        all(I16),      // producer_epoch
        from(3, I32),  // generation_id
        from(3, STR),  // member_id
        from(3, NSTR), // group_instance_id
        all(array(&TXN_OFFSET_COMMIT_TOPIC)),
    ],
    tagged: &[],
};
static TXN_OFFSET_COMMIT_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&TXN_OFFSET_COMMIT_PARTITION))],
    tagged: &[],
};
static TXN_OFFSET_COMMIT_PARTITION: Struct = Struct {
    fields: &[all(I32), all(I64), from(2, I32), all(NSTR)],
    tagged: &[],
};

// DescribeTransactions (65)
static DESCRIBE_TRANSACTIONS: Struct = Struct {
    fields: &[all(ARRAY_STR)],
    tagged: &[],
};

// ListTransactions (66)
static LIST_TRANSACTIONS: Struct = Struct {
    fields: &[all(ARRAY_STR), all(ARRAY_I64), from(1, I64)],
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

// AlterConfigs (33)
static ALTER_CONFIGS: Struct = Struct {
    fields: &[
        all(array(&ALTER_CONFIGS_RESOURCE)),
        all(BOOL), // validate_only
    ],
    tagged: &[],
};
static ALTER_CONFIGS_RESOURCE: Struct = Struct {
    fields: &[
        all(I8),  // resource_type
        all(STR), // resource_name
        all(array(&ALTER_CONFIGS_CONFIG)),
    ],
    tagged: &[],
};
static ALTER_CONFIGS_CONFIG: Struct = Struct {
    fields: &[all(STR), all(NSTR)], // name, value
    tagged: &[],
};

// DeleteGroups (42)
static DELETE_GROUPS: Struct = Struct {
    fields: &[all(ARRAY_STR)], // groups_names
    tagged: &[],
};

// IncrementalAlterConfigs (44)
static INCREMENTAL_ALTER_CONFIGS: Struct = Struct {
    fields: &[
        all(array(&INCREMENTAL_ALTER_CONFIGS_RESOURCE)),
        all(BOOL), // validate_only
    ],
    tagged: &[],
};
static INCREMENTAL_ALTER_CONFIGS_RESOURCE: Struct = Struct {
    fields: &[
        all(I8),  // resource_type
        all(STR), // resource_name
        all(array(&INCREMENTAL_ALTER_CONFIGS_CONFIG)),
    ],
    tagged: &[],
};
static INCREMENTAL_ALTER_CONFIGS_CONFIG: Struct = Struct {
    fields: &[all(STR), all(I8), all(NSTR)], // name, config_operation, value
    tagged: &[],
};

// DeleteRecords (21)
static DELETE_RECORDS: Struct = Struct {
    fields: &[
        all(array(&DELETE_RECORDS_TOPIC)),
        all(I32), // timeout_ms
    ],
    tagged: &[],
};
static DELETE_RECORDS_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&DELETE_RECORDS_PARTITION))],
    tagged: &[],
};
static DELETE_RECORDS_PARTITION: Struct = Struct {
    fields: &[all(I32), all(I64)], // partition_index, offset
    tagged: &[],
};

// DescribeAcls (29): the filter fields, inline.
static DESCRIBE_ACLS: Struct = Struct {
    fields: &ACL_FILTER_FIELDS,
    tagged: &[],
};
/// resource_type, resource_name, pattern_type, principal, host, operation, permission_type.
const ACL_FILTER_FIELDS: [Field; 7] = [
    all(I8),
    all(NSTR),
    all(I8),
    all(NSTR),
    all(NSTR),
    all(I8),
    all(I8),
];

// CreateAcls (30)
static CREATE_ACLS: Struct = Struct {
    fields: &[all(array(&CREATE_ACLS_CREATION))],
    tagged: &[],
};
static CREATE_ACLS_CREATION: Struct = Struct {
    fields: &[
        all(I8),
        all(STR),
        all(I8),
        all(STR),
        all(STR),
        all(I8),
        all(I8),
    ],
    tagged: &[],
};

// DeleteAcls (31)
static DELETE_ACLS: Struct = Struct {
    fields: &[all(array(&DELETE_ACLS_FILTER))],
    tagged: &[],
};
static DELETE_ACLS_FILTER: Struct = Struct {
    fields: &ACL_FILTER_FIELDS,
    tagged: &[],
};

// AlterReplicaLogDirs (34)
static ALTER_REPLICA_LOG_DIRS: Struct = Struct {
    fields: &[all(array(&ALTER_REPLICA_LOG_DIR))],
    tagged: &[],
};
static ALTER_REPLICA_LOG_DIR: Struct = Struct {
    fields: &[all(STR), all(array(&TOPIC_PARTITION_LIST))], // path, topics
    tagged: &[],
};
/// A topic name and a list of partition indexes (used by several admin requests).
static TOPIC_PARTITION_LIST: Struct = Struct {
    fields: &[all(STR), all(ARRAY_I32)],
    tagged: &[],
};

// DescribeLogDirs (35)
static DESCRIBE_LOG_DIRS: Struct = Struct {
    fields: &[all(nullable_array(&TOPIC_PARTITION_LIST))],
    tagged: &[],
};

// ElectLeaders (43)
static ELECT_LEADERS: Struct = Struct {
    fields: &[
        from(1, I8), // election_type
        all(nullable_array(&TOPIC_PARTITION_LIST)),
        all(I32), // timeout_ms
    ],
    tagged: &[],
};

// AlterPartitionReassignments (45)
static ALTER_PARTITION_REASSIGNMENTS: Struct = Struct {
    fields: &[
        all(I32),      // timeout_ms
        from(1, BOOL), // allow_replication_factor_change
        all(array(&REASSIGNABLE_TOPIC)),
    ],
    tagged: &[],
};
static REASSIGNABLE_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&REASSIGNABLE_PARTITION))],
    tagged: &[],
};
static REASSIGNABLE_PARTITION: Struct = Struct {
    fields: &[all(I32), all(NULLABLE_ARRAY_I32)], // partition_index, replicas
    tagged: &[],
};

// ListPartitionReassignments (46)
static LIST_PARTITION_REASSIGNMENTS: Struct = Struct {
    fields: &[
        all(I32), // timeout_ms
        all(nullable_array(&TOPIC_PARTITION_LIST)),
    ],
    tagged: &[],
};

// DescribeQuorum (55)
static DESCRIBE_QUORUM: Struct = Struct {
    fields: &[all(array(&DESCRIBE_QUORUM_TOPIC))],
    tagged: &[],
};
static DESCRIBE_QUORUM_TOPIC: Struct = Struct {
    fields: &[all(STR), all(array(&DESCRIBE_QUORUM_PARTITION))],
    tagged: &[],
};
static DESCRIBE_QUORUM_PARTITION: Struct = Struct {
    fields: &[all(I32)],
    tagged: &[],
};

// DescribeTopicPartitions (75)
static DESCRIBE_TOPIC_PARTITIONS: Struct = Struct {
    fields: &[
        all(array(&DESCRIBE_TOPIC_PARTITIONS_TOPIC)),
        all(I32), // response_partition_limit
        all(Ty::OptionStruct(&DESCRIBE_TOPIC_PARTITIONS_CURSOR)),
    ],
    tagged: &[],
};
static DESCRIBE_TOPIC_PARTITIONS_TOPIC: Struct = Struct {
    fields: &[all(STR)],
    tagged: &[],
};
static DESCRIBE_TOPIC_PARTITIONS_CURSOR: Struct = Struct {
    fields: &[all(STR), all(I32)], // topic_name, partition_index
    tagged: &[],
};

// DescribeCluster (60)
static DESCRIBE_CLUSTER: Struct = Struct {
    fields: &[
        all(BOOL),     // include_cluster_authorized_operations
        from(1, I8),   // endpoint_type
        from(2, BOOL), // include_fenced_brokers
    ],
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
        Ty::OptionStruct(s) => {
            let [present] = c.fixed::<1>()?;
            if present == 1 {
                walk_struct(c, s, version, flexible)
            } else {
                Ok(())
            }
        }
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
mod tests;
