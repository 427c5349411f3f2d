//! The hub's side of the benchmark controller: `set/benchmark` (START / STOP) and `set/profile`
//! (efficiency / hashrate / balanced, from the last sweep), handing the miner to a sweep (its
//! arbiter refuses the user and the strategy meanwhile, it is read every `sample_every`), what
//! the sweep asks for, and putting the miner back on known-good settings whenever a sweep ends —
//! finished, stopped, failed, a limit, the watchdog, shutdown — or, after a kill, at the next
//! start.

use super::Hub;
use crate::config::MinerKind;
use crate::control::Origin;
use crate::miner::{asic, ClockConfig, Command};
use crate::tuning::sweep::{Bounds, Sample};
use crate::tuning::task::{Input, Output};
use serde_json::{json, Value};

/// The eco (most efficient) and turbo (fastest) clocks a sweep's summary found.
pub(super) fn learned(summary: &Value) -> (Option<ClockConfig>, Option<ClockConfig>) {
    let clock = |key: &str| {
        let r = &summary[key];
        Some(ClockConfig {
            frequency_mhz: r["frequency"].as_u64()? as u32,
            core_voltage_mv: r["core_voltage"].as_u64()? as u32,
        })
    };
    (clock("best_efficiency"), clock("best_hashrate"))
}

impl Hub {
    /// `set/benchmark`: START or STOP.
    pub(super) fn benchmark_command(&mut self, i: usize, name: &str, text: &str, origin: Origin) {
        let value = text.to_string();
        let running = self.slots[i].arbiter.benchmarking();
        if text.eq_ignore_ascii_case("stop") {
            if running {
                self.tuning.send(Input::Stop {
                    index: i,
                    why: format!("stopped ({})", origin.as_str()),
                });
            } else {
                self.refuse_from(
                    i,
                    name,
                    "benchmark",
                    &value,
                    "no benchmark is running",
                    origin,
                );
            }
            return;
        }
        if !(text.eq_ignore_ascii_case("start") || text.eq_ignore_ascii_case("press")) {
            let reason = format!("benchmark takes START or STOP, got {text:?}");
            self.refuse_from(i, name, "benchmark", &value, &reason, origin);
            return;
        }
        match self.sweep_bounds(i) {
            Err(reason) => self.refuse_from(i, name, "benchmark", &value, &reason, origin),
            Ok((bounds, previous)) => {
                let slot = &mut self.slots[i];
                if let Some(hwid) = &slot.hardware_id {
                    if let Err(e) = self.store.begin_sweep(hwid, previous) {
                        let reason = format!("cannot keep the settings to restore ({e}), so the benchmark does not start");
                        self.refuse_from(i, name, "benchmark", &value, &reason, origin);
                        return;
                    }
                }
                slot.arbiter.set_benchmark(true);
                slot.handle
                    .set_fast_poll(Some(self.config.benchmark.sample_every));
                tracing::info!(miner = %name, ?previous, "benchmark starting");
                self.tuning.send(Input::Start {
                    index: i,
                    name: name.to_string(),
                    bounds,
                    previous,
                });
                self.publish_state(i);
            }
        }
    }

    /// What a sweep of miner `i` may do, and the clock to put back; or why it cannot be swept.
    fn sweep_bounds(&self, i: usize) -> Result<(Bounds, ClockConfig), String> {
        let slot = &self.slots[i];
        let name = &slot.config.name;
        if slot.arbiter.benchmarking() {
            return Err(format!("a benchmark is already running on {name}"));
        }
        if slot.config.kind != MinerKind::Axeos {
            return Err(format!("{name} is not an ESP-Miner device: benchmark sweeps tune frequency and core voltage, which only ESP-Miner (Bitaxe, NerdQaxe) lets miner2mqtt set"));
        }
        if slot.arbiter.safety_held() {
            return Err(format!(
                "{name} is in the watchdog's safety hold; start the benchmark once it has cooled"
            ));
        }
        let (Some(reading), Some(limits)) = (&slot.reading, &slot.limits) else {
            return Err(format!("{name} has not been read yet"));
        };
        if slot.online != Some(true) {
            return Err(format!("{name} is offline"));
        }
        let (Some(frequency), Some(core_voltage)) =
            (limits.frequency_mhz.clone(), limits.core_voltage_mv.clone())
        else {
            return Err(format!(
                "{name}'s frequency and core voltage cannot be set (its ASIC model is unknown)"
            ));
        };
        let previous = reading
            .telemetry
            .clock()
            .ok_or_else(|| format!("{name} does not report its frequency and core voltage"))?;
        let profile = reading
            .identity
            .asic_model
            .as_deref()
            .and_then(asic::profile)
            .ok_or_else(|| format!("{name}'s ASIC model is unknown"))?;
        let chips = reading.identity.asic_count.max(1);
        let thermal = self.config.safety.thermal(slot.config.kind);
        let bounds = Bounds {
            frequency,
            core_voltage,
            gh_per_mhz: profile.small_cores as f64 * chips as f64 / 1000.0,
            temp_limit: thermal.temp_limit,
            vr_temp_limit: thermal.vr_temp_limit,
            max_power: self
                .config
                .benchmark
                .max_power
                .unwrap_or(25.0 * chips as f64 + 5.0),
        };
        Ok((bounds, previous))
    }

