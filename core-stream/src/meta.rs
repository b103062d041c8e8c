//! The metadata store: streams and their configs, consumer-group committed offsets and the
//! producer-id counter. A narrow trait so a distributed engine can replace the embedded
//! default, [`RedbStore`] (redb: ACID, crash-safe, every commit fsync'd).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::StreamConfig;
use crate::error::{Result, StreamError};

/// A stream as the metadata store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// Stream name.
    pub name: String,
    /// Settings (partition count, retention, …).
    pub config: StreamConfig,
    /// Stable 16-byte id (Kafka topic id).
    pub id: [u8; 16],
}

/// A committed position of a named reader (a Kafka consumer group, a queue's cursor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Next offset the reader will read.
    pub offset: i64,
    /// Bytes the front-end keeps with the position, opaque to the core (Kafka: the client's
    /// leader epoch and metadata string).
    #[serde(default)]
    pub attachment: Vec<u8>,
}

/// One (stream, partition) position of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// Stream name.
    pub stream: String,
    /// Partition index.
    pub partition: i32,
    /// The committed position.
    pub committed: CommittedOffset,
}

/// What the core needs from a metadata store. Every write is durable when it returns.
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// Every stream, in name order.
    fn streams(&self) -> Result<Vec<StreamMeta>>;
    /// Creates or replaces a stream record.
    fn put_stream(&self, meta: &StreamMeta) -> Result<()>;
    /// Removes a stream record and every group offset for it.
    fn delete_stream(&self, name: &str) -> Result<()>;
    /// Stores a group's positions atomically.
    fn commit_offsets(&self, group: &str, offsets: &[GroupOffset]) -> Result<()>;
    /// Every position the group has committed.
    fn group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>>;
    /// Names of groups with at least one committed position.
    fn groups(&self) -> Result<Vec<String>>;
    /// Removes every committed position of a group.
    fn delete_group(&self, group: &str) -> Result<()>;
    /// Hands out a new, never reused producer id.
    fn next_producer_id(&self) -> Result<i64>;
    /// Hands out the next value of a named counter (starting at 0), never reused.
    fn next_id(&self, counter: &str) -> Result<i64>;
    /// Stores a front-end's record (an MQTT session, a retained message, an AMQP exchange)
    /// under `(space, key)`, replacing any earlier one. `None` deletes it.
    fn put_record(&self, space: &str, key: &str, value: Option<&[u8]>) -> Result<()>;
    /// Several [`MetadataStore::put_record`] changes in one atomic, durable write.
    fn put_records(&self, changes: &[(&str, &str, Option<&[u8]>)]) -> Result<()>;
    /// Every record of a space, in key order.
    fn records(&self, space: &str) -> Result<Vec<(String, Vec<u8>)>>;
}

const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// Key: group \0 stream \0 partition (decimal).
const OFFSETS: TableDefinition<&str, &[u8]> = TableDefinition::new("group_offsets");
const COUNTERS: TableDefinition<&str, i64> = TableDefinition::new("counters");
/// Front-end records. Key: space \0 key.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// The embedded metadata store in `<data dir>/meta.redb`.
///
/// After an I/O error (a full disk) redb refuses every later operation until the database is
/// opened again, so the store reopens itself on the next call: when space returns, offset
/// commits and topic changes work again without a broker restart.
#[derive(Debug)]
pub struct RedbStore {
    path: std::path::PathBuf,
    /// `None` only while a reopen after an I/O error has not succeeded yet.
    db: RwLock<Option<Arc<Database>>>,
    /// An I/O error was seen: reopen before the next operation.
    broken: AtomicBool,
}

/// A redb failure; I/O errors (disk full, device error) stay I/O errors with their errno.
fn db_err(e: impl Into<redb::Error>) -> StreamError {
    match e.into() {
        redb::Error::Io(io) => StreamError::Io(io),
        redb::Error::PreviousIo => StreamError::Io(std::io::Error::other(
            "an earlier I/O error left the metadata store unusable until it is reopened",
        )),
        other => StreamError::Metadata(other.to_string()),
    }
}

fn json_err(e: serde_json::Error) -> StreamError {
    StreamError::Metadata(e.to_string())
}

fn offset_key(group: &str, stream: &str, partition: i32) -> String {
    format!("{group}\0{stream}\0{partition}")
}

impl RedbStore {
    /// Opens or creates the store file.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(Self::open_db(path)?))),
            broken: AtomicBool::new(false),
        })
    }

    fn open_db(path: &Path) -> Result<Database> {
        let db = Database::create(path).map_err(db_err)?;
        let w = db.begin_write().map_err(db_err)?;
        w.open_table(STREAMS).map_err(db_err)?;
        w.open_table(OFFSETS).map_err(db_err)?;
        w.open_table(COUNTERS).map_err(db_err)?;
        w.open_table(RECORDS).map_err(db_err)?;
        w.commit().map_err(db_err)?;
        Ok(db)
    }

    /// The database, reopened first if an I/O error broke it.
    fn db(&self) -> Result<Arc<Database>> {
        if self.broken.load(Ordering::Acquire) {
            let mut g = self.db.write().unwrap_or_else(|e| e.into_inner());
            if self.broken.load(Ordering::Acquire) {
                // redb locks its file: the old handle must be closed before reopening. If a
                // reader still holds it, the reopen fails now and is tried again next call.
                drop(g.take());
                *g = Some(Arc::new(Self::open_db(&self.path)?));
                self.broken.store(false, Ordering::Release);
            }
        }
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StreamError::Metadata("metadata store is being reopened".into()))
    }

    /// Marks the store for reopening when `r` failed with an I/O error.
    fn noted<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(StreamError::Io(_)) = &r {
            self.broken.store(true, Ordering::Release);
        }
        r
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        let r = self.db().and_then(|db| {
            let w = db.begin_write().map_err(db_err)?;
            f(&w)?;
            w.commit().map_err(db_err)
        });
        self.noted(r)
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let r = self.db().and_then(|db| {
            let r = db.begin_read().map_err(db_err)?;
            f(&r)
        });
        self.noted(r)
    }
}

