//! The benchmark controller: a task of its own beside the hub that runs one sweep per miner
//! asked to, on that miner's readings, and tells the hub which clock to put on (origin
//! `benchmark`), the progress to show, and, when a sweep ends however it ends, what to put
//! back. It never publishes to MQTT itself.

use super::sweep::{Act, Bounds, Sample, StepResult, Summary, Sweep, SweepConfig, Tested};
use crate::control::Inbox;
use crate::safety::ModeTarget;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the hub tells the controller.
#[derive(Debug)]
pub enum Input {
    /// Start a sweep (the hub has checked the miner can be swept and owns it now).
    Start {
        index: usize,
        name: String,
        bounds: Bounds,
        previous: ModeTarget,
    },
    /// Stop it (a button, the watchdog stepping in, switching off, shutdown).
    Stop {
        index: usize,
        why: String,
    },
    Reading {
        index: usize,
        sample: Sample,
    },
    Offline {
        index: usize,
    },
}

/// What the controller asks of the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Put this clock or work mode on the miner (origin `benchmark`).
    Apply {
        index: usize,
        target: ModeTarget,
        /// As events say it: "525 MHz / 1150 mV", "work mode high".
        label: String,
    },
    /// The miner's benchmark state for its progress sensor (retained).
    Progress {
        index: usize,
        state: Value,
    },
    Event(Value),
    /// The sweep is over: put `restore` back and release the miner.
    Finished {
        index: usize,
        restore: ModeTarget,
        summary: Box<Summary>,
    },
}

/// The sending side, for the hub.
#[derive(Clone)]
pub struct Handle {
    inbox: Inbox<Input>,
}

impl Handle {
    /// Hands something to the controller; a reading may be dropped when it is busy.
    pub fn send(&self, input: Input) {
        match input {
            Input::Reading { .. } => self.inbox.offer(input),
            other => self.inbox.deliver(other),
        }
    }
}

struct Running {
    name: String,
    /// The most shown so far: a fail steps the frequency back, which would show less done.
    shown: u8,
    sweep: Sweep,
    previous: ModeTarget,
    started: Instant,
}

struct Controller {
    running: HashMap<usize, Running>,
    config: SweepConfig,
    out: mpsc::Sender<Output>,
}

/// A setting as JSON: `frequency` and `core_voltage`, or the work `mode` and its `level`.
fn setting_json(t: &Tested) -> Value {
    serde_json::to_value(t).unwrap_or_default()
}

/// A best point of a summary: its setting, hashrate and efficiency.
fn best_json(r: &Option<StepResult>) -> Value {
    r.as_ref().map_or(Value::Null, |r| {
        let mut v = setting_json(&r.setting);
        v["hashrate"] = ((r.hashrate * 10.0).round() / 10.0).into();
        v["j_per_th"] = ((r.j_per_th * 100.0).round() / 100.0).into();
        v
    })
}

impl Controller {
    async fn emit(&self, o: Output) {
        let _ = self.out.send(o).await;
    }

    async fn progress(&mut self, index: usize) {
        let Some(r) = self.running.get_mut(&index) else {
            return;
        };
        r.shown = r.shown.max(r.sweep.percent());
        let r = &self.running[&index];
        let (_, left) = r.sweep.remaining();
        let mut state = setting_json(&r.sweep.tested());
        state["status"] = "running".into();
        state["progress"] = r.shown.into();
        state["step"] = (r.sweep.results().len() + 1).into();
        state["time_left"] =
            humantime::format_duration(std::time::Duration::from_secs(left.as_secs()))
                .to_string()
                .into();
        state["elapsed_s"] = r.started.elapsed().as_secs().into();
        self.emit(Output::Progress { index, state }).await;
    }

