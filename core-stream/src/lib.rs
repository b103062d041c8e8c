//! # Conflux stream core
//!
//! The durable base that the Kafka, MQTT and AMQP front-ends share. It knows no protocol and
//! does no networking. Map of the crate:
//!
//! - [`core`]: the [`Core`] registry — create/find/delete streams, group positions, shutdown.
//! - [`stream`]: a [`Stream`] (named set of partitions) and the naming/pattern rules.
//! - [`partition`]: a [`Partition`] log — append with idempotent-producer checks, read up to the
//!   high watermark, live-tail wake-ups, retention.
//! - [`queue`]: durable queues of references to stream records (MQTT sessions, AMQP queues).
//! - [`router`]: the one index of subscriptions, matched once per append, pushing to sinks.
//! - [`segment`]: one segment file with its sparse offset and time indexes, and recovery.
//! - [`log`]: the storage traits ([`PartitionLog`], [`LogFactory`]) and their result types.
//! - [`segment_logs`]: the embedded storage, [`SegmentLogs`] (segment files + group commit).
//! - [`commit`]: group commit — one fsync thread shared by all writers.
//! - [`headers`]: record header names every protocol maps its message properties to.
//! - [`file_cache`]: the bounded cache of open segment files.
//! - [`batch`]: the one record format (Kafka record batch v2): validation, building, bounded decoding.
//! - [`compression`]: bounded decompression of gzip, snappy, lz4 and zstd batches for non-Kafka readers.
//! - [`naming`]: the one reversible rule between level names (MQTT topics, AMQP routing keys) and stream names.
//! - [`meta`]: the [`MetadataStore`] trait and its embedded redb implementation.
//! - [`config`]: typed settings; [`error`]: the crate's one error type.

#![warn(missing_docs)]

pub mod batch;
pub mod commit;
pub mod compaction;
pub mod compression;
pub mod config;
pub mod core;
pub mod error;
pub mod file_cache;
pub mod headers;
pub mod log;
pub mod meta;
pub mod naming;
pub mod partition;
pub mod queue;
pub mod router;
pub mod segment;
pub mod segment_logs;
pub mod stream;

pub use crate::config::{Cleanup, CoreConfig, FsyncPolicy, StreamConfig};
pub use crate::core::{partition_for_key, Core, PatternSubscription};
pub use crate::error::{Result, StreamError};
pub use crate::log::{AppendOutcome, DurableTicket, LogFactory, PartitionLog, ReadResult};
pub use crate::meta::{CommittedOffset, GroupOffset, MetadataStore, StreamMeta};
pub use crate::partition::Partition;
pub use crate::segment_logs::SegmentLogs;
pub use crate::stream::{pattern_matches, validate_name, Stream};