impl MetadataStore for RedbStore {
    fn streams(&self) -> Result<Vec<StreamMeta>> {
        self.read(|r| {
            let t = r.open_table(STREAMS).map_err(db_err)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (_, v) = item.map_err(db_err)?;
                out.push(serde_json::from_slice(v.value()).map_err(json_err)?);
            }
            Ok(out)
        })
    }

    fn put_stream(&self, meta: &StreamMeta) -> Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(json_err)?;
        self.write(|w| {
            let mut t = w.open_table(STREAMS).map_err(db_err)?;
            t.insert(meta.name.as_str(), bytes.as_slice())
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn delete_stream(&self, name: &str) -> Result<()> {
        self.write(|w| {
            let mut t = w.open_table(STREAMS).map_err(db_err)?;
            t.remove(name).map_err(db_err)?;
            let mut o = w.open_table(OFFSETS).map_err(db_err)?;
            let needle = format!("\0{name}\0");
            o.retain(|k, _| !k.contains(&needle)).map_err(db_err)?;
            Ok(())
        })
    }

    fn commit_offsets(&self, group: &str, offsets: &[GroupOffset]) -> Result<()> {
        self.write(|w| {
            let mut t = w.open_table(OFFSETS).map_err(db_err)?;
            for o in offsets {
                let v = serde_json::to_vec(&o.committed).map_err(json_err)?;
                t.insert(
                    offset_key(group, &o.stream, o.partition).as_str(),
                    v.as_slice(),
                )
                .map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>> {
        self.read(|r| {
            let t = r.open_table(OFFSETS).map_err(db_err)?;
            let start = format!("{group}\0");
            let end = format!("{group}\u{1}");
            let mut out = Vec::new();
            for item in t.range(start.as_str()..end.as_str()).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let key = k.value();
                let mut parts = key.splitn(3, '\0').skip(1);
                let (Some(stream), Some(p)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let Ok(partition) = p.parse() else { continue };
                out.push(GroupOffset {
                    stream: stream.to_string(),
                    partition,
                    committed: serde_json::from_slice(v.value()).map_err(json_err)?,
                });
            }
            Ok(out)
        })
    }

    fn groups(&self) -> Result<Vec<String>> {
        self.read(|r| {
            let t = r.open_table(OFFSETS).map_err(db_err)?;
            let mut out: Vec<String> = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, _) = item.map_err(db_err)?;
                let g = k.value().split('\0').next().unwrap_or_default().to_string();
                if out.last() != Some(&g) {
                    out.push(g);
                }
            }
            Ok(out)
        })
    }

    fn delete_group(&self, group: &str) -> Result<()> {
        self.write(|w| {
            let mut t = w.open_table(OFFSETS).map_err(db_err)?;
            let prefix = format!("{group}\0");
            t.retain(|k, _| !k.starts_with(&prefix)).map_err(db_err)?;
            Ok(())
        })
    }

    fn next_producer_id(&self) -> Result<i64> {
        let mut id = 0;
        self.write(|w| {
            let mut t = w.open_table(COUNTERS).map_err(db_err)?;
            id = t
                .get("producer_id")
                .map_err(db_err)?
                .map_or(0, |g| g.value());
            t.insert("producer_id", id + 1).map_err(db_err)?;
            Ok(())
        })?;
        Ok(id)
    }

    fn next_id(&self, counter: &str) -> Result<i64> {
        let mut id = 0;
        self.write(|w| {
            let mut t = w.open_table(COUNTERS).map_err(db_err)?;
            id = t.get(counter).map_err(db_err)?.map_or(0, |g| g.value());
            t.insert(counter, id + 1).map_err(db_err)?;
            Ok(())
        })?;
        Ok(id)
    }

    fn put_record(&self, space: &str, key: &str, value: Option<&[u8]>) -> Result<()> {
        self.put_records(&[(space, key, value)])
    }

    fn put_records(&self, changes: &[(&str, &str, Option<&[u8]>)]) -> Result<()> {
        self.write(|w| {
            let mut t = w.open_table(RECORDS).map_err(db_err)?;
            for (space, key, value) in changes {
                let k = format!("{space}\0{key}");
                match value {
                    Some(v) => {
                        t.insert(k.as_str(), *v).map_err(db_err)?;
                    }
                    None => {
                        t.remove(k.as_str()).map_err(db_err)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn records(&self, space: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.read(|r| {
            let t = r.open_table(RECORDS).map_err(db_err)?;
            let start = format!("{space}\0");
            let end = format!("{space}\u{1}");
            let mut out = Vec::new();
            for item in t.range(start.as_str()..end.as_str()).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                out.push((k.value()[start.len()..].to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }
}
