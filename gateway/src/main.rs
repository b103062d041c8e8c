//! `conflux`: one broker for Kafka, MQTT and AMQP 0-9-1 clients over one durable stream core.
//!
//! This binary reads the configuration, opens the core, binds the listeners, and shuts down
//! cleanly on SIGINT/SIGTERM: stop accepting, finish in-flight requests, fsync, exit 0.

mod config;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use config::{Config, ServeArgs};
use core_stream::{Core, CoreConfig, StreamConfig};
use tokio::net::TcpListener;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "conflux",
    version,
    about = "Kafka, MQTT and AMQP 0-9-1 over one durable stream core"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the broker.
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let Cli {
        cmd: Cmd::Serve(args),
    } = Cli::parse();
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conflux: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "conflux stopped");
            ExitCode::FAILURE
        }
    }
}

fn core_config(cfg: &Config) -> CoreConfig {
    let mut c = CoreConfig::new(&cfg.data_dir);
    c.fsync = cfg.fsync;
    c.fsync_interval = Duration::from_millis(cfg.fsync_interval_ms);
    c.max_batch_bytes = cfg.max_batch_bytes;
    c.max_open_files = cfg.max_open_files;
    c.retention_check_interval = Duration::from_millis(cfg.retention_check_interval_ms.max(100));
    c.stream_defaults = StreamConfig {
        partitions: cfg.default_partitions,
        retention_ms: cfg.retention_ms,
        retention_bytes: cfg.retention_bytes,
        segment_bytes: cfg.segment_bytes,
        ..StreamConfig::default()
    };
    c
}

/// Raises the open-file limit to its hard maximum: every segment of every partition keeps a
/// file open, and every client a socket (the common soft default of 1024 is far too low).
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                let old = lim.rlim_cur;
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    info!(from = old, to = lim.rlim_max, "raised the open-file limit");
                }
            }
        }
    }
}

