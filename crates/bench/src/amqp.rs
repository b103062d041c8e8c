//! AMQP 0-9-1 scenario driven by lapin, the Rust client: persistent publish with publisher
//! confirms → one durable queue → one consumer with manual acks, both at once (the issue's
//! "publish with confirms to a durable queue → consumers with manual ack and prefetch").
//! Runs against any AMQP 0-9-1 broker; `bench/amqp_compare.py` runs it against Conflux and
//! RabbitMQ side by side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

/// What one `amqp-pubsub` run does (its command-line arguments).
#[derive(clap::Args)]
pub struct PubSub {
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`
    #[arg(long)]
    pub uri: String,
    /// Body size in bytes (at least 8: the first 8 carry the send time).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Unconfirmed publishes in flight.
    #[arg(long, default_value_t = 200)]
    pub confirm: usize,
    /// The consumer's prefetch count.
    #[arg(long, default_value_t = 200)]
    pub prefetch: u16,
    /// One `basic.ack multiple=true` per this many deliveries.
    #[arg(long, default_value_t = 100)]
    pub multi_ack: u64,
}

async fn connect(uri: &str) -> lapin::Result<Connection> {
    Connection::connect(uri, ConnectionProperties::default()).await
}

/// Runs the scenario and returns its figures as one JSON object.
pub async fn pubsub(p: PubSub, run: &str) -> lapin::Result<Value> {
    let queue = format!("bench-lapin-{run}");
    let epoch = Instant::now();

    // The consumer, on its own connection.
    let cconn = connect(&p.uri).await?;
    let cch = cconn.create_channel().await?;
    cch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    cch.basic_qos(p.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = cch
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumed = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let (multi_ack, c_consumed, c_target) = (p.multi_ack.max(1), consumed.clone(), target.clone());
    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(1 << 20);
        let mut last = epoch;
        let mut n = 0u64;
        let mut unacked = None;
        loop {
            // Wake now and then: the target is only known once the publisher is done.
            let next = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
            let d = match next {
                Ok(Some(Ok(d))) => d,
                Ok(_) => break,
                Err(_) if n >= c_target.load(Ordering::Relaxed) => break,
                Err(_) => continue,
            };
            let now = Instant::now();
            if let Some(ts) = d.data.get(..8) {
                let sent = u64::from_be_bytes(ts.try_into().unwrap_or_default());
                let at = now.duration_since(epoch).as_nanos() as u64;
                lat.push(at.saturating_sub(sent) as f64 / 1e6);
            }
            n += 1;
            last = now;
            c_consumed.store(n, Ordering::Relaxed);
            if n.is_multiple_of(multi_ack) {
                if d.acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .is_err()
                {
                    break;
                }
                unacked = None;
            } else {
                unacked = Some(d.acker);
            }
            if n >= c_target.load(Ordering::Relaxed) {
                break;
            }
        }
        if let Some(acker) = unacked {
            let _ = acker.ack(BasicAckOptions { multiple: true }).await;
        }
        (lat, last)
    });

    // The publisher, on another connection.
    let pconn = connect(&p.uri).await?;
    let pch = pconn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut body = vec![0u8; p.size.max(8)];
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut pending: FuturesUnordered<lapin::PublisherConfirm> = FuturesUnordered::new();
    let (mut published, mut acked, mut nacked) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let until = Duration::from_secs_f64(p.seconds);
    while start.elapsed() < until {
        while pending.len() >= p.confirm.max(1) {
            match pending.next().await {
                Some(Ok(c)) if c.is_ack() => acked += 1,
                _ => nacked += 1,
            }
        }
        let ts = epoch.elapsed().as_nanos() as u64;
        body[..8].copy_from_slice(&ts.to_be_bytes());
        let confirm = pch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?;
        pending.push(confirm);
        published += 1;
    }
    while let Some(r) = pending.next().await {
        match r {
            Ok(c) if c.is_ack() => acked += 1,
            _ => nacked += 1,
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let consumed_while_publishing = consumed.load(Ordering::Relaxed);
    target.store(published, Ordering::Relaxed);

    // Let the consumer finish (bounded).
    let (mut lat, last) = match tokio::time::timeout(Duration::from_secs(120), reader).await {
        Ok(Ok(r)) => r,
        _ => (Vec::new(), Instant::now()),
    };
    let got = consumed.load(Ordering::Relaxed);
    let consume_secs = last.duration_since(start).as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let _ = pch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = pconn.close(200, "bye".into()).await;
    let _ = cconn.close(200, "bye".into()).await;
    Ok(json!({
        "scenario": "amqp-pubsub", "client": "lapin", "size": p.size, "confirm": p.confirm,
        "prefetch": p.prefetch, "multi_ack": p.multi_ack,
        "published": published, "acked": acked, "nacked": nacked, "consumed": got,
        "consumed_while_publishing": consumed_while_publishing,
        "publish_secs": publish_secs, "consume_secs": consume_secs,
        "confirmed_per_sec": acked as f64 / publish_secs,
        "consumed_per_sec": got as f64 / consume_secs.max(1e-9),
        "p50_ms": crate::percentile(&lat, 0.5), "p99_ms": crate::percentile(&lat, 0.99),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN),
    }))
}
