//! Unit-level tests of the partition log through the public core API.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use bytes::Bytes;
use core_stream::batch::{self, Record};
use core_stream::{Core, CoreConfig, FsyncPolicy, StreamConfig, StreamError};

fn rec(i: usize, ts: i64) -> Record {
    Record {
        timestamp: ts,
        key: Some(Bytes::from(format!("k{i}"))),
        value: Some(Bytes::from(format!("value-{i}-{}", "x".repeat(100)))),
        ..Default::default()
    }
}

fn open(dir: &std::path::Path) -> Arc<Core> {
    Core::open(CoreConfig::new(dir)).unwrap()
}

fn cfg(segment_bytes: u64) -> StreamConfig {
    StreamConfig {
        segment_bytes,
        ..Default::default()
    }
}

async fn append(core: &Core, stream: &str, recs: &[Record]) -> (i64, i64) {
    let p = core.stream(stream).unwrap().partition(0).unwrap();
    let b = batch::build_batch(recs, None);
    let h = batch::validate_all(&b).unwrap();
    let out = p.append(&b, &h).unwrap();
    out.durable.wait().await.unwrap();
    (out.base_offset, out.last_offset)
}

fn read_all(core: &Core, stream: &str) -> Vec<Record> {
    let p = core.stream(stream).unwrap().partition(0).unwrap();
    let mut out = Vec::new();
    let mut off = p.log_start_offset();
    loop {
        let r = p.read(off, 64 * 1024).unwrap();
        if r.data.is_empty() {
            return out;
        }
        let mut data = r.data.clone();
        while !data.is_empty() {
            let (_, size) = batch::peek_frame(&data).unwrap();
            let one = data.split_to(size);
            for rec in batch::decode_records(&one).unwrap() {
                if rec.offset >= off {
                    out.push(rec);
                }
            }
        }
        off = out.last().unwrap().offset + 1;
    }
}

#[tokio::test]
async fn append_then_read_returns_records_in_order_with_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("orders", cfg(1 << 20)).unwrap();
    assert_eq!(
        append(&core, "orders", &[rec(0, 10), rec(1, 11)]).await,
        (0, 1)
    );
    assert_eq!(append(&core, "orders", &[rec(2, 12)]).await, (2, 2));
    let all = read_all(&core, "orders");
    assert_eq!(all.len(), 3);
    assert_eq!(
        all.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(all[2].key.as_deref(), Some(&b"k2"[..]));
    let p = core.stream("orders").unwrap().partition(0).unwrap();
    assert_eq!(p.high_watermark(), 3);
    assert!(matches!(
        p.read(4, 100),
        Err(StreamError::OffsetOutOfRange { .. })
    ));
    assert!(p.read(3, 100).unwrap().data.is_empty());
    core.shutdown();
}

#[tokio::test]
async fn segments_roll_by_size_and_index_lookups_find_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("big", cfg(4096)).unwrap();
    for i in 0..200 {
        append(&core, "big", &[rec(i, 1000 + i as i64)]).await;
    }
    let p = core.stream("big").unwrap().partition(0).unwrap();
    let segs = std::fs::read_dir(p.data_dir().unwrap()).unwrap().count();
    assert!(segs > 5, "expected several segments, found {segs}");
    for off in [0i64, 1, 37, 99, 150, 199] {
        let r = p.read(off, 1).unwrap();
        let h = batch::validate(&r.data).unwrap();
        assert!(
            h.base_offset <= off && h.last_offset() >= off,
            "offset {off} in batch {h:?}"
        );
    }
    // Time index: first batch with timestamp >= 1100 is offset 100.
    assert_eq!(p.offset_for_timestamp(1100).unwrap(), Some((100, 1100)));
    assert_eq!(p.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(p.max_timestamp(), Some((199, 1199)));
    assert_eq!(read_all(&core, "big").len(), 200);
    core.shutdown();
}

#[tokio::test]
async fn retention_by_bytes_and_time_deletes_oldest_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    let mut c = cfg(4096);
    c.retention_bytes = 8192;
    core.create_stream("r", c).unwrap();
    let now = core_stream::partition::now_ms();
    for i in 0..100 {
        append(&core, "r", &[rec(i, now)]).await;
    }
    let p = core.stream("r").unwrap().partition(0).unwrap();
    let before = p.size_bytes();
    assert!(p.apply_retention(now, None).unwrap() > 0);
    assert!(p.size_bytes() < before);
    assert!(p.size_bytes() >= 8192 - 4096);
    let start = p.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        p.read(0, 10),
        Err(StreamError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&core, "r").first().unwrap().offset, start);
    // Time: everything is older than a 1 ms retention one hour from now, except the active segment.
    let mut c = core.stream("r").unwrap().config();
    c.retention_bytes = -1;
    c.retention_ms = 1;
    core.set_stream_config("r", c).unwrap();
    p.apply_retention(now + 3_600_000, None).unwrap();
    assert_eq!(std::fs::read_dir(p.data_dir().unwrap()).unwrap().count(), 1);
    assert_eq!(p.high_watermark(), 100);
    core.shutdown();
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.pop().unwrap()
}