async fn serve(cfg: Config) -> Result<(), String> {
    let mut signals = Signals::install();
    raise_open_file_limit();
    let core = Core::open(core_config(&cfg))
        .map_err(|e| format!("cannot open data dir {}: {e}", cfg.data_dir.display()))?;
    let (stop, shutdown) = conflux_net::Shutdown::new();

    // Bind every listener first, then report them, Kafka last: "listener bound
    // protocol=kafka" means the broker is ready on every port.
    let listener = TcpListener::bind(&cfg.kafka_listen)
        .await
        .map_err(|e| format!("cannot bind kafka listener {}: {e}", cfg.kafka_listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let (host, port) = advertised(&cfg.kafka_advertised, bound)?;
    let kcfg = conflux_kafka::KafkaConfig {
        listener: bound.to_string(),
        advertised_host: host.clone(),
        advertised_port: port,
        auto_create_topics: cfg.auto_create_topics,
        max_request_bytes: cfg.max_request_bytes,
        fetch_max_bytes: cfg.fetch_max_bytes,
        group_initial_rebalance_delay: Duration::from_millis(cfg.group_initial_rebalance_delay_ms),
        max_connections: cfg.max_connections,
        max_replication_factor: cfg.kafka_max_replication_factor,
        ..Default::default()
    };
    let mut tasks = Vec::new();
    let mqtt_cfg = conflux_mqtt::MqttConfig {
        max_packet_size: cfg.mqtt_max_packet_size,
        receive_maximum: cfg.mqtt_receive_maximum,
        max_inflight: cfg.mqtt_max_inflight,
        max_queued_messages: cfg.mqtt_max_queued_messages,
        max_queued_messages_persistent: cfg.mqtt_max_queued_messages_persistent,
        max_keepalive: cfg.mqtt_max_keepalive,
        topic_alias_maximum: cfg.mqtt_topic_alias_maximum,
        deny_subscribe: cfg.mqtt_deny_subscribe.clone(),
        mapping: cfg.mqtt_mapping.clone(),
        key: cfg.mqtt_key,
        max_connections: cfg.max_connections,
    };
    if !cfg.mqtt_listen.is_empty() || !cfg.mqtt_ws_listen.is_empty() {
        let mqtt = conflux_mqtt::MqttBroker::open(core.clone(), mqtt_cfg, shutdown.clone())
            .map_err(|e| format!("cannot start MQTT: {e}"))?;
        if !cfg.mqtt_listen.is_empty() {
            let l = TcpListener::bind(&cfg.mqtt_listen)
                .await
                .map_err(|e| format!("cannot bind mqtt listener {}: {e}", cfg.mqtt_listen))?;
            info!(protocol = %"mqtt", addr = %l.local_addr().map_err(|e| e.to_string())?, "listener bound");
            tasks.push(tokio::spawn(conflux_mqtt::serve(l, mqtt.clone())));
        }
        if !cfg.mqtt_ws_listen.is_empty() {
            let l = TcpListener::bind(&cfg.mqtt_ws_listen)
                .await
                .map_err(|e| format!("cannot bind mqtt-ws listener {}: {e}", cfg.mqtt_ws_listen))?;
            info!(protocol = %"mqtt-ws", addr = %l.local_addr().map_err(|e| e.to_string())?, "listener bound");
            tasks.push(tokio::spawn(conflux_mqtt::serve_ws(l, mqtt)));
        }
    }
    if !cfg.amqp_listen.is_empty() {
        let amqp_cfg = conflux_amqp::AmqpConfig {
            frame_max: cfg.amqp_frame_max,
            channel_max: cfg.amqp_channel_max,
            heartbeat: cfg.amqp_heartbeat,
            max_message_bytes: cfg.amqp_max_message_bytes,
            max_connections: cfg.max_connections,
            users: cfg
                .amqp_users
                .iter()
                .filter_map(|u| u.split_once(':'))
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            loopback_users: cfg.amqp_loopback_users.clone(),
            vhosts: cfg.amqp_vhosts.clone(),
            disk_free_limit: cfg.amqp_disk_free_limit,
            memory_high_watermark: cfg.amqp_memory_high_watermark,
        };
        let amqp = conflux_amqp::AmqpBroker::open(core.clone(), amqp_cfg, shutdown.clone())
            .map_err(|e| format!("cannot start AMQP: {e}"))?;
        let l = TcpListener::bind(&cfg.amqp_listen)
            .await
            .map_err(|e| format!("cannot bind amqp listener {}: {e}", cfg.amqp_listen))?;
        info!(protocol = %"amqp", addr = %l.local_addr().map_err(|e| e.to_string())?, "listener bound");
        tasks.push(tokio::spawn(conflux_amqp::serve(l, amqp)));
    }
    info!(protocol = %"http", addr = %cfg.http_listen, "listener not built yet; not listening");
    info!(protocol = %"kafka", addr = %bound, advertised = %format!("{host}:{port}"), "listener bound");
    tasks.push(tokio::spawn(conflux_kafka::serve(
        listener,
        core.clone(),
        kcfg,
        shutdown.clone(),
    )));

    signals.wait().await;
    info!("shutting down: no new connections, finishing in-flight requests");
    stop.trigger();
    for t in tasks {
        let _ = t.await;
    }
    let core2: Arc<Core> = core.clone();
    tokio::task::spawn_blocking(move || core2.shutdown())
        .await
        .map_err(|e| e.to_string())?;
    info!("bye");
    Ok(())
}

/// `host:port` to advertise: the configured one, or the bound address (with 0.0.0.0 → 127.0.0.1).
fn advertised(conf: &str, bound: std::net::SocketAddr) -> Result<(String, u16), String> {
    if conf.is_empty() {
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        return Ok((host, bound.port()));
    }
    let (h, p) = conf
        .rsplit_once(':')
        .ok_or_else(|| format!("kafka_advertised {conf:?} is not host:port"))?;
    let p = p
        .parse()
        .map_err(|_| format!("kafka_advertised {conf:?} has a bad port"))?;
    Ok((h.to_string(), p))
}

/// SIGTERM/SIGINT, installed before any listener reports itself bound: a stop signal sent as
/// soon as the broker says it is ready must still shut it down cleanly.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match &mut self.int {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
