//! The safety controller: a task of its own beside the hub that runs the watchdog and the alert
//! rules on every reading, keeps each action and alert in the store, and tells the hub what to
//! send (commands with origin `safety`), whom to hold, and what to publish. It never publishes
//! to MQTT itself.

use super::alerts::{AlertRules, Fired, Kind};
use super::watchdog::{Act, Controls, Watchdog};
use super::Reading;
use crate::config::{Alerts as AlertConfig, Safety};
use crate::energy::task::Clock;
use crate::store::Store;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the hub tells the controller.
#[derive(Debug)]
pub enum Input {
    /// What a miner can be told, on its first reading and whenever its limits change.
    Info { index: usize, controls: Controls },
    /// It was in a safety hold when the daemon last stopped.
    ResumeHold { index: usize },
    /// A reading.
    Reading { index: usize, reading: Reading },
    /// The miner went offline (not when off on purpose).
    Offline { index: usize, error: String },
    /// It answers again.
    Online { index: usize },
    /// Switched off at its plug on purpose: nothing to watch until it is back.
    Off { index: usize },
}

/// What the controller asks of the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A command with origin `safety`.
    Command {
        index: usize,
        property: &'static str,
        value: String,
    },
    /// The miner's safety hold starts (with the reason refusals give) or ends.
    Hold {
        index: usize,
        reason: Option<String>,
    },
    /// An event for `bridge/event` (watchdog actions, holds).
    Event(Value),
    /// An alert fired (for `bridge/event` and the miner's event entity).
    Alert {
        index: usize,
        kind: Kind,
        message: String,
    },
    /// The conditions holding for a miner changed (its Problem sensor).
    Problems { index: usize, kinds: Vec<Kind> },
}

/// The sending side, for the hub.
#[derive(Clone)]
pub struct Handle {
    inbox: crate::control::Inbox<Input>,
}

impl Handle {
    /// Hands something to the controller; when it is busy a reading may be dropped (the next
    /// one carries the same news), nothing else.
    pub fn send(&self, input: Input) {
        match input {
            Input::Reading { .. } => self.inbox.offer(input),
            other => self.inbox.deliver(other),
        }
    }
}

struct Controller {
    watchdog: Watchdog,
    alerts: AlertRules,
    controls: HashMap<usize, Controls>,
    store: Store,
    /// The clock decisions are kept by (the strategy's, so one request reads both).
    clock: Arc<dyn Clock>,
    out: mpsc::Sender<Output>,
}

impl Controller {
    async fn emit(&self, o: Output) {
        let _ = self.out.send(o).await;
    }

