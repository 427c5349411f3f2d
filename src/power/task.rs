//! The plug task: one for all plugs. It keeps what each plug should be (`wanted`, saved in the
//! store so a restart remembers a miner switched off on purpose) and what the plug last said
//! (`actual`), sends switch commands (MQTT publish, or an HA service call), and every keepalive
//! re-sends where the two differ, with a `plug_corrected` event. The hub routes the plugs' MQTT
//! state messages here and turns what comes back into miner state.

use super::{HaApi, Plug};
use crate::control::Origin;
use crate::mqtt::Mqtt;
use crate::store::Store;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One miner's plug.
#[derive(Debug, Clone)]
pub struct PlugSpec {
    /// The miner's index in the hub.
    pub index: usize,
    pub name: String,
    pub plug: Plug,
}

#[derive(Debug)]
pub enum Input {
    /// Switch a miner's plug.
    Set {
        index: usize,
        on: bool,
        origin: Origin,
    },
    /// A message on a plug's state topic.
    Observed { index: usize, payload: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// What a plug should be and what it last said (each unknown until known).
    State {
        index: usize,
        wanted: Option<bool>,
        actual: Option<bool>,
    },
    /// A switch command went out, or could not.
    Done {
        index: usize,
        on: bool,
        origin: Origin,
        result: Result<(), String>,
    },
    Event(Value),
}

#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Input>,
}

impl Handle {
    pub fn send(&self, input: Input) {
        let _ = self.tx.send(input);
    }
}

struct Entry {
    spec: PlugSpec,
    wanted: Option<bool>,
    actual: Option<bool>,
}

struct Plugs {
    entries: Vec<Entry>,
    ha: Option<HaApi>,
    mqtt: Mqtt,
    http: reqwest::Client,
    store: Store,
    out: mpsc::Sender<Output>,
}

fn setting_key(name: &str) -> String {
    format!("power/{name}")
}

fn on_off(on: bool) -> &'static str {
    if on {
        "ON"
    } else {
        "OFF"
    }
}

/// How long one call to Home Assistant may take.
const HA_TIMEOUT: Duration = Duration::from_secs(5);

impl Plugs {
    /// The entry of the miner at `index`.
    fn position(&self, index: usize) -> Option<usize> {
        self.entries.iter().position(|e| e.spec.index == index)
    }

    async fn report(&self, e: usize) {
        let e = &self.entries[e];
        let _ = self
            .out
            .send(Output::State {
                index: e.spec.index,
                wanted: e.wanted,
                actual: e.actual,
            })
            .await;
    }

    /// Sends `on` to plug `e`; says what went wrong.
    async fn switch(&mut self, e: usize, on: bool) -> Result<(), String> {
        let plug = self.entries[e].spec.plug.clone();
        match plug {
            Plug::Mqtt(p) => {
                let payload = if on { &p.payload_on } else { &p.payload_off };
                self.mqtt
                    .publish(p.command_topic.clone(), payload.clone().into_bytes(), false);
                if p.state_topic.is_none() {
                    // Nothing will say otherwise: take it as done.
                    self.entries[e].actual = Some(on);
                }
                Ok(())
            }
            Plug::Ha { entity_id } => {
                let api = self
                    .ha
                    .as_ref()
                    .ok_or("no Home Assistant API is configured")?;
                let domain = entity_id.split('.').next().unwrap_or("switch");
                let service = if on { "turn_on" } else { "turn_off" };
                let url = format!("{}/services/{domain}/{service}", api.base);
                let response = self
                    .http
                    .post(&url)
                    .bearer_auth(api.token.expose())
                    .timeout(HA_TIMEOUT)
                    .json(&json!({ "entity_id": entity_id }))
                    .send()
                    .await
                    .map_err(|e| format!("Home Assistant at {}: {e}", api.base))?;
                check_ha(response.status(), &entity_id)?;
                self.entries[e].actual = Some(on);
                Ok(())
            }
        }
    }

    /// Asks Home Assistant what an entity is; `None` for MQTT plugs (they report themselves).
    async fn read_ha(&self, e: usize) -> Option<Result<bool, String>> {
        let Plug::Ha { entity_id } = &self.entries[e].spec.plug else {
            return None;
        };
        let api = self.ha.as_ref()?;
        let url = format!("{}/states/{entity_id}", api.base);
        let result = async {
            let response = self
                .http
                .get(&url)
                .bearer_auth(api.token.expose())
                .timeout(HA_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("Home Assistant at {}: {e}", api.base))?;
            check_ha(response.status(), entity_id)?;
            let body: Value = response
                .json()
                .await
                .map_err(|e| format!("Home Assistant's answer for {entity_id} is not JSON: {e}"))?;
            match body.get("state").and_then(Value::as_str) {
                Some("on") => Ok(true),
                Some("off") => Ok(false),
                Some(other) => Err(format!("{entity_id} is {other:?}, neither on nor off")),
                None => Err(format!(
                    "Home Assistant's answer for {entity_id} has no state"
                )),
            }
        }
        .await;
        Some(result)
    }

