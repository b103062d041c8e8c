//! # Conflux Kafka front-end
//!
//! Speaks the Apache Kafka wire protocol over the stream core, so kafka-python,
//! confluent-kafka/librdkafka and kcat work unchanged. Map of the crate:
//!
//! - [`guard`]: checks every request frame before it is decoded, so no length or count read
//!   off the wire can make the `kafka-protocol` decoder reserve unbounded memory.
//! - [`connection`]: one TCP connection — framing, pipelined requests, in-order responses.
//! - [`codec`]: response framing and the protocol-level error answers.
//! - [`configs`]: Kafka's topic and broker config names, validation and reporting.
//! - [`handlers`]: one module per API family (produce, fetch, metadata, offsets, admin, …).
//! - [`group`]: the classic consumer-group coordinator (join/sync/heartbeat/leave).
//! - [`errors`]: the crate's error type ([`errors::KafkaError`], why a connection closes) and the
//!   one mapping from core errors to Kafka error codes.

#![warn(missing_docs)]

pub mod codec;
pub mod configs;
pub mod connection;
pub mod errors;
pub mod group;
pub mod guard;
pub mod handlers;
pub mod txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conflux_net::{ListenerLimits, Shutdown};
use core_stream::Core;
use tokio::net::TcpListener;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Address the listener is bound to (`host:port`), reported as `listeners`.
    pub listener: String,
    /// Host clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// This broker's node id in Metadata answers.
    pub node_id: i32,
    /// Create unknown topics on Metadata/Produce, like Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Largest request frame accepted; larger frames close the connection.
    pub max_request_bytes: usize,
    /// Delay before the first rebalance of a new group completes, so members starting together join one generation.
    pub group_initial_rebalance_delay: Duration,
    /// Upper bound on a fetch's `max_wait_ms`.
    pub max_fetch_wait: Duration,
    /// Upper bound on the data one fetch answer carries (Kafka's `fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Highest replication factor CreateTopics accepts (the topic still has this one
    /// replica): 1 answers more with INVALID_REPLICATION_FACTOR, as a one-broker Kafka does;
    /// 3 lets tools and suites written for a three-broker cluster run.
    pub max_replication_factor: i16,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            listener: "0.0.0.0:9092".into(),
            advertised_host: "localhost".into(),
            advertised_port: 9092,
            node_id: 0,
            auto_create_topics: true,
            max_request_bytes: 16 * 1024 * 1024,
            group_initial_rebalance_delay: Duration::from_millis(300),
            max_fetch_wait: Duration::from_secs(30),
            fetch_max_bytes: 55 * 1024 * 1024,
            max_connections: 100_000,
            max_replication_factor: 1,
        }
    }
}

/// Shared state of the Kafka front-end: the core, its settings and the group coordinator.
#[derive(Debug)]
pub struct KafkaBroker {
    /// The stream core.
    pub core: Arc<Core>,
    /// Listener settings.
    pub config: KafkaConfig,
    /// Consumer-group membership.
    pub groups: group::GroupCoordinator,
    /// Transactions.
    pub txn: Arc<txn::TxnCoordinator>,
    /// Set when the broker shuts down; long polls end early.
    pub shutdown: Shutdown,
}

/// Accepts Kafka connections until shutdown (at most `max_connections` at once; more are
/// closed at once), then waits (bounded) for open connections to finish their in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    core: Arc<Core>,
    config: KafkaConfig,
    shutdown: Shutdown,
) {
    let groups = group::GroupCoordinator::new(core.clone(), config.group_initial_rebalance_delay);
    let txn = txn::TxnCoordinator::open(core.clone()).await;
    core.set_txn_view(txn.clone());
    let limits = ListenerLimits {
        protocol: "kafka",
        max_connections: config.max_connections,
        drain_timeout: Duration::from_secs(10),
    };
    let broker = Arc::new(KafkaBroker {
        core,
        config,
        groups,
        txn: txn.clone(),
        shutdown: shutdown.clone(),
    });
    let ticker = tokio::spawn(group::run_timers(broker.clone()));
    let txn_timeouts = tokio::spawn(txn::run_timeouts(txn, shutdown.clone()));
    conflux_net::serve(
        listener,
        limits,
        shutdown,
        |sock, peer| connection::run(sock, peer, broker.clone()),
        // Kafka has no "busy" answer before a request: the connection is just closed.
        |_sock, _peer| async {},
    )
    .await;
    ticker.abort();
    txn_timeouts.abort();
}

/// The address a listener is bound to, for logs and advertised defaults.
pub fn bound(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}
