//! # Conflux MQTT front-end
//!
//! MQTT 3.1.1 and 5.0 over TCP and over WebSocket (subprotocol `mqtt`), on the stream core:
//! every PUBLISH is a record in a stream (readable by Kafka consumers), and subscriptions are
//! entries in the core's router (so Kafka and AMQP writers reach MQTT subscribers). Map:
//!
//! - [`packet`]: one set of packet types for both versions; [`codec`]: the wire (rmqtt-codec).
//! - [`transport`]: TCP and WebSocket byte streams.
//! - [`connection`]: one client connection (CONNECT, publish, subscribe, delivery, keep-alive).
//! - [`broker`]: what connections share: settings, sessions, wills, the publish path.
//! - [`session`]: sessions and their router sinks (live buffer, durable queue).
//! - [`topics`]: topic and filter rules, topic ↔ stream mapping (default and rules).
//! - [`props`]: MQTT properties ↔ record headers.
//! - [`retained`]: retained messages.

#![warn(missing_docs)]

pub mod broker;
pub mod codec;
pub mod connection;
pub mod packet;
pub mod props;
pub mod retained;
pub mod session;
pub mod topics;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

pub use broker::{KeyPolicy, MqttBroker, MqttConfig};
use conflux_net::ListenerLimits;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Serves MQTT over TCP until shutdown.
pub async fn serve(listener: TcpListener, broker: Arc<MqttBroker>) {
    let limits = ListenerLimits {
        protocol: "mqtt",
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

/// Serves MQTT over WebSocket until shutdown.
pub async fn serve_ws(listener: TcpListener, broker: Arc<MqttBroker>) {
    let limits = ListenerLimits {
        protocol: "mqtt-ws",
        max_connections: broker.config.max_connections,
        drain_timeout: Duration::from_secs(5),
    };
    let shutdown = broker.shutdown.clone();
    let max = broker.config.max_packet_size as usize;
    conflux_net::serve(
        listener,
        limits,
        shutdown,
        |sock: TcpStream, peer| {
            let b = broker.clone();
            async move {
                let _ = sock.set_nodelay(true);
                match transport::accept_ws(sock, max).await {
                    Ok((rd, wr)) => connection::run(b, rd, wr, peer).await,
                    Err(e) => debug!(%peer, error = %e, "WebSocket handshake failed"),
                }
            }
        },
        |_sock, _peer| async {},
    )
    .await;
}

/// Past the connection limit: read the CONNECT's first bytes and answer "server unavailable"
/// (3.1.1 return code 3 looks the same to a 5.0 client parsing 0x03 as malformed, so the
/// connection is then closed either way).
async fn refuse_busy(sock: TcpStream, _peer: std::net::SocketAddr) {
    use tokio::io::AsyncWriteExt;
    let mut sock = sock;
    let _ = sock.write_all(&[0x20, 0x02, 0x00, 0x03]).await;
    let _ = sock.shutdown().await;
}

/// Runs work that writes the metadata store (an fsync'd commit) while letting the runtime
/// move other tasks off this thread.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
