//! Rust client libraries against the real `conflux` binary (this package's), over loopback on
//! OS-chosen ports: rumqttc (MQTT 3.1.1 and 5.0) and lapin (AMQP 0-9-1).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running broker, killed when dropped.
struct Broker {
    child: Child,
    mqtt: u16,
    amqp: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_conflux"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--kafka-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--mqtt-ws-listen",
            "127.0.0.1:0",
            "--amqp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start conflux");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut mqtt = 0;
    let mut amqp = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let port = |proto: &str| {
            line.contains(&format!("protocol={proto} "))
                .then(|| {
                    line.rsplit(':')
                        .next()?
                        .split_whitespace()
                        .next()?
                        .parse::<u16>()
                        .ok()
                })
                .flatten()
        };
        if let Some(p) = port("mqtt") {
            mqtt = p;
        }
        if let Some(p) = port("amqp") {
            amqp = p;
        }
        if line.contains("protocol=kafka") {
            break;
        }
    }
    // Keep draining the log so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    assert!(mqtt > 0 && amqp > 0, "no MQTT or AMQP listener reported");
    Broker {
        child,
        mqtt,
        amqp,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_and_v5_publish_and_subscribe_through_conflux() {
    let b = start();
    // MQTT 3.1.1: QoS 1 round trip.
    let mut opts = rumqttc::MqttOptions::new("rumqttc-v3", "127.0.0.1", b.mqtt);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    client
        .subscribe("rust/+/v3", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut subscribed = false;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, events.poll())
            .await
            .expect("rumqttc 3.1.1: timed out")
            .expect("rumqttc 3.1.1: connection error");
        match ev {
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) if !subscribed => {
                subscribed = true;
                for i in 0..3 {
                    client
                        .publish(
                            "rust/a/v3",
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            format!("m{i}"),
                        )
                        .await
                        .unwrap();
                }
            }
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                assert_eq!(p.topic, "rust/a/v3");
                got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(got, ["m0", "m1", "m2"]);

    // MQTT 5: user properties travel.
    use rumqttc::v5;
    let opts = v5::MqttOptions::new("rumqttc-v5", "127.0.0.1", b.mqtt);
    let (client, mut events) = v5::AsyncClient::new(opts, 64);
    client
        .subscribe("rust/v5", v5::mqttbytes::QoS::ExactlyOnce)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sent = false;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.poll())
            .await
            .expect("rumqttc 5: timed out")
            .expect("rumqttc 5: connection error");
        match ev {
            v5::Event::Incoming(v5::mqttbytes::v5::Packet::SubAck(_)) if !sent => {
                sent = true;
                let props = v5::mqttbytes::v5::PublishProperties {
                    user_properties: vec![("k".into(), "v".into())],
                    content_type: Some("text/plain".into()),
                    ..Default::default()
                };
                client
                    .publish_with_properties(
                        "rust/v5",
                        v5::mqttbytes::QoS::ExactlyOnce,
                        false,
                        "hello v5",
                        props,
                    )
                    .await
                    .unwrap();
            }
            v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(p)) => {
                assert_eq!(&p.payload[..], b"hello v5");
                let props = p.properties.expect("properties");
                assert_eq!(
                    props.user_properties,
                    vec![("k".to_string(), "v".to_string())]
                );
                assert_eq!(props.content_type.as_deref(), Some("text/plain"));
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_topic_routing_confirms_properties_and_acks_through_conflux() {
    use futures_util::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

    let b = start();
    let uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", b.amqp);
    let conn = tokio::time::timeout(
        Duration::from_secs(20),
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("lapin: connect timed out")
    .expect("lapin: connect");
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "events".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"));
    ch.queue_bind(
        q.name().clone(),
        "events".into(),
        "order.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongInt(7));
    headers.insert(
        "s".into(),
        AMQPValue::LongString(LongString::from("v".as_bytes().to_vec())),
    );
    for key in ["order.created", "order.paid", "invoice.sent"] {
        let confirm = ch
            .basic_publish(
                "events".into(),
                key.into(),
                BasicPublishOptions::default(),
                key.as_bytes(),
                BasicProperties::default()
                    .with_content_type("text/plain".into())
                    .with_delivery_mode(2)
                    .with_headers(headers.clone()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "{key}: {confirm:?}");
    }
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "lapin-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("lapin: no delivery")
            .expect("lapin: consumer ended")
            .expect("lapin: delivery error");
        assert_eq!(d.exchange.as_str(), "events");
        assert_eq!(
            d.properties.content_type().as_ref().map(|c| c.as_str()),
            Some("text/plain")
        );
        let h = d.properties.headers().as_ref().expect("headers");
        assert_eq!(
            h.inner().get("n"),
            Some(&AMQPValue::LongInt(7)),
            "typed header kept"
        );
        got.push((d.routing_key.to_string(), d.data.clone()));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        got,
        vec![
            ("order.created".to_string(), b"order.created".to_vec()),
            ("order.paid".to_string(), b"order.paid".to_vec()),
        ],
        "topic routing, in order; invoice.sent not delivered"
    );
    conn.close(200, "bye".into()).await.unwrap();
}
