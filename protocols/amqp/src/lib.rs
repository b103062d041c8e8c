//! # Conflux AMQP 0-9-1 front-end
//!
//! AMQP 0-9-1 (RabbitMQ's protocol) on the stream core: a publish to exchange `E` with
//! routing key `R` is a record in stream `E.R` (readable by Kafka consumers and MQTT
//! subscribers), queues are the core's durable queues of references into the streams, and
//! bindings are entries in the core's router (so Kafka and MQTT writers reach AMQP queues).
//! Map:
//!
//! - [`wire`]: protocol header, frame checks before buffering, frames written.
//! - [`connection`]: handshake, frame loop, heartbeats, closing.
//! - [`channel`]: channel methods, content assembly, the publish path and confirms.
//! - [`consumer`]: consumers, `basic.get`, acknowledgements.
//! - [`broker`]: what connections share: topology, consumers per queue, dead-lettering.
//! - [`topology`]: exchange/queue/binding definitions and their stream names and patterns.
//! - [`sink`]: bindings as router sinks (queues, exchange-to-exchange).
//! - [`props`]: basic properties ↔ record headers.
//! - [`error`]: reply codes and texts.

#![warn(missing_docs)]

pub mod broker;
pub mod channel;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod props;
pub mod sink;
pub mod topology;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use broker::{AmqpBroker, AmqpConfig};
use conflux_net::ListenerLimits;
use tokio::net::{TcpListener, TcpStream};

/// Serves AMQP 0-9-1 over TCP until shutdown.
pub async fn serve(listener: TcpListener, broker: Arc<AmqpBroker>) {
    let limits = ListenerLimits {
        protocol: "amqp",
        max_connections: broker.config.max_connections,
        drain_timeout: Duration::from_secs(5),
    };
    let shutdown = broker.shutdown.clone();
    conflux_net::serve(
        listener,
        limits,
        shutdown,
        |sock: TcpStream, peer| {
            let b = broker.clone();
            async move {
                let _ = sock.set_nodelay(true);
                let (rd, wr) = sock.into_split();
                connection::run(b, rd, wr, peer).await;
            }
        },
        refuse_busy,
    )
    .await;
}

/// Past the connection limit: the protocol header alone says "not now" to a client (it
/// cannot tell this from a version mismatch, and reconnects later).
async fn refuse_busy(sock: TcpStream, _peer: std::net::SocketAddr) {
    use tokio::io::AsyncWriteExt;
    let mut sock = sock;
    let _ = sock.write_all(wire::PROTOCOL_HEADER).await;
    let _ = sock.shutdown().await;
}
