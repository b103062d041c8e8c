//! `conflux-bench`: load generator for Conflux and for the brokers it is compared with.
//!
//! MQTT scenarios (any MQTT 3.1.1 broker; raw sockets, no client library in the way):
//! - `mqtt-fanin`: many publishers → one subscriber, at QoS 0/1/2, messages/s end to end;
//! - `mqtt-latency`: one publisher at a fixed rate → one subscriber, publish → deliver latency;
//! - `mqtt-fanout`: one publisher → many subscribers of one topic, deliveries/s and latency;
//! - `mqtt-conns`: hold many idle connections (the caller measures the broker's memory).
//!
//! AMQP 0-9-1 scenario (any AMQP 0-9-1 broker; lapin, the Rust client):
//! - `amqp-pubsub`: persistent publish with confirms → durable queue → consumer with manual
//!   acks, both at once: confirmed and consumed msgs/s, publish → deliver latency.
//!
//! Each prints one JSON object on stdout. `bench/mqtt_compare.py` and `bench/amqp_compare.py`
//! run them against Conflux and Mosquitto / RabbitMQ side by side; the ratios go in
//! docs/BENCHMARKS.md.

mod amqp;
mod mqtt;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(name = "conflux-bench", about = "Load generator (MQTT, AMQP 0-9-1)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Many publishers, one subscriber.
    MqttFanin {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        /// Messages in all.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// QoS 1/2 messages each publisher keeps unacknowledged.
        #[arg(long, default_value_t = 20)]
        inflight: usize,
    },
    /// One publisher at a fixed rate, one subscriber: latency.
    MqttLatency {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 1)]
        qos: u8,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// One publisher, many subscribers of one topic.
    MqttFanout {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        #[arg(long, default_value_t = 0)]
        qos: u8,
    },
    /// Open and hold idle connections; prints when they are all up, then waits.
    MqttConns {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
    /// AMQP (lapin): persistent publish with confirms → durable queue → consumer, at once.
    AmqpPubsub(amqp::PubSub),
}

