//! A simulated Tasmota smart plug on an MQTT broker, powering a simulated ESP-Miner device:
//! `ON`/`OFF`/`TOGGLE` on `cmnd/<topic>/POWER` switch the device's mains power (off, it stops
//! answering; on, it boots), and the plug answers on `stat/<topic>/POWER` as Tasmota does (not
//! retained), also once when it connects.

use super::axeos::SimDevice;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The plug's topics, Tasmota style, for a plug called `topic`.
pub fn topics(topic: &str) -> (String, String) {
    (format!("cmnd/{topic}/POWER"), format!("stat/{topic}/POWER"))
}

/// Publishes the plug's state, as Tasmota does after every command.
async fn tell(client: &AsyncClient, state_topic: &str, on: bool) {
    let state = if on { "ON" } else { "OFF" };
    let _ = client
        .publish(state_topic, QoS::AtLeastOnce, false, state)
        .await;
}

/// Starts a plug called `topic` on the broker at `host:port`, powering `device`. Returns once
/// it is subscribed.
pub async fn start(
    host: &str,
    port: u16,
    topic: &str,
    device: SimDevice,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (command_topic, state_topic) = topics(topic);
    let mut options = MqttOptions::new(format!("sim-plug-{topic}"), host, port);
    options.set_keep_alive(Duration::from_secs(10));
    // Subscribed on every ConnAck (a clean session forgets it on a reconnect).
    let (client, mut events) = AsyncClient::new(options, 16);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    tell(&client, &state_topic, device.powered()).await;
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == command_topic => {
                    let text = String::from_utf8_lossy(&p.payload)
                        .trim()
                        .to_ascii_uppercase();
                    let on = match text.as_str() {
                        "ON" | "1" => Some(true),
                        "OFF" | "0" => Some(false),
                        "TOGGLE" | "2" => Some(!device.powered()),
                        // Tasmota answers an empty command with the state.
                        "" => None,
                        _ => continue,
                    };
                    if let Some(on) = on {
                        device.set_power(on);
                    }
                    tell(&client, &state_topic, device.powered()).await;
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client
                        .subscribe(command_topic.clone(), QoS::AtLeastOnce)
                        .await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .map_err(|_| {
            anyhow::anyhow!("the simulated plug could not subscribe on {host}:{port} within 10 s")
        })??;
    Ok(())
}