#[tokio::test]
async fn recovery_cuts_a_truncated_final_batch_and_keeps_earlier_data() {
    let dir = tempfile::tempdir().unwrap();
    let pdir;
    {
        let core = open(dir.path());
        core.create_stream("t", cfg(1 << 20)).unwrap();
        for i in 0..10 {
            append(&core, "t", &[rec(i, 1)]).await;
        }
        pdir = core
            .stream("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .data_dir()
            .unwrap()
            .to_path_buf();
        core.shutdown();
    }
    let seg = last_segment(&pdir);
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let core = open(dir.path());
    let recs = read_all(&core, "t");
    assert_eq!(recs.len(), 9);
    assert_eq!(recs.last().unwrap().offset, 8);
    // New appends continue right after the recovered tail.
    assert_eq!(append(&core, "t", &[rec(99, 2)]).await, (9, 9));
    core.shutdown();
}

#[tokio::test]
async fn recovery_cuts_from_a_flipped_byte_and_keeps_earlier_batches() {
    let dir = tempfile::tempdir().unwrap();
    let pdir;
    let batch_len;
    {
        let core = open(dir.path());
        core.create_stream("f", cfg(1 << 20)).unwrap();
        for i in 0..10 {
            append(&core, "f", &[rec(i, 1)]).await;
        }
        let p = core.stream("f").unwrap().partition(0).unwrap();
        batch_len = p.read(0, 1).unwrap().data.len() as u64;
        pdir = p.data_dir().unwrap().to_path_buf();
        core.shutdown();
    }
    let seg = last_segment(&pdir);
    // Flip one byte inside the 6th batch's records (offset 5).
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let at = batch_len * 5 + batch_len - 3;
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
    drop(f);
    let core = open(dir.path());
    let recs = read_all(&core, "f");
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), batch_len * 5);
    core.shutdown();
}

#[tokio::test]
async fn idempotent_retry_returns_original_offsets_and_gaps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("i", cfg(1 << 20)).unwrap();
    let p = core.stream("i").unwrap().partition(0).unwrap();
    let b0 = batch::build_batch(&[rec(0, 1), rec(1, 1)], Some((7, 0, 0)));
    let h0 = batch::validate_all(&b0).unwrap();
    let first = p.append(&b0, &h0).unwrap();
    assert!(!first.duplicate);
    let again = p.append(&b0, &h0).unwrap();
    assert!(again.duplicate);
    assert_eq!((again.base_offset, again.last_offset), (0, 1));
    let gap = batch::build_batch(&[rec(2, 1)], Some((7, 0, 5)));
    let hg = batch::validate_all(&gap).unwrap();
    assert!(matches!(
        p.append(&gap, &hg),
        Err(StreamError::OutOfOrderSequence { expected: 2, .. })
    ));
    let next = batch::build_batch(&[rec(2, 1)], Some((7, 0, 2)));
    let hn = batch::validate_all(&next).unwrap();
    assert_eq!(p.append(&next, &hn).unwrap().base_offset, 2);
    core.shutdown();
}

#[tokio::test]
async fn group_offsets_and_streams_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let core = open(dir.path());
        core.create_stream(
            "s",
            StreamConfig {
                partitions: 3,
                ..Default::default()
            },
        )
        .unwrap();
        core.commit_offsets(
            "g",
            &[core_stream::GroupOffset {
                stream: "s".into(),
                partition: 2,
                committed: core_stream::CommittedOffset {
                    offset: 42,
                    attachment: b"m".to_vec(),
                },
            }],
        )
        .unwrap();
        core.shutdown();
    }
    let core = open(dir.path());
    assert_eq!(core.stream("s").unwrap().partition_count(), 3);
    let offs = core.group_offsets("g").unwrap();
    assert_eq!(offs.len(), 1);
    assert_eq!(offs[0].committed.offset, 42);
    assert_eq!(core.groups_with_offsets().unwrap(), vec!["g".to_string()]);
    core.shutdown();
}