    fn name(&self, index: usize) -> String {
        self.controls
            .get(&index)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("miner {index}"))
    }

    /// Keeps an event in the store, for the record (`bridge/request/decisions`).
    fn record(&self, event: &Value) {
        if let Err(e) = self
            .store
            .record_decision(self.clock.now().timestamp_millis(), event)
        {
            tracing::error!(error = %e, "cannot keep a watchdog decision in the store");
        }
    }

    /// Hands the watchdog's acts to the hub; each action is also a `watchdog` alert.
    async fn acts(&mut self, index: usize, acts: Vec<Act>, now: Instant) {
        for act in acts {
            match act {
                Act::Command { property, value } => {
                    self.emit(Output::Command {
                        index,
                        property,
                        value,
                    })
                    .await
                }
                Act::Hold(reason) => self.emit(Output::Hold { index, reason }).await,
                Act::Event(e) => {
                    self.record(&e);
                    let alerting = matches!(
                        e["type"].as_str(),
                        Some("watchdog_action" | "watchdog_gave_up")
                    );
                    let fired = alerting
                        .then(|| {
                            let message = format!(
                                "{}: {}{}",
                                e["miner"].as_str().unwrap_or_default(),
                                e["action"]
                                    .as_str()
                                    .map(|a| format!("{} — ", a.replace('_', " ")))
                                    .unwrap_or_else(|| "gave up — ".into()),
                                e["reason"].as_str().unwrap_or_default()
                            );
                            self.alerts.occurred(index, Kind::Watchdog, message, now)
                        })
                        .flatten();
                    self.emit(Output::Event(e)).await;
                    if let Some(f) = fired {
                        self.alert(index, f).await;
                    }
                }
            }
        }
        self.watchdog_condition(index).await;
    }

    /// The `watchdog` problem holds while the miner is in a safety hold or given up on. Only
    /// the condition: its alerts are the actions themselves, and a hold that lasts must not
    /// use up their cooldown.
    async fn watchdog_condition(&mut self, index: usize) {
        let holds = self.watchdog.holding(index) || self.watchdog.gave_up(index);
        if self.alerts.hold(index, Kind::Watchdog, holds) {
            self.problems(index).await;
        }
    }

    async fn alert(&self, index: usize, f: Fired) {
        self.record(
            &json!({ "type": "alert", "kind": f.kind.as_str(), "miner": self.name(index),
            "message": f.message }),
        );
        self.emit(Output::Alert {
            index,
            kind: f.kind,
            message: f.message,
        })
        .await;
    }

    async fn problems(&self, index: usize) {
        self.emit(Output::Problems {
            index,
            kinds: self.alerts.active(index),
        })
        .await;
    }

    async fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Info { index, controls } => {
                self.controls.insert(index, controls);
            }
            Input::ResumeHold { index } => {
                self.watchdog.resume_hold(index);
                self.watchdog_condition(index).await;
            }
            Input::Reading { index, reading } => {
                // Borrowed, not cloned: this runs on every reading of every miner.
                let Controller {
                    watchdog,
                    alerts,
                    controls,
                    ..
                } = self;
                let Some(c) = controls.get(&index) else {
                    return;
                };
                let acts = watchdog.on_reading(index, c, &reading, now);
                let (changed, fired) = alerts.on_reading(index, &c.name, &c.thermal, &reading, now);
                self.acts(index, acts, now).await;
                for f in fired {
                    self.alert(index, f).await;
                }
                if changed {
                    self.problems(index).await;
                }
            }
            Input::Offline { index, error } => {
                let name = self.name(index);
                let (changed, fired) = self.alerts.set(
                    index,
                    Kind::Offline,
                    true,
                    || format!("{name} is offline: {error}"),
                    now,
                );
                if let Some(f) = fired {
                    self.alert(index, f).await;
                }
                if changed {
                    self.problems(index).await;
                }
            }
            Input::Online { index } => {
                let (changed, _) = self
                    .alerts
                    .set(index, Kind::Offline, false, String::new, now);
                if changed {
                    self.problems(index).await;
                }
            }
            Input::Off { index } => {
                self.watchdog.reset_counts(index);
                if self.alerts.clear(index) {
                    self.problems(index).await;
                }
            }
        }
    }
}

/// Starts the controller. Returns its handle and the hub's receiving end.
pub fn spawn(
    safety: Safety,
    alerts: AlertConfig,
    poll_interval: Duration,
    store: Store,
    clock: Arc<dyn Clock>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> (Handle, mpsc::Receiver<Output>) {
    let (tx, mut rx) = mpsc::channel::<Input>(8192);
    let (out, out_rx) = mpsc::channel::<Output>(8192);
    let mut c = Controller {
        watchdog: Watchdog::new(safety.clone(), poll_interval),
        alerts: AlertRules::new(alerts, safety),
        controls: HashMap::new(),
        store,
        clock,
        out,
    };
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(input) = rx.recv() => c.on_input(input).await,
                _ = tick.tick() => {
                    let now = Instant::now();
                    let Controller { watchdog, controls, .. } = &mut c;
                    let acts = watchdog.on_tick(now, |i| {
                        controls.get(&i).map(|k| k.name.clone()).unwrap_or_default()
                    });
                    for (index, act) in acts {
                        c.acts(index, vec![act], now).await;
                    }
                }
            }
        }
    });
    (
        Handle {
            inbox: crate::control::Inbox::new(tx),
        },
        out_rx,
    )
}