    async fn set(&mut self, index: usize, on: bool, origin: Origin) {
        let Some(e) = self.position(index) else {
            return;
        };
        let result = self.switch(e, on).await;
        // Only a switch that went out changes what is wanted: a refused token or an
        // unreachable Home Assistant leaves the miner as it was, and the user is told.
        if result.is_ok() {
            self.entries[e].wanted = Some(on);
            let name = &self.entries[e].spec.name;
            if let Err(err) = self.store.set_setting(&setting_key(name), on) {
                tracing::error!(miner = %name, error = %err, "cannot keep the plug's wanted state");
            }
        }
        let _ = self
            .out
            .send(Output::Done {
                index,
                on,
                origin,
                result,
            })
            .await;
        self.report(e).await;
    }

    async fn observed(&mut self, index: usize, payload: &[u8]) {
        let Some(e) = self.position(index) else {
            return;
        };
        let Plug::Mqtt(p) = &self.entries[e].spec.plug else {
            return;
        };
        if let Some(on) = p.read_state(payload) {
            if self.entries[e].actual != Some(on) {
                self.entries[e].actual = Some(on);
                self.report(e).await;
            }
        }
    }

    /// Every plug with a wanted state: learn its state (HA) and correct it where it differs.
    async fn keepalive(&mut self) {
        for e in 0..self.entries.len() {
            if let Some(read) = self.read_ha(e).await {
                match read {
                    Ok(on) if self.entries[e].actual != Some(on) => {
                        self.entries[e].actual = Some(on);
                        self.report(e).await;
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        tracing::warn!(miner = %self.entries[e].spec.name, %reason, "cannot read the plug");
                    }
                }
            }
            let Some(wanted) = self.entries[e].wanted else {
                continue;
            };
            let entry = &self.entries[e];
            let reported = match &entry.spec.plug {
                Plug::Mqtt(p) => p.state_topic.is_some(),
                Plug::Ha { .. } => true,
            };
            if entry.actual == Some(wanted) && reported {
                continue;
            }
            if !reported {
                // A plug that never reports is told again quietly: sending the same state is
                // harmless, and it corrects a press of the plug's own button.
                let _ = self.switch(e, wanted).await;
                continue;
            }
            let name = entry.spec.name.clone();
            let was = entry.actual;
            let result = self.switch(e, wanted).await;
            let reason = match was {
                Some(a) => format!(
                    "{name}'s plug was {} but {} is wanted; switched {} again",
                    on_off(a),
                    on_off(wanted),
                    on_off(wanted)
                ),
                None => format!(
                    "{name}'s plug has not reported its state; switched {} again",
                    on_off(wanted)
                ),
            };
            let mut event = json!({ "type": "plug_corrected", "miner": name, "wanted": on_off(wanted), "was": was.map(on_off), "reason": reason });
            if let Err(e) = &result {
                event["error"] = e.clone().into();
            }
            tracing::info!(miner = %name, %reason, "plug corrected");
            let _ = self.out.send(Output::Event(event)).await;
            self.report(e).await;
        }
    }
}

fn check_ha(status: reqwest::StatusCode, entity_id: &str) -> Result<(), String> {
    match status.as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(format!("Home Assistant refused the token ({status}): make a new long-lived access token and put it in ha.token")),
        404 => Err(format!("Home Assistant has no entity {entity_id} ({status}): check power.ha.entity_id")),
        _ => Err(format!("Home Assistant answered {status} for {entity_id}")),
    }
}

/// Starts the plug task. It reports every plug's state once at start (what it should be, from
/// the store; what HA says, for HA plugs), then on every change.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    plugs: Vec<PlugSpec>,
    ha: Option<HaApi>,
    mqtt: Mqtt,
    http: reqwest::Client,
    store: Store,
    keepalive: Duration,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> (Handle, mpsc::Receiver<Output>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let (out, out_rx) = mpsc::channel::<Output>(1024);
    let entries = plugs
        .into_iter()
        .map(|spec| Entry {
            wanted: store.setting(&setting_key(&spec.name)),
            actual: None,
            spec,
        })
        .collect();
    let mut plugs = Plugs {
        entries,
        ha,
        mqtt,
        http,
        store,
        out,
    };
    if !plugs.entries.is_empty() {
        tracker.spawn(async move {
            for e in 0..plugs.entries.len() {
                if let Some(Ok(on)) = plugs.read_ha(e).await {
                    plugs.entries[e].actual = Some(on);
                }
                plugs.report(e).await;
            }
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    input = rx.recv() => match input {
                        Some(Input::Set { index, on, origin }) => plugs.set(index, on, origin).await,
                        Some(Input::Observed { index, payload }) => plugs.observed(index, &payload).await,
                        None => break,
                    },
                    _ = tick.tick() => plugs.keepalive().await,
                }
            }
        });
    }
    (Handle { tx }, out_rx)
}