#[tokio::test]
async fn fsync_never_acknowledges_without_waiting_and_data_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = CoreConfig::new(dir.path());
    c.fsync = FsyncPolicy::Never;
    let core = Core::open(c).unwrap();
    core.create_stream("n", cfg(1 << 20)).unwrap();
    append(&core, "n", &[rec(0, 1)]).await;
    assert_eq!(
        core.stream("n")
            .unwrap()
            .partition(0)
            .unwrap()
            .high_watermark(),
        1
    );
    core.shutdown();
}

#[tokio::test]
async fn pattern_subscription_sees_streams_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("sensors.temperature", StreamConfig::default())
        .unwrap();
    core.create_stream("orders.eu.new", StreamConfig::default())
        .unwrap();
    let mut sub = core.subscribe("sensors.#");
    let names = |s: &core_stream::PatternSubscription| {
        s.matching()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&sub), vec!["sensors.temperature"]);
    let core2 = core.clone();
    let creator = tokio::spawn(async move {
        core2
            .create_stream("sensors.humidity.room1", StreamConfig::default())
            .unwrap()
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), sub.changed())
        .await
        .unwrap()
        .unwrap();
    creator.await.unwrap();
    assert_eq!(
        names(&sub),
        vec!["sensors.humidity.room1", "sensors.temperature"]
    );
    core.shutdown();
}

#[tokio::test]
async fn append_records_keys_like_kafka_and_is_readable_as_records() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream(
        "user-events",
        StreamConfig {
            partitions: 3,
            ..Default::default()
        },
    )
    .unwrap();
    // kafka-python/librdkafka murmur2 partitioning of "user-123" over 3 partitions is 2.
    assert_eq!(core_stream::partition_for_key(b"user-123", 3), 2);
    assert_eq!(core_stream::core::murmur2(b"21"), 0xc5f2_f8ec);
    let out = core
        .append_records(
            "user-events",
            Some(b"user-123"),
            0,
            &[rec(1, 5), rec(2, 6)],
            0,
        )
        .unwrap();
    out.durable.wait().await.unwrap();
    let p = core.stream("user-events").unwrap().partition(2).unwrap();
    let r = p.read(0, 1 << 20).unwrap();
    let recs = batch::decode_records(&r.data).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(recs[1].key.as_deref(), Some(&b"k2"[..]));
    // An unknown stream is created on first append.
    core.append_records("new.stream", None, 7, &[rec(0, 1)], 0)
        .unwrap()
        .durable
        .wait()
        .await
        .unwrap();
    assert_eq!(
        core.stream("new.stream")
            .unwrap()
            .partition(0)
            .unwrap()
            .high_watermark(),
        1
    );
    core.shutdown();
}

#[tokio::test]
async fn segments_roll_by_age_and_reopen_with_every_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let core = open(dir.path());
        core.create_stream(
            "aged",
            StreamConfig {
                segment_ms: 1,
                ..cfg(1 << 30)
            },
        )
        .unwrap();
        for i in 0..3 {
            append(&core, "aged", &[rec(i, 1)]).await;
            // segment.ms = 1: the next append, at least 2 ms later, must roll.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let p = core.stream("aged").unwrap().partition(0).unwrap();
        assert_eq!(std::fs::read_dir(p.data_dir().unwrap()).unwrap().count(), 3);
        core.shutdown();
    }
    let core = open(dir.path());
    assert_eq!(
        read_all(&core, "aged")
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(append(&core, "aged", &[rec(9, 1)]).await, (3, 3));
    core.shutdown();
}

#[tokio::test]
async fn many_rolls_between_fsyncs_keep_reads_within_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("burst", cfg(1024)).unwrap();
    let p = core.stream("burst").unwrap().partition(0).unwrap();
    // Append without waiting: several segment rolls happen before the fsync thread catches up.
    let mut tickets = Vec::new();
    for i in 0..200 {
        let b = batch::build_batch(&[rec(i, 1)], None);
        let h = batch::validate_all(&b).unwrap();
        tickets.push(p.append(&b, &h).unwrap());
        // Whatever is readable now is below the high watermark it reports.
        let hw = p.high_watermark();
        if hw > 0 {
            let r = p.read(0, 1 << 20).unwrap();
            let mut data = r.data.clone();
            while !data.is_empty() {
                let (_, size) = batch::peek_frame(&data).unwrap();
                let h = batch::validate(&data.split_to(size)).unwrap();
                assert!(
                    h.last_offset() < r.high_watermark,
                    "read {h:?} past hw {}",
                    r.high_watermark
                );
            }
        }
    }
    for t in tickets {
        t.durable.wait().await.unwrap();
    }
    assert_eq!(p.high_watermark(), 200);
    let all = read_all(&core, "burst");
    assert_eq!(
        all.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..200).collect::<Vec<i64>>()
    );
    core.shutdown();
}