    async fn acts(&mut self, index: usize, acts: Vec<Act>) {
        for act in acts {
            match act {
                Act::Apply(target) => {
                    let label = self
                        .running
                        .get(&index)
                        .map(|r| r.sweep.describe(target).label())
                        .unwrap_or_default();
                    self.emit(Output::Apply {
                        index,
                        target,
                        label,
                    })
                    .await;
                    self.progress(index).await;
                }
                Act::Step(step) => {
                    let name = self.running.get(&index).map(|r| r.name.clone());
                    let mut e = serde_json::to_value(&*step).unwrap_or_default();
                    e["type"] = "benchmark_step".into();
                    e["miner"] = name.into();
                    self.emit(Output::Event(e)).await;
                }
                Act::Finished(summary) => {
                    let Some(r) = self.running.remove(&index) else {
                        continue;
                    };
                    let restored = setting_json(&r.sweep.describe(r.previous));
                    self.emit(Output::Event(
                        json!({ "type": "benchmark_finished", "miner": r.name,
                        "reason": summary.stopped, "steps": summary.results.len(),
                        "best_efficiency": best_json(&summary.best_efficiency),
                        "best_hashrate": best_json(&summary.best_hashrate),
                        "balanced": best_json(&summary.balanced),
                        "restored": restored }),
                    ))
                    .await;
                    self.emit(Output::Progress {
                        index,
                        state: json!({ "status": "finished", "progress": 100, "reason": summary.stopped,
                            "best_efficiency": best_json(&summary.best_efficiency),
                            "best_hashrate": best_json(&summary.best_hashrate),
                            "balanced": best_json(&summary.balanced) }),
                    })
                    .await;
                    self.emit(Output::Finished {
                        index,
                        restore: r.previous,
                        summary,
                    })
                    .await;
                }
            }
        }
    }

    async fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Start {
                index,
                name,
                bounds,
                previous,
            } => {
                if self.running.contains_key(&index) {
                    return;
                }
                let Some((sweep, first)) = Sweep::start(self.config.clone(), bounds, now) else {
                    // Nothing to walk (the hub checks first): hand the miner straight back.
                    self.emit(Output::Finished {
                        index,
                        restore: previous,
                        summary: Box::new(super::sweep::summarise(
                            &[],
                            "nothing to test on this miner".into(),
                        )),
                    })
                    .await;
                    return;
                };
                self.emit(Output::Event(
                    json!({ "type": "benchmark_started", "miner": name,
                    "from": setting_json(&sweep.tested()), "previous": setting_json(&sweep.describe(previous)) }),
                ))
                .await;
                self.running.insert(
                    index,
                    Running {
                        name,
                        shown: 0,
                        sweep,
                        previous,
                        started: std::time::Instant::now(),
                    },
                );
                self.acts(index, vec![first]).await;
            }
            Input::Stop { index, why } => {
                let acts = match self.running.get_mut(&index) {
                    Some(r) => r.sweep.stop(why),
                    None => return,
                };
                self.acts(index, acts).await;
            }
            Input::Reading { index, sample } => {
                let Some(r) = self.running.get_mut(&index) else {
                    return;
                };
                let steps = r.sweep.results().len();
                let acts = r.sweep.on_sample(&sample, now);
                let stepped = r.sweep.results().len() != steps;
                self.acts(index, acts).await;
                if stepped {
                    self.progress(index).await;
                }
            }
            Input::Offline { index } => {
                let acts = match self.running.get_mut(&index) {
                    Some(r) => r.sweep.on_offline(now),
                    None => return,
                };
                self.acts(index, acts).await;
            }
        }
    }
}

/// Starts the controller. Returns its handle and the hub's receiving end.
pub fn spawn(
    config: SweepConfig,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> (Handle, mpsc::Receiver<Output>) {
    let (tx, mut rx) = mpsc::channel::<Input>(4096);
    let (out, out_rx) = mpsc::channel::<Output>(4096);
    let mut c = Controller {
        running: HashMap::new(),
        config,
        out,
    };
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(input) = rx.recv() => c.on_input(input).await,
            }
        }
    });
    (
        Handle {
            inbox: Inbox::new(tx),
        },
        out_rx,
    )
}
