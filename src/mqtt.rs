//! The MQTT session. One task polls rumqttc's event loop and only forwards what arrives; another
//! drains the outbound queue into the client, so no other task ever awaits a publish (rumqttc
//! deadlocks when its request channel is full and the event loop is the one waiting).
//!
//! The retained last will is `<base>/bridge/state = offline`. Connection errors back off
//! exponentially (1 s doubling to 60 s) because rumqttc would otherwise retry at full speed.

use crate::config::MqttConfig;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the session reports to the daemon.
#[derive(Debug)]
pub enum MqttEvent {
    /// A ConnAck: a fresh session. Subscribe again, announce, republish.
    Connected,
    /// The connection dropped; the session is retrying.
    Disconnected(String),
    Message {
        topic: String,
        payload: Bytes,
        retain: bool,
    },
}

/// The largest packet sent or accepted. A larger publish is refused here, by topic, rather than
/// letting rumqttc drop the whole connection over it.
pub const MAX_PACKET: usize = 16 << 20;

enum Outbound {
    Publish {
        topic: String,
        payload: Bytes,
        retain: bool,
    },
    Subscribe(Vec<String>),
    Unsubscribe(String),
    Disconnect,
}

/// The handle the daemon publishes through. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct Mqtt {
    tx: mpsc::UnboundedSender<Outbound>,
}

impl Mqtt {
    /// Queues a QoS 1 publish.
    pub fn publish(&self, topic: impl Into<String>, payload: impl Into<Bytes>, retain: bool) {
        let _ = self.tx.send(Outbound::Publish {
            topic: topic.into(),
            payload: payload.into(),
            retain,
        });
    }

    /// Queues a QoS 1 subscription to each filter.
    pub fn subscribe(&self, filters: Vec<String>) {
        let _ = self.tx.send(Outbound::Subscribe(filters));
    }

    /// Queues an unsubscription.
    pub fn unsubscribe(&self, filter: String) {
        let _ = self.tx.send(Outbound::Unsubscribe(filter));
    }

    /// Queues a clean disconnect after everything queued before it.
    pub fn disconnect(&self) {
        let _ = self.tx.send(Outbound::Disconnect);
    }
}

/// Starts the session's two tasks. They end after `disconnect()` has gone out, or when `stop`
/// is cancelled (the daemon cancels it after a grace period on shutdown).
pub fn start(
    config: &MqttConfig,
    will_topic: &str,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> anyhow::Result<(Mqtt, mpsc::UnboundedReceiver<MqttEvent>)> {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options
        .set_keep_alive(config.keepalive)
        .set_clean_session(true)
        // Discovery for a miner is several kilobytes; bridge/miners for a large fleet, megabytes.
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        // QoS 1 publishes awaiting PubAck: a large fleet publishes thousands per second.
        .set_inflight(1000)
        .set_last_will(LastWill::new(will_topic, "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &config.username {
        let password = config
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        options.set_credentials(user, password);
    }
    if config.tls {
        let transport = match &config.ca_file {
            Some(path) => {
                let ca = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("mqtt.ca_file {}: cannot read: {e}", path.display())
                })?;
                Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
                    ca,
                    alpn: None,
                    client_auth: None,
                })
            }
            None => Transport::tls_with_default_config(),
        };
        options.set_transport(transport);
    }

    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outbound>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();

    let broker = format!("{}:{}", config.host, config.port);
    let loop_stop = stop.clone();
    tracker.spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let polled = tokio::select! {
                _ = loop_stop.cancelled() => break,
                polled = eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_secs(1);
                    tracing::info!(%broker, code = ?ack.code, "connected to MQTT broker");
                    let _ = ev_tx.send(MqttEvent::Connected);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = ev_tx.send(MqttEvent::Message {
                        topic: p.topic,
                        payload: p.payload,
                        retain: p.retain,
                    });
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::debug!("MQTT disconnect sent");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%broker, error = %e, retry_in = ?backoff, "MQTT connection lost");
                    let _ = ev_tx.send(MqttEvent::Disconnected(e.to_string()));
                    tokio::select! {
                        _ = loop_stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    });

    tracker.spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let sent = match msg {
                Outbound::Publish {
                    topic,
                    payload,
                    retain,
                } => {
                    client
                        .publish_bytes(topic, QoS::AtLeastOnce, retain, payload)
                        .await
                }
                Outbound::Subscribe(filters) => {
                    let subs = filters
                        .into_iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                    client.subscribe_many(subs).await
                }
                Outbound::Unsubscribe(filter) => client.unsubscribe(filter).await,
                Outbound::Disconnect => {
                    let _ = client.disconnect().await;
                    break;
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "MQTT client closed; dropping outbound messages");
                break;
            }
        }
    });

    Ok((Mqtt { tx: out_tx }, ev_rx))
}