#[tokio::test]
async fn producer_state_is_bounded_and_forgets_the_least_recent() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("many", cfg(64 << 20)).unwrap();
    let p = core.stream("many").unwrap().partition(0).unwrap();
    for pid in 0..10_050i64 {
        let b = batch::build_batch(&[rec(0, 1)], Some((pid, 0, 0)));
        p.append(&b, &batch::validate_all(&b).unwrap()).unwrap();
    }
    // The newest producer is still known: its retry is recognised as a duplicate...
    let b = batch::build_batch(&[rec(0, 1)], Some((10_049, 0, 0)));
    assert!(
        p.append(&b, &batch::validate_all(&b).unwrap())
            .unwrap()
            .duplicate
    );
    // ...while the oldest was forgotten, so the same batch is taken as new.
    let b = batch::build_batch(&[rec(0, 1)], Some((0, 0, 0)));
    assert!(
        !p.append(&b, &batch::validate_all(&b).unwrap())
            .unwrap()
            .duplicate
    );
    core.shutdown();
}

#[tokio::test]
async fn many_small_segments_stay_readable_with_few_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = CoreConfig::new(dir.path());
    c.max_open_files = 16;
    let core = Core::open(c.clone()).unwrap();
    // ~200-byte records in 300-byte segments: one segment per record.
    for s in 0..4 {
        core.create_stream(&format!("small{s}"), cfg(300)).unwrap();
        for i in 0..30 {
            append(&core, &format!("small{s}"), &[rec(i, 1000 + i as i64)]).await;
        }
    }
    let files = std::fs::read_dir(dir.path().join("streams/small0-0"))
        .unwrap()
        .count();
    assert!(files >= 30, "one segment per record, got {files} files");
    for s in 0..4 {
        let got = read_all(&core, &format!("small{s}"));
        assert_eq!(got.len(), 30);
        assert!(got.iter().enumerate().all(|(i, r)| r.offset == i as i64));
    }
    core.shutdown();
    drop(core);
    // After a restart every record is still there.
    let core = Core::open(c).unwrap();
    assert_eq!(read_all(&core, "small3").len(), 30);
    core.shutdown();
}

#[tokio::test]
async fn delete_before_moves_the_log_start_durably_and_drops_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("d", cfg(300)).unwrap();
    for i in 0..10 {
        append(&core, "d", &[rec(i, 1000)]).await;
    }
    let p = core.stream("d").unwrap().partition(0).unwrap();
    let segs = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("streams/d-0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    };
    let before = segs(dir.path());
    assert_eq!(p.delete_before(4).unwrap(), 4);
    assert_eq!(p.log_start_offset(), 4);
    assert!(
        segs(dir.path()) < before,
        "segments wholly below 4 are deleted"
    );
    assert!(matches!(
        p.read(3, 1024),
        Err(StreamError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&core, "d").first().unwrap().offset, 4);
    // Moving backwards does nothing; past the high watermark is refused.
    assert_eq!(p.delete_before(2).unwrap(), 4);
    assert!(p.delete_before(11).is_err());
    core.shutdown();
    drop((p, core));
    let core = open(dir.path());
    let p = core.stream("d").unwrap().partition(0).unwrap();
    assert_eq!(p.log_start_offset(), 4, "the new start survives a restart");
    assert_eq!(p.high_watermark(), 10);
    core.shutdown();
}

#[tokio::test]
async fn timestamp_lookups_have_record_granularity_inside_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(dir.path());
    core.create_stream("ts", cfg(1 << 20)).unwrap();
    // One batch, two records: timestamps 1234 and 999999999999 (librdkafka's test 0054).
    append(&core, "ts", &[rec(0, 1234), rec(1, 999_999_999_999)]).await;
    let p = core.stream("ts").unwrap().partition(0).unwrap();
    assert_eq!(p.offset_for_timestamp(1000).unwrap(), Some((0, 1234)));
    assert_eq!(
        p.offset_for_timestamp(1235).unwrap(),
        Some((1, 999_999_999_999))
    );
    assert_eq!(p.offset_for_timestamp(1_000_000_000_000).unwrap(), None);
    assert_eq!(p.max_timestamp(), Some((1, 999_999_999_999)));
    core.shutdown();
}
