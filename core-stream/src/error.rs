//! The core's one error type. Front-ends map it to their protocol's error codes in one place.

use std::io;

/// Everything that can go wrong in the stream core.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The named stream does not exist (and was not auto-created).
    #[error("unknown stream {0}")]
    UnknownStream(String),
    /// The partition index is outside the stream's partitions.
    #[error("unknown partition {1} of stream {0}")]
    UnknownPartition(String, i32),
    /// A create asked for a name that is taken.
    #[error("stream {0} already exists")]
    StreamExists(String),
    /// The name breaks the stream naming rules (Kafka topic rules: `[a-zA-Z0-9._-]`, 1..=249).
    #[error("invalid stream name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// A partition count that is zero, too large, or would shrink a stream.
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// A stream config value that cannot be parsed or is out of range.
    #[error("invalid config {0}: {1}")]
    InvalidConfig(String, String),
    /// A record batch failed validation (length, CRC32C, counts).
    #[error("corrupt record batch: {0}")]
    CorruptBatch(&'static str),
    /// A batch of an old message format (magic 0 or 1).
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// A read asked for an offset outside `[log start, high watermark]`.
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// First offset still stored.
        start: i64,
        /// High watermark.
        end: i64,
    },
    /// An idempotent producer's sequence does not follow its last one.
    #[error("out of order sequence {got} for producer {producer_id}, expected {expected}")]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// Sequence the log expected next.
        expected: i32,
        /// Sequence the batch carried.
        got: i32,
    },
    /// A producer epoch older than the one the log has seen.
    #[error("producer {0} is fenced by a newer epoch")]
    ProducerFenced(i64),
    /// A batch larger than the configured maximum.
    #[error("batch of {0} bytes exceeds the maximum message size")]
    MessageTooLarge(usize),
    /// A feature that is not built yet.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The broker is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// Disk I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The metadata store failed.
    #[error("metadata store error: {0}")]
    Metadata(String),
}

/// Short alias used throughout the core.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;