    /// `set/profile`: the last sweep's best efficiency, best hashrate or balanced clock.
    pub(super) fn profile_of(&self, i: usize, text: &str) -> Result<Command, String> {
        let slot = &self.slots[i];
        let key = match text.to_ascii_lowercase().as_str() {
            "efficiency" => "best_efficiency",
            "hashrate" => "best_hashrate",
            "balanced" => "balanced",
            _ => {
                return Err(format!(
                    "profile takes efficiency, hashrate or balanced, got {text:?}"
                ))
            }
        };
        let summary = slot
            .hardware_id
            .as_deref()
            .and_then(|h| self.store.sweep_result(h))
            .ok_or_else(|| {
                format!(
                    "{} has no benchmark results yet: run its benchmark first",
                    slot.config.name
                )
            })?;
        let r = &summary[key];
        match (r["frequency"].as_u64(), r["core_voltage"].as_u64()) {
            (Some(f), Some(v)) => Ok(Command::SetClock(ClockConfig {
                frequency_mhz: f as u32,
                core_voltage_mv: v as u32,
            })),
            _ => Err(format!(
                "{}'s last benchmark found no passing {text} setting",
                slot.config.name
            )),
        }
    }

    /// Hands a benchmarking miner's reading to its sweep.
    pub(super) fn tuning_reading(&mut self, i: usize) {
        let slot = &self.slots[i];
        if !slot.arbiter.benchmarking() {
            return;
        }
        let Some(t) = slot.reading.as_ref().map(|r| &r.telemetry) else {
            return;
        };
        let sample = Sample {
            clock: t.clock(),
            hashrate: t.hashrate,
            power: t.power,
            asic_temp: t.asic_temp,
            vr_temp: t.vr_temp,
            input_voltage: t.input_voltage,
        };
        self.tuning.send(Input::Reading { index: i, sample });
    }

    /// A sweep is stopped from outside (the watchdog stepped in, the plug goes off).
    pub(super) fn tuning_stop(&mut self, i: usize, why: &str) {
        if self.slots[i].arbiter.benchmarking() {
            self.tuning.send(Input::Stop {
                index: i,
                why: why.to_string(),
            });
        }
    }

    /// A benchmarking miner went offline: its step ends at a limit.
    pub(super) fn tuning_offline(&mut self, i: usize) {
        if self.slots[i].arbiter.benchmarking() {
            self.tuning.send(Input::Offline { index: i });
        }
    }

    /// A miner read for the first time since start whose sweep never ended (the daemon was
    /// killed under it) gets its settings from before the sweep back.
    pub(super) fn roll_back_sweep(&mut self, i: usize) {
        let slot = &self.slots[i];
        if slot.arbiter.benchmarking() {
            return;
        }
        let Some(hwid) = slot.hardware_id.clone() else {
            return;
        };
        let Some(previous) = self.store.sweep_under_way(&hwid) else {
            return;
        };
        let name = slot.config.name.clone();
        tracing::warn!(miner = %name, ?previous, "a benchmark did not end before miner2mqtt stopped; putting the settings from before it back");
        let restored = json!({ "frequency": previous.frequency_mhz, "core_voltage": previous.core_voltage_mv });
        self.event(json!({ "type": "benchmark_rolled_back", "miner": name, "restored": restored }));
        self.publish_benchmark(
            i,
            json!({ "status": "interrupted", "progress": 0, "reason": "miner2mqtt stopped under it; the settings from before it were put back", "restored": restored }),
        );
        self.restore_after_sweep(i, previous);
    }

