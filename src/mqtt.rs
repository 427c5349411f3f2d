//! The MQTT session. One task polls rumqttc's event loop and only forwards what arrives; another
//! drains the outbound queue into the client, so no other task ever awaits a publish (rumqttc
//! deadlocks when its request channel is full and the event loop is the one waiting).
//!
//! The retained last will is `<base>/bridge/state = offline`. The session is persistent (clean
//! session off, a stable client id), so the broker queues the QoS 1 commands that arrive while the
//! daemon is away and delivers them on its return. Reconnects are prompt — the first retry within
//! a quarter second, then at most one a second — because rumqttc would otherwise retry at full
//! speed; a broker that refuses us (bad credentials) is asked again every 30 s.
//!
//! Before the session starts, `find_live_instance` looks with a throw-away client id for another
//! daemon online on the same base topic, so a second instance neither takes over the first's
//! session nor applies every command twice.

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

/// The largest packet sent. A larger publish is refused here, by topic, rather than letting
/// rumqttc drop the whole connection over it.
pub const MAX_PACKET: usize = 16 << 20;

/// The largest packet accepted: MQTT's own maximum, so no message one publisher sends can make
/// rumqttc drop our session (which, with a persistent session, the broker would redeliver for
/// ever). The daemon looks at no more than the first few kilobytes of a command; a broker's
/// `max_packet_size` setting is the place to keep such messages off the network.
pub const MAX_INCOMING: usize = 268_435_455;

enum Outbound {
    Publish {
        topic: String,
        payload: Bytes,
        retain: bool,
        qos: QoS,
    },
    Subscribe(Vec<String>),
    Unsubscribe(String),
    Disconnect,
}