fn run_id() -> String {
    format!(
        "{:x}",
        std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Counts what a subscriber receives and acknowledges it (PUBACK, or PUBREC → PUBCOMP).
/// Latencies are read from the first 8 payload bytes (ns since `epoch`) when `latency` is set.
async fn subscriber_loop(
    mut rd: mqtt::PacketReader,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    received: Arc<AtomicU64>,
    until: u64,
    epoch: Instant,
    latency: bool,
) -> Vec<f64> {
    let mut lat = Vec::new();
    let mut out = BytesMut::new();
    while let Ok(Some(p)) = rd.next().await {
        match p.first >> 4 {
            3 => {
                let qos = (p.first >> 1) & 3;
                let tlen = u16::from_be_bytes([p.body[0], p.body[1]]) as usize;
                let mut at = 2 + tlen;
                if qos > 0 {
                    let pid = [p.body[at], p.body[at + 1]];
                    at += 2;
                    out.extend_from_slice(&[if qos == 1 { 0x40 } else { 0x50 }, 2, pid[0], pid[1]]);
                }
                if latency && p.body.len() >= at + 8 {
                    let sent =
                        u64::from_be_bytes(p.body[at..at + 8].try_into().unwrap_or_default());
                    let now = epoch.elapsed().as_nanos() as u64;
                    lat.push(now.saturating_sub(sent) as f64 / 1e6);
                }
                if received.fetch_add(1, Ordering::Relaxed) + 1 >= until {
                    let _ = wr.write_all(&out).await;
                    break;
                }
            }
            6 => {
                // PUBREL → PUBCOMP
                out.extend_from_slice(&[0x70, 2, p.body[0], p.body[1]]);
            }
            _ => {}
        }
        if !out.is_empty() && (!rd.buffered() || out.len() > 16 * 1024) {
            if wr.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
    }
    lat
}

/// Publishes `n` messages on `topic` keeping `inflight` unacknowledged (QoS 1/2).
async fn publisher(
    addr: String,
    id: String,
    topic: String,
    n: usize,
    size: usize,
    qos: u8,
    inflight: usize,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = mqtt::open(&addr, &id, true, 60).await?;
    let payload = vec![b'x'; size];
    if qos == 0 {
        let mut out = BytesMut::with_capacity(64 * 1024);
        for _ in 0..n {
            mqtt::publish(&mut out, &topic, &payload, 0, 0);
            if out.len() > 32 * 1024 {
                wr.write_all(&out).await?;
                out.clear();
            }
        }
        wr.write_all(&out).await?;
        // A PINGREQ round trip: everything before it was read by the broker.
        wr.write_all(&[0xC0, 0]).await?;
        while let Some(p) = rd.next().await? {
            if p.first == 0xD0 {
                break;
            }
        }
        return Ok(());
    }
    // The writer is shared: the ack reader answers PUBREC with PUBREL (QoS 2).
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let window = Arc::new(Semaphore::new(inflight));
    let (w2, wr2) = (window.clone(), wr.clone());
    let acks = tokio::spawn(async move {
        let mut done = 0usize;
        while done < n {
            match rd.next().await {
                Ok(Some(p)) => match p.first >> 4 {
                    4 | 7 => {
                        done += 1;
                        w2.add_permits(1);
                    }
                    5 => {
                        let rel = [0x62, 2, p.body[0], p.body[1]];
                        if wr2.lock().await.write_all(&rel).await.is_err() {
                            break;
                        }
                    }
                    _ => {}
                },
                _ => break,
            }
        }
    });
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut pid: u16 = 0;
    for _ in 0..n {
        let permit = window.acquire().await.map_err(std::io::Error::other)?;
        permit.forget();
        pid = pid.wrapping_add(1).max(1);
        mqtt::publish(&mut out, &topic, &payload, qos, pid);
        if window.available_permits() == 0 || out.len() > 32 * 1024 {
            wr.lock().await.write_all(&out).await?;
            out.clear();
        }
    }
    wr.lock().await.write_all(&out).await?;
    let _ = acks.await;
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::MqttFanin {
            addr,
            publishers,
            messages,
            size,
            qos,
            inflight,
        } => fanin(addr, publishers, messages, size, qos, inflight).await,
        Cmd::MqttLatency {
            addr,
            rate,
            messages,
            qos,
            size,
        } => latency(addr, rate, messages, qos, size).await,
        Cmd::MqttFanout {
            addr,
            subscribers,
            rate,
            messages,
            qos,
        } => fanout(addr, subscribers, rate, messages, qos).await,
        Cmd::MqttConns {
            addr,
            connections,
            hold,
        } => conns(addr, connections, hold).await,
        Cmd::AmqpPubsub(p) => match amqp::pubsub(p, &run_id()).await {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("amqp-pubsub: {e}");
                std::process::exit(1);
            }
        },
    }
}

async fn fanin(
    addr: String,
    publishers: usize,
    messages: usize,
    size: usize,
    qos: u8,
    inflight: usize,
) {
    let run = run_id();
    let (mut rd, mut wr) = mqtt::open(&addr, &format!("sub-{run}"), true, 120)
        .await
        .expect("subscriber");
    mqtt::subscribe_and_wait(&mut rd, &mut wr, &format!("bench/{run}/#"), qos)
        .await
        .expect("subscribe");
    let received = Arc::new(AtomicU64::new(0));
    let per = messages / publishers;
    let total = (per * publishers) as u64;
    let sub = tokio::spawn(subscriber_loop(
        rd,
        wr,
        received.clone(),
        total,
        Instant::now(),
        false,
    ));
    let start = Instant::now();
    let mut pubs = Vec::new();
    for i in 0..publishers {
        pubs.push(tokio::spawn(publisher(
            addr.clone(),
            format!("pub-{run}-{i}"),
            format!("bench/{run}/p{i}"),
            per,
            size,
            qos,
            inflight,
        )));
    }
    for p in pubs {
        if let Ok(Err(e)) = p.await {
            eprintln!("publisher failed: {e}");
        }
    }
    let published = start.elapsed();
    // Wait for the subscriber: all of it, or (QoS 0 may drop) until it goes quiet for 2 s.
    let mut last = received.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    while received.load(Ordering::Relaxed) < total && quiet.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet = Instant::now();
        }
    }
    let got = received.load(Ordering::Relaxed);
    let elapsed = if got >= total {
        start.elapsed()
    } else {
        quiet.duration_since(start).max(published)
    };
    sub.abort();
    println!(
        "{}",
        json!({
            "scenario": "mqtt-fanin", "qos": qos, "size": size, "publishers": publishers,
            "sent": total, "received": got,
            "publish_secs": published.as_secs_f64(),
            "secs": elapsed.as_secs_f64(),
            "msgs_per_sec": got as f64 / elapsed.as_secs_f64(),
        })
    );
}