    /// Puts `previous` back on miner `i` after its sweep; the record of the sweep under way is
    /// dropped once that is done (or cannot be: then the watchdog or the plug has the miner).
    fn restore_after_sweep(&mut self, i: usize, previous: ClockConfig) {
        let name = self.slots[i].config.name.clone();
        let sent = self.send(
            i,
            &name,
            "benchmark",
            "restore",
            Command::SetClock(previous),
            Origin::Benchmark,
        );
        if sent {
            self.restoring.insert(i);
        } else {
            self.sweep_restored(i);
        }
    }

    /// The settings from before the sweep are back (or could not be put back and never will).
    pub(super) fn sweep_restored(&mut self, i: usize) {
        self.restoring.remove(&i);
        if let Some(hwid) = self.slots[i].hardware_id.clone() {
            if let Err(e) = self.store.end_sweep(&hwid) {
                tracing::error!(error = %e, "cannot drop the record of a finished benchmark");
            }
        }
    }

    /// Whether a benchmark restore is on its way to miner `i`.
    pub(super) fn restoring(&self, i: usize) -> bool {
        self.restoring.contains(&i)
    }

    /// Stops every sweep (the daemon is stopping); returns how many restores are on their way.
    pub(super) fn stop_sweeps(&mut self) -> usize {
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].arbiter.benchmarking())
            .collect();
        for i in running {
            self.slots[i].arbiter.set_benchmark(false);
            self.slots[i].handle.set_fast_poll(None);
            if let Some(previous) = self.slots[i]
                .hardware_id
                .as_deref()
                .and_then(|h| self.store.sweep_under_way(h))
            {
                self.restore_after_sweep(i, previous);
            }
        }
        self.restoring.len()
    }

    /// What the benchmark controller asks for.
    pub(super) fn on_tuning(&mut self, out: Output) {
        match out {
            Output::Apply { index, clock } => {
                let name = self.slots[index].config.name.clone();
                let sent = self.send(
                    index,
                    &name,
                    "benchmark",
                    &format!("{} MHz / {} mV", clock.frequency_mhz, clock.core_voltage_mv),
                    Command::SetClock(clock),
                    Origin::Benchmark,
                );
                if !sent {
                    self.tuning.send(Input::Stop {
                        index,
                        why: format!(
                            "{} MHz / {} mV could not be sent",
                            clock.frequency_mhz, clock.core_voltage_mv
                        ),
                    });
                }
            }
            Output::Progress { index, state } => self.publish_benchmark(index, state),
            Output::Event(e) => {
                tracing::info!(event = %e, "benchmark");
                self.event(e);
            }
            Output::Finished {
                index,
                restore,
                summary,
            } => {
                let slot = &mut self.slots[index];
                slot.arbiter.set_benchmark(false);
                slot.handle.set_fast_poll(None);
                let value = serde_json::to_value(&*summary).unwrap_or(Value::Null);
                if let Some(hwid) = slot.hardware_id.clone() {
                    if let Err(e) = self.store.save_sweep_result(&hwid, &value) {
                        tracing::error!(error = %e, "cannot keep the benchmark's results");
                    }
                }
                // Its eco and turbo modes are its own now.
                slot.learned = learned(&value);
                if let Some(l) = &mut slot.limits {
                    l.learn(slot.learned.0, slot.learned.1);
                }
                // The mode select may offer a mode it did not (a preset outside the limits).
                self.publish_discovery(index, false);
                self.energy_info(index);
                self.watch_info(index);
                self.restore_after_sweep(index, restore);
                self.publish_state(index);
            }
        }
    }

    /// The miner's benchmark state (retained): its progress sensor and that sensor's attributes.
    fn publish_benchmark(&mut self, i: usize, state: Value) {
        let topic = self.topics.benchmark(&self.slots[i].config.name);
        self.mqtt.publish(topic, state.to_string(), true);
    }
}