/// The first reconnect attempt comes this soon after a connection is lost.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Reconnects never wait longer than this, so a broker that returns is used again within a
/// second (a refused connect to a broker that is down costs next to nothing).
const MAX_RETRY: Duration = Duration::from_secs(1);
/// A broker that answers but refuses us (credentials, ACL) is asked again this often.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

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
            qos: QoS::AtLeastOnce,
        });
    }

    /// Queues a QoS 0 publish: for a miner's state, which the next poll sends again anyway, so
    /// a lost one costs nothing and an acknowledgement per poll is not worth its round trip.
    pub fn publish_volatile(&self, topic: impl Into<String>, payload: impl Into<Bytes>) {
        let _ = self.tx.send(Outbound::Publish {
            topic: topic.into(),
            payload: payload.into(),
            retain: false,
            qos: QoS::AtMostOnce,
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

/// Broker address, credentials and TLS for a client called `client_id`.
/// Options for a short-lived client of the command line (`benchmark`, `report`): a clean
/// session under a client id of its own, replies up to `MAX_PACKET`.
pub fn cli_options(config: &MqttConfig, role: &str) -> anyhow::Result<MqttOptions> {
    let id = format!("{}-{role}-{:x}", config.client_id, rand::random::<u32>());
    let mut options = connect_options(config, &id)?;
    options
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(MAX_PACKET, 1 << 16);
    Ok(options)
}

pub fn connect_options(config: &MqttConfig, client_id: &str) -> anyhow::Result<MqttOptions> {
    let mut options = MqttOptions::new(client_id, &config.host, config.port);
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

    Ok(options)
}

/// Another miner2mqtt answering on the same base topic: what its health check said.
#[derive(Debug, Clone)]
pub struct LiveInstance {
    pub answer: serde_json::Value,
}

/// Asks, with a throw-away client id, whether another daemon is live on `base`: it sends a
/// `health_check` request and waits `wait` for an answer. A live daemon answers; one that died
/// (whatever its retained state says) does not, so a stale `online` never locks a user out.
/// A broker that cannot be reached is not an answer: the caller starts and keeps retrying.
pub async fn find_live_instance(
    config: &MqttConfig,
    base: &str,
    wait: Duration,
) -> anyhow::Result<Option<LiveInstance>> {
    let nonce: u64 = rand::random();
    let id = format!("{}-check-{nonce:x}", config.client_id);
    let mut options = connect_options(config, &id)?;
    options
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1 << 20, 1 << 16);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let response_topic = format!("{base}/bridge/response/health_check");
    let transaction = format!("instance-check-{nonce:x}");
    let deadline = tokio::time::Instant::now() + wait + Duration::from_secs(3);
    let mut asked_at: Option<tokio::time::Instant> = None;
    let result = loop {
        let until = match asked_at {
            Some(t) => (t + wait).min(deadline),
            None => deadline,
        };
        let polled = match tokio::time::timeout_at(until, eventloop.poll()).await {
            Err(_) => break Ok(None),
            Ok(p) => p,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe(response_topic.clone(), QoS::AtLeastOnce)
                    .await?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let request = serde_json::json!({ "transaction": transaction });
                client
                    .publish(
                        format!("{base}/bridge/request/health_check"),
                        QoS::AtLeastOnce,
                        false,
                        request.to_string(),
                    )
                    .await?;
                asked_at = Some(tokio::time::Instant::now());
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == response_topic => {
                let answer: serde_json::Value =
                    serde_json::from_slice(&p.payload).unwrap_or_default();
                if answer["transaction"] == transaction.as_str() {
                    break Ok(Some(LiveInstance { answer }));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "could not ask the broker about other instances");
                break Ok(None);
            }
        }
    };
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    result
}

/// Starts the session's two tasks. They end after `disconnect()` has gone out, or when `stop`
/// is cancelled (the daemon cancels it after a grace period on shutdown).
pub fn start(
    config: &MqttConfig,
    will_topic: &str,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> anyhow::Result<(Mqtt, mpsc::UnboundedReceiver<MqttEvent>)> {
    let mut options = connect_options(config, &config.client_id)?;
    options
        .set_keep_alive(config.keepalive)
        // The broker keeps our subscriptions and queues QoS 1 commands while we are away.
        .set_clean_session(false)
        // Discovery for a miner is several kilobytes; bridge/miners for a large fleet, megabytes.
        .set_max_packet_size(MAX_INCOMING, MAX_PACKET)
        // QoS 1 publishes awaiting PubAck: a large fleet publishes thousands per second.
        .set_inflight(1000)
        .set_last_will(LastWill::new(will_topic, "offline", QoS::AtLeastOnce, true));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outbound>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();

    let broker = format!("{}:{}", config.host, config.port);
    let client_id = config.client_id.clone();
    let loop_stop = stop.clone();
    tracker.spawn(async move {
        let mut backoff = FIRST_RETRY;
        let mut failures = 0u32;
        let mut connected_at: Option<tokio::time::Instant> = None;
        let mut quick_drops = 0u32;
        loop {
            let polled = tokio::select! {
                _ = loop_stop.cancelled() => break,
                polled = eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = FIRST_RETRY;
                    failures = 0;
                    connected_at = Some(tokio::time::Instant::now());
                    tracing::info!(%broker, session_present = ack.session_present, "connected to MQTT broker");
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
                    // A session dropped again and again right after it was made is the broker
                    // handing our client id to someone else.
                    match connected_at.take() {
                        Some(t) if t.elapsed() < Duration::from_secs(3) => {
                            quick_drops += 1;
                            if quick_drops == 3 {
                                tracing::error!(%broker, client_id = %client_id, "the broker keeps closing our session moments after it opens: another client is probably connected with the same client id; give each miner2mqtt its own mqtt.client_id (and mqtt.base_topic)");
                            }
                        }
                        // A session that lasted: whatever closed it, it was no takeover.
                        Some(_) => quick_drops = 0,
                        None => {}
                    }
                    let refused = matches!(e, rumqttc::ConnectionError::ConnectionRefused(_));
                    if refused {
                        backoff = REFUSED_RETRY;
                    }
                    failures += 1;
                    // The first failure is worth a warning; then one every ~30 attempts.
                    if failures == 1 || refused || failures % 30 == 0 {
                        tracing::warn!(%broker, error = %e, failures, retry_in = ?backoff, "MQTT connection lost");
                    } else {
                        tracing::debug!(%broker, error = %e, failures, "MQTT reconnect failed");
                    }
                    if failures == 1 {
                        let _ = ev_tx.send(MqttEvent::Disconnected(e.to_string()));
                    }
                    tokio::select! {
                        _ = loop_stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    if !refused {
                        backoff = (backoff * 2).min(MAX_RETRY);
                    }
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
                    qos,
                } => client.publish_bytes(topic, qos, retain, payload).await,
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
