//! This crate's error type (why a connection is closed) and the one mapping from core
//! errors to Kafka error codes.

use core_stream::StreamError;

use crate::guard::GuardError;

/// Why a request could not be served and its connection is closed (logged as the reason).
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The size prefix is negative, too small, or over `max_request_bytes`.
    #[error("request size {size} outside 8..={max}")]
    FrameSize {
        /// Size the client claimed.
        size: i32,
        /// Configured maximum.
        max: usize,
    },
    /// The connection ended inside a frame.
    #[error("truncated request: {got} of {want} bytes")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes claimed.
        want: usize,
    },
    /// The guard refused the frame before decoding (lying lengths, unknown API or version).
    #[error("refused by the request guard: {0}")]
    Guard(#[from] GuardError),
    /// A non-Produce request over the 1 MiB limit.
    #[error("api key {api_key} request of {len} bytes exceeds {max}")]
    TooLarge {
        /// API key.
        api_key: i16,
        /// Frame length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// kafka-protocol could not decode a frame the guard accepted (e.g. invalid UTF-8).
    #[error("undecodable request: {0}")]
    Decode(String),
    /// A known API that this broker does not serve.
    #[error("{0} is not served")]
    NotServed(String),
    /// A Produce v0-v2 whose body does not parse.
    #[error("malformed Produce v{0} request")]
    MalformedLegacyProduce(i16),
}

/// Kafka error codes used by this front-end (see the protocol guide's error table).
pub mod code {
    /// No error.
    pub const NONE: i16 = 0;
    /// Unexpected server error.
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// Offset outside the stored range.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// Batch failed its CRC or size checks.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// Topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// Broker is not (or no longer) serving the partition; clients refresh metadata and retry.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// A batch exceeds the maximum size.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// Coordinator is shutting down / not ready.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// This broker is not (or no longer) the group's coordinator: look it up again.
    pub const NOT_COORDINATOR: i16 = 16;
    /// Topic name is not legal.
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    /// Generation does not match the group's.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// No common protocol or wrong protocol type.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// Member is not in the group.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// Session timeout outside the allowed range.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// A rebalance is under way; rejoin.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// Version not supported.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// Topic already exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// Bad partition count.
    pub const INVALID_PARTITIONS: i16 = 37;
    /// Replication factor other than 1 or -1.
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// Bad topic config.
    pub const INVALID_CONFIG: i16 = 40;
    /// Malformed or unsupported request content.
    pub const INVALID_REQUEST: i16 = 42;
    /// Old message format (magic 0/1).
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    /// Idempotent producer sequence gap.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// Idempotent producer fenced by a newer epoch.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// The transaction is not in a state that allows the request.
    pub const INVALID_TXN_STATE: i16 = 48;
    /// The transactional id is not known (no InitProducerId yet).
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    /// `transaction.timeout.ms` above the broker's maximum.
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    /// Another request of the same transaction is being completed.
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    /// A newer producer with the same transactional id exists.
    pub const PRODUCER_FENCED: i16 = 90;
    /// A record the topic cannot take (a record without a key for a compacted topic).
    pub const INVALID_RECORD: i16 = 87;
    /// Disk failure.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// Fetch session not found (sessions are never created here).
    pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    /// Group id not known.
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    /// Group still has members (delete refused).
    pub const NON_EMPTY_GROUP: i16 = 68;
    /// The replica assignment names brokers that do not exist.
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    /// No authorizer is configured, so ACLs cannot be described, created or deleted.
    pub const SECURITY_DISABLED: i16 = 54;
    /// The named log directory is not one of this broker's.
    pub const LOG_DIR_NOT_FOUND: i16 = 57;
    /// The preferred leader already leads the partition.
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    /// A reassignment was cancelled where none was in progress.
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
}

/// Kafka error code for a core error.
pub fn error_code(e: &StreamError) -> i16 {
    use code::*;
    match e {
        StreamError::UnknownStream(_) | StreamError::UnknownPartition(..) => {
            UNKNOWN_TOPIC_OR_PARTITION
        }
        StreamError::StreamExists(_) => TOPIC_ALREADY_EXISTS,
        StreamError::InvalidName(..) => INVALID_TOPIC_EXCEPTION,
        StreamError::InvalidPartitions(_) => INVALID_PARTITIONS,
        StreamError::InvalidConfig(..) => INVALID_CONFIG,
        StreamError::CorruptBatch(_) => CORRUPT_MESSAGE,
        StreamError::UnsupportedMagic(_) => UNSUPPORTED_FOR_MESSAGE_FORMAT,
        StreamError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        StreamError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
        StreamError::ProducerFenced(_) => INVALID_PRODUCER_EPOCH,
        StreamError::MessageTooLarge(_) => MESSAGE_TOO_LARGE,
        StreamError::Unsupported(_) => INVALID_REQUEST,
        StreamError::ShuttingDown => NOT_LEADER_OR_FOLLOWER,
        StreamError::Io(_) => KAFKA_STORAGE_ERROR,
        StreamError::Metadata(_) => UNKNOWN_SERVER_ERROR,
    }
}
