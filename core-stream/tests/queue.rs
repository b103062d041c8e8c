//! Durable queues through the core's public API: routing into a queue, delivery order,
//! acknowledgement, requeue, restart with redelivery, limits, expiry, log cuts, retention pins.

use std::sync::Arc;

use bytes::Bytes;
use core_stream::batch::Record;
use core_stream::log::DurableTicket;
use core_stream::queue::{Overflow, Queue, QueueConsumer, QueueSettings};
use core_stream::router::{Refusal, Routed, Sink};
use core_stream::{Core, CoreConfig, StreamConfig};

#[derive(Debug)]
struct QueueSink(Arc<Queue>, i64);

impl Sink for QueueSink {
    fn offer(&self, r: &Arc<Routed>, _tags: &[u64]) -> Result<Option<DurableTicket>, Refusal> {
        self.0.enqueue(r, Bytes::from_static(b"att"), self.1)
    }
}

fn durable(settings: QueueSettings) -> QueueSettings {
    QueueSettings {
        durable: true,
        ..settings
    }
}

fn rec(i: usize) -> Record {
    Record {
        timestamp: 1000 + i as i64,
        key: Some(Bytes::from(format!("k{i}"))),
        value: Some(Bytes::from(format!("v{i}"))),
        ..Default::default()
    }
}

async fn publish(core: &Core, stream: &str, n: std::ops::Range<usize>) {
    for i in n {
        let out = core.append_records(stream, None, 0, &[rec(i)], 0).unwrap();
        out.durable.wait().await.unwrap();
    }
}