async fn latency(addr: String, rate: u64, messages: usize, qos: u8, size: usize) {
    let run = run_id();
    let topic = format!("bench/{run}/lat");
    let (mut rd, mut wr) = mqtt::open(&addr, &format!("lsub-{run}"), true, 120)
        .await
        .expect("subscriber");
    mqtt::subscribe_and_wait(&mut rd, &mut wr, &topic, qos)
        .await
        .expect("subscribe");
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let sub = tokio::spawn(subscriber_loop(
        rd,
        wr,
        received.clone(),
        messages as u64,
        epoch,
        true,
    ));
    let (mut prd, mut pwr) = mqtt::open(&addr, &format!("lpub-{run}"), true, 120)
        .await
        .expect("publisher");
    // Acknowledgements (and QoS 2 PUBRELs) are handled by a reader task.
    let (rel_tx, mut rel_rx) = tokio::sync::mpsc::unbounded_channel::<[u8; 2]>();
    tokio::spawn(async move {
        while let Ok(Some(p)) = prd.next().await {
            if p.first >> 4 == 5 {
                let _ = rel_tx.send([p.body[0], p.body[1]]);
            }
        }
    });
    let gap = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = Instant::now();
    let mut out = BytesMut::new();
    let mut payload = vec![0u8; size.max(8)];
    for i in 0..messages {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        out.clear();
        while let Ok(rel) = rel_rx.try_recv() {
            out.extend_from_slice(&[0x62, 2, rel[0], rel[1]]);
        }
        mqtt::publish(&mut out, &topic, &payload, qos, (i % 65535 + 1) as u16);
        pwr.write_all(&out).await.expect("publish");
    }
    let lat = tokio::time::timeout(Duration::from_secs(30), sub)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let mut l = lat;
    l.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "{}",
        json!({
            "scenario": "mqtt-latency", "qos": qos, "rate": rate, "messages": messages,
            "received": l.len(),
            "p50_ms": percentile(&l, 0.5), "p99_ms": percentile(&l, 0.99),
            "max_ms": l.last().copied().unwrap_or(f64::NAN),
        })
    );
}

async fn fanout(addr: String, subscribers: usize, rate: u64, messages: usize, qos: u8) {
    let run = run_id();
    let topic = format!("bench/{run}/fan");
    let epoch = Instant::now();
    // One counter per subscriber: each task ends (and reports its latencies) once it has
    // every message.
    let total = (subscribers * messages) as u64;
    let mut counters = Vec::new();
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let (mut rd, mut wr) = mqtt::open(&addr, &format!("fsub-{run}-{i}"), true, 300)
            .await
            .expect("subscriber");
        mqtt::subscribe_and_wait(&mut rd, &mut wr, &topic, qos)
            .await
            .expect("subscribe");
        let received = Arc::new(AtomicU64::new(0));
        counters.push(received.clone());
        subs.push(tokio::spawn(subscriber_loop(
            rd,
            wr,
            received,
            messages as u64,
            epoch,
            true,
        )));
    }
    let (_prd, mut pwr) = mqtt::open(&addr, &format!("fpub-{run}"), true, 120)
        .await
        .expect("publisher");
    let gap = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = Instant::now();
    let start = Instant::now();
    let mut out = BytesMut::new();
    let mut payload = vec![0u8; 64];
    for i in 0..messages {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        out.clear();
        mqtt::publish(&mut out, &topic, &payload, qos, (i % 65535 + 1) as u16);
        pwr.write_all(&out).await.expect("publish");
    }
    let got = |cs: &[Arc<AtomicU64>]| cs.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got(&counters) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let got = got(&counters);
    let mut all = Vec::new();
    for s in subs {
        if !s.is_finished() {
            s.abort();
        }
        if let Ok(l) = s.await {
            all.extend(l);
        }
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "{}",
        json!({
            "scenario": "mqtt-fanout", "qos": qos, "subscribers": subscribers, "rate": rate,
            "expected": total, "received": got,
            "deliveries_per_sec": got as f64 / elapsed.as_secs_f64(),
            "p50_ms": percentile(&all, 0.5), "p99_ms": percentile(&all, 0.99),
        })
    );
}

async fn conns(addr: String, connections: usize, hold: u64) {
    let run = run_id();
    let mut held = Vec::with_capacity(connections);
    let start = Instant::now();
    let mut failed = 0;
    for i in 0..connections {
        match mqtt::open(&addr, &format!("idle-{run}-{i}"), true, 0).await {
            Ok(c) => held.push(c),
            Err(_) => failed += 1,
        }
    }
    println!(
        "{}",
        json!({"scenario": "mqtt-conns", "held": held.len(), "failed": failed,
               "open_secs": start.elapsed().as_secs_f64()})
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
}