fn values(t: &core_stream::queue::Take) -> Vec<String> {
    t.deliveries
        .iter()
        .map(|d| String::from_utf8(d.record.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

fn setup(dir: &std::path::Path, settings: QueueSettings) -> (Arc<Core>, Arc<Queue>) {
    let core = Core::open(CoreConfig::new(dir)).unwrap();
    let (q, _) = core.declare_queue("q", durable(settings), vec![]).unwrap();
    core.router()
        .subscribe("orders.#", Arc::new(QueueSink(q.clone(), 0)), 0);
    (core, q)
}

#[tokio::test]
async fn routed_records_are_delivered_in_order_acked_and_requeued_first() {
    let dir = tempfile::tempdir().unwrap();
    let (core, q) = setup(dir.path(), QueueSettings::default());
    publish(&core, "orders.eu", 0..5).await;
    publish(&core, "other", 0..3).await; // not bound
    assert_eq!(q.len(), 5);
    let c = QueueConsumer::new(q.clone());
    let t = c.next(3).await.unwrap();
    assert_eq!(values(&t), ["v0", "v1", "v2"]);
    assert!(t
        .deliveries
        .iter()
        .all(|d| !d.redelivered && d.deliveries == 1));
    assert_eq!(&t.deliveries[0].attachment[..], b"att");
    assert_eq!(&*t.deliveries[0].stream, "orders.eu");
    q.ack(&[t.deliveries[0].id, t.deliveries[2].id]).unwrap();
    q.requeue(&[t.deliveries[1].id]).unwrap();
    let t2 = c.next(10).await.unwrap();
    assert_eq!(
        values(&t2),
        ["v1", "v3", "v4"],
        "the requeued entry comes first"
    );
    assert!(t2.deliveries[0].redelivered && t2.deliveries[0].deliveries == 2);
    assert_eq!(q.len(), 3);
    assert_eq!(q.unacked(), 3);
    drop(c); // disconnect: its unacknowledged entries go back
    assert_eq!(q.unacked(), 0);
    let c = QueueConsumer::new(q.clone());
    let t3 = c.take(10).unwrap();
    assert_eq!(values(&t3), ["v1", "v3", "v4"]);
    assert!(t3.deliveries.iter().all(|d| d.redelivered));
    q.ack(&t3.deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
        .unwrap();
    assert!(q.is_empty());
    drop(c);
    core.shutdown();
}

#[tokio::test]
async fn restart_redelivers_unacked_marked_and_keeps_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (core, q) = setup(dir.path(), QueueSettings::default());
        publish(&core, "orders.eu", 0..1200).await;
        let c = QueueConsumer::new(q.clone());
        let t = c.take(5).unwrap();
        assert_eq!(values(&t), ["v0", "v1", "v2", "v3", "v4"]);
        q.ack(&[t.deliveries[0].id, t.deliveries[1].id]).unwrap();
        std::mem::forget(c); // a crash: nothing released
        core.shutdown();
    }
    let core = Core::open(CoreConfig::new(dir.path())).unwrap();
    let q = core.queue("q").expect("durable queue reopened");
    assert_eq!(q.len(), 1198);
    let c = QueueConsumer::new(q.clone());
    let t = c.take(5).unwrap();
    assert_eq!(values(&t), ["v2", "v3", "v4", "v5", "v6"]);
    let flags: Vec<bool> = t.deliveries.iter().map(|d| d.redelivered).collect();
    assert_eq!(flags, [true, true, true, false, false]);
    // The whole backlog (past the read-ahead window) comes out in order.
    let mut all = values(&t);
    loop {
        let t = c.take(100).unwrap();
        if t.deliveries.is_empty() {
            break;
        }
        q.ack(&t.deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
            .unwrap();
        all.extend(values(&t));
    }
    let want: Vec<String> = (2..1200).map(|i| format!("v{i}")).collect();
    assert_eq!(all, want);
    drop(c);
    core.shutdown();
}

#[tokio::test]
async fn length_limits_follow_the_overflow_policy() {
    for (overflow, expect) in [
        (Overflow::DropHead, vec!["v2", "v3", "v4"]),
        (Overflow::DropNew, vec!["v0", "v1", "v2"]),
        (Overflow::RejectPublish, vec!["v0", "v1", "v2"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let settings = QueueSettings {
            max_length: Some(3),
            overflow,
            ..Default::default()
        };
        let (core, q) = setup(dir.path(), settings);
        let mut refused = 0;
        for i in 0..5 {
            let out = core
                .append_records("orders.x", None, 0, &[rec(i)], 0)
                .unwrap();
            refused += out.refused.len();
            out.durable.wait().await.unwrap();
        }
        assert_eq!(
            refused,
            if overflow == Overflow::RejectPublish {
                2
            } else {
                0
            }
        );
        let c = QueueConsumer::new(q.clone());
        let t = c.take(10).unwrap();
        assert_eq!(values(&t), expect, "{overflow:?}");
        if overflow == Overflow::DropHead {
            let reasons: Vec<_> = t.dropped.iter().map(|d| d.reason).collect();
            assert_eq!(
                reasons.len(),
                2,
                "dropped heads are reported for dead-lettering"
            );
        }
        drop(c);
        core.shutdown();
    }
}

#[tokio::test]
async fn expired_entries_are_dropped_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::open(CoreConfig::new(dir.path())).unwrap();
    let (q, _) = core
        .declare_queue("q", durable(QueueSettings::default()), vec![])
        .unwrap();
    core.router()
        .subscribe("old.#", Arc::new(QueueSink(q.clone(), 1)), 0);
    core.router()
        .subscribe("new.#", Arc::new(QueueSink(q.clone(), 0)), 0);
    publish(&core, "old.a", 0..2).await;
    publish(&core, "new.a", 2..3).await;
    let t = QueueConsumer::new(q.clone()).take(10).unwrap();
    assert_eq!(values(&t), ["v2"]);
    assert_eq!(t.dropped.len(), 2);
    core.shutdown();
}

#[tokio::test]
async fn acked_entries_are_cut_from_the_queue_log_and_pins_hold_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (core, q) = setup(dir.path(), QueueSettings::default());
    core.create_stream(
        "orders.small",
        StreamConfig {
            segment_bytes: 200,
            retention_bytes: 0,
            ..StreamConfig::default()
        },
    )
    .unwrap();
    publish(&core, "orders.small", 0..3000).await;
    let c = QueueConsumer::new(q.clone());
    // The first entry stays unacknowledged: retention must keep its record.
    let first = c.take(1).unwrap();
    let mut acked = 0;
    loop {
        let t = c.take(500).unwrap();
        if t.deliveries.is_empty() {
            break;
        }
        acked += q
            .ack(&t.deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
            .unwrap();
    }
    assert_eq!(acked, 2999);
    core.apply_retention();
    let p = core.stream("orders.small").unwrap().partition(0).unwrap();
    assert_eq!(
        p.log_start_offset(),
        0,
        "the unacked entry's record is kept"
    );
    q.ack(&[first.deliveries[0].id]).unwrap();
    core.apply_retention();
    assert!(p.log_start_offset() > 0, "released once acknowledged");
    // Thousands of acknowledgements cut the queue log itself: its start moved past them.
    let qdir = std::fs::read_dir(dir.path().join("queues"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let start: i64 = std::fs::read_to_string(qdir.join("log-start-offset"))
        .expect("the queue log was cut")
        .trim()
        .parse()
        .unwrap();
    assert!(start > 1000, "queue log start {start}");
    drop(c);
    core.shutdown();
}

#[tokio::test]
async fn a_backlog_of_multi_record_batches_reads_back_in_order_after_restart() {
    // Entries read back from disk carry no record: each take resolves them from the stored
    // batches (one read and decode per batch, kept while consecutive entries share it).
    let dir = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    {
        let (core, _q) = setup(dir.path(), QueueSettings::default());
        for b in 0..20 {
            // Two streams' batches interleaved, 25 records each, some bodies identical across
            // batches (same CRC input but for the base offset, which the CRC does not cover).
            for stream in ["orders.eu", "orders.us"] {
                let recs: Vec<Record> = (0..25)
                    .map(|i| Record {
                        timestamp: 1000,
                        value: Some(Bytes::from(if i % 5 == 0 {
                            format!("{stream}-same")
                        } else {
                            format!("{stream}-{b}-{i}")
                        })),
                        ..Default::default()
                    })
                    .collect();
                want.extend(
                    recs.iter()
                        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()),
                );
                let out = core.append_records(stream, None, 0, &recs, 0).unwrap();
                out.durable.wait().await.unwrap();
            }
        }
        core.shutdown();
    }
    let core = Core::open(CoreConfig::new(dir.path())).unwrap();
    let q = core.queue("q").expect("durable queue reopened");
    assert_eq!(q.len(), 1000);
    let c = QueueConsumer::new(q.clone());
    let mut got = Vec::new();
    for max in [7usize, 30, 100, 1000].into_iter().cycle() {
        let t = c.take(max).unwrap();
        if t.deliveries.is_empty() {
            break;
        }
        q.ack(&t.deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
            .unwrap();
        got.extend(values(&t));
    }
    assert_eq!(got, want);
    assert!(q.is_empty());
    drop(c);
    core.shutdown();
}
