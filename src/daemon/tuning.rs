//! The hub's side of the benchmark controller: `set/benchmark` (START / STOP) and `set/profile`
//! (efficiency / hashrate / balanced, from the last sweep), handing the miner to a sweep (its
//! arbiter refuses the user and the strategy meanwhile, it is read every `sample_every`), what
//! the sweep asks for, and putting the miner back on known-good settings whenever a sweep ends —
//! finished, stopped, failed, a limit, the watchdog, shutdown — or, after a kill, at the next
//! start. ESP-Miner miners walk their clocks; Avalons compare their own work modes. A restore the
//! miner refuses for now (an Avalon calibrating) or that cannot be sent (the miner offline) is
//! tried again until it lands: the record of the sweep stays until then.

use super::Hub;
use crate::config::MinerKind;
use crate::control::Origin;
use crate::miner::{asic, ClockConfig, Command};
use crate::safety::ModeTarget;
use crate::tuning::sweep::{Bounds, Sample, Walk};
use crate::tuning::task::{Input, Output};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long after a refused restore it is tried again.
const RESTORE_RETRY: Duration = Duration::from_secs(10);

/// The setting a summary's point (or any result) names: a clock, or a work mode by code.
fn target_of(r: &Value) -> Option<ModeTarget> {
    match (
        r["frequency"].as_u64(),
        r["core_voltage"].as_u64(),
        r["level"].as_u64(),
    ) {
        (Some(f), Some(v), _) => Some(ModeTarget::Clock(ClockConfig {
            frequency_mhz: u32::try_from(f).ok()?,
            core_voltage_mv: u32::try_from(v).ok()?,
        })),
        (_, _, Some(l)) => Some(ModeTarget::Level(u8::try_from(l).ok()?)),
        _ => None,
    }
}

/// The eco (most efficient) and turbo (fastest) settings a sweep's summary found.
pub(super) fn learned(summary: &Value) -> (Option<ModeTarget>, Option<ModeTarget>) {
    (
        target_of(&summary["best_efficiency"]),
        target_of(&summary["best_hashrate"]),
    )
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

    /// What a sweep of miner `i` may do, and the setting to put back; or why it cannot be
    /// swept.
    fn sweep_bounds(&self, i: usize) -> Result<(Bounds, ModeTarget), String> {
        let slot = &self.slots[i];
        let name = &slot.config.name;
        if slot.arbiter.benchmarking() {
            return Err(format!("a benchmark is already running on {name}"));
        }
        let (Some(reading), Some(limits)) = (&slot.reading, &slot.limits) else {
            return Err(format!("{name} has not been read yet"));
        };
        let work_modes: Vec<String> = limits
            .modes
            .iter()
            .filter(|(_, t)| matches!(t, ModeTarget::Level(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let clocks = slot.config.kind == MinerKind::Axeos;
        if !clocks && work_modes.is_empty() {
            return Err(format!("{name} has neither clocks nor work modes miner2mqtt can set: benchmarks tune ESP-Miner's frequency and core voltage (Bitaxe, NerdQaxe) or compare an Avalon's work modes"));
        }
        if slot.arbiter.safety_held() {
            return Err(format!(
                "{name} is in the watchdog's safety hold; start the benchmark once it has cooled"
            ));
        }
        if slot.online != Some(true) {
            return Err(format!("{name} is offline"));
        }
        let thermal = self.config.safety.thermal(slot.config.kind);
        let t = &reading.telemetry;
        if !clocks {
            let previous = t
                .work_mode
                .as_deref()
                .and_then(|m| limits.level_of(m))
                .ok_or_else(|| format!("{name} does not report which work mode it is in"))?;
            let bounds = Bounds {
                walk: Walk::Modes(work_modes),
                temp_limit: thermal.temp_limit,
                vr_temp_limit: thermal.vr_temp_limit,
                // The firmware's modes are the maker's own; only a configured limit applies.
                max_power: self.config.benchmark.max_power.unwrap_or(f64::INFINITY),
            };
            return Ok((bounds, ModeTarget::Level(previous)));
        }
        let (Some(frequency), Some(core_voltage)) =
            (limits.frequency_mhz.clone(), limits.core_voltage_mv.clone())
        else {
            return Err(format!(
                "{name}'s frequency and core voltage cannot be set (its ASIC model is unknown)"
            ));
        };
        let previous = t
            .clock()
            .ok_or_else(|| format!("{name} does not report its frequency and core voltage"))?;
        let profile = reading
            .identity
            .asic_model
            .as_deref()
            .and_then(asic::profile)
            .ok_or_else(|| format!("{name}'s ASIC model is unknown"))?;
        let chips = reading.identity.asic_count.max(1);
        let bounds = Bounds {
            walk: Walk::Clocks {
                frequency,
                core_voltage,
                gh_per_mhz: profile.small_cores as f64 * chips as f64 / 1000.0,
            },
            temp_limit: thermal.temp_limit,
            vr_temp_limit: thermal.vr_temp_limit,
            max_power: self
                .config
                .benchmark
                .max_power
                .unwrap_or(25.0 * chips as f64 + 5.0),
        };
        Ok((bounds, ModeTarget::Clock(previous)))
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
        target_of(&summary[key])
            .map(ModeTarget::command)
            .ok_or_else(|| {
                format!(
                    "{}'s last benchmark found no passing {text} setting",
                    slot.config.name
                )
            })
    }

    /// Hands a benchmarking miner's reading to its sweep.
    pub(super) fn tuning_reading(&mut self, i: usize) {
        let slot = &self.slots[i];
        if !slot.arbiter.benchmarking() {
            self.retry_restore(i);
            return;
        }
        let Some(t) = slot.reading.as_ref().map(|r| &r.telemetry) else {
            return;
        };
        let level = t
            .work_mode
            .as_deref()
            .and_then(|m| slot.limits.as_ref()?.level_of(m));
        let sample = Sample {
            clock: t.clock(),
            level,
            hashrate: t.hashrate,
            expected_hashrate: t.expected_hashrate,
            error_percent: t.error_percent,
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
    /// killed under it) gets its settings from before the sweep back; so does one whose restore
    /// could not be sent while it was offline.
    pub(super) fn roll_back_sweep(&mut self, i: usize) {
        let slot = &self.slots[i];
        if slot.arbiter.benchmarking() || self.restoring.contains(&i) {
            return;
        }
        if let Some(at) = self.restore_retry.get_mut(&i) {
            // Back online: the restore that could not be sent goes now.
            *at = Instant::now();
            self.retry_restore(i);
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
        let restored = self.setting_json(i, previous);
        self.event(json!({ "type": "benchmark_rolled_back", "miner": name, "restored": restored }));
        self.publish_benchmark(
            i,
            json!({ "status": "interrupted", "progress": 0, "reason": "miner2mqtt stopped under it; the settings from before it were put back", "restored": restored }),
        );
        self.restore_after_sweep(i, previous);
    }

    /// A setting of miner `i` as events show it: the clock, or the work mode by name.
    fn setting_json(&self, i: usize, t: ModeTarget) -> Value {
        match t {
            ModeTarget::Clock(c) => {
                json!({ "frequency": c.frequency_mhz, "core_voltage": c.core_voltage_mv })
            }
            ModeTarget::Level(l) => {
                let name = self.slots[i]
                    .limits
                    .as_ref()
                    .and_then(|lim| lim.level_name(l));
                json!({ "mode": name, "level": l })
            }
        }
    }

    /// Sends the settings from before a sweep again when a retry is due (the miner refused the
    /// restore for now, or was offline).
    fn retry_restore(&mut self, i: usize) {
        let due = self
            .restore_retry
            .get(&i)
            .is_some_and(|at| Instant::now() >= *at);
        if !due || self.restoring.contains(&i) || self.slots[i].online != Some(true) {
            return;
        }
        self.restore_retry.remove(&i);
        let previous = self.slots[i]
            .hardware_id
            .as_deref()
            .and_then(|h| self.store.sweep_under_way(h));
        if let Some(previous) = previous {
            tracing::info!(miner = %self.slots[i].config.name, ?previous, "putting the settings from before the benchmark back (again)");
            self.restore_after_sweep(i, previous);
        }
    }

    /// Puts `previous` back on miner `i` after its sweep; the record of the sweep under way is
    /// dropped once that is done, or when it cannot be and never will (the watchdog or the plug
    /// has the miner). Offline, it is tried again when the miner is back.
    fn restore_after_sweep(&mut self, i: usize, previous: ModeTarget) {
        let name = self.slots[i].config.name.clone();
        let what = match self.setting_json(i, previous) {
            v if v["mode"].is_string() => {
                format!("restore work mode {}", v["mode"].as_str().unwrap_or("?"))
            }
            _ => "restore".to_string(),
        };
        let sent = self.send(
            i,
            &name,
            "benchmark",
            &what,
            previous.command(),
            Origin::Benchmark,
        );
        if sent {
            self.restoring.insert(i);
        } else if self.slots[i].online != Some(true) {
            self.restore_retry.insert(i, Instant::now());
        } else {
            self.sweep_restored(i);
        }
    }

    /// A restore the miner answered: done, or refused for now and tried again in a while.
    pub(super) fn restore_done(&mut self, i: usize, result: &Result<(), String>) {
        match result {
            Ok(()) => self.sweep_restored(i),
            Err(reason) => {
                self.restoring.remove(&i);
                tracing::warn!(miner = %self.slots[i].config.name, %reason, "the miner did not take its settings from before the benchmark; trying again in {}", humantime::format_duration(RESTORE_RETRY));
                self.restore_retry.insert(i, Instant::now() + RESTORE_RETRY);
            }
        }
    }

    /// The settings from before the sweep are back (or could not be put back and never will).
    pub(super) fn sweep_restored(&mut self, i: usize) {
        self.restoring.remove(&i);
        self.restore_retry.remove(&i);
        if let Some(hwid) = self.slots[i].hardware_id.clone() {
            if let Err(e) = self.store.end_sweep(&hwid) {
                tracing::error!(error = %e, "cannot drop the record of a finished benchmark");
            }
        }
    }

    /// A command of origin `benchmark` was answered: a restore done (or refused for now), or a
    /// setting under test the miner did not take, which ends the sweep.
    pub(super) fn benchmark_command_done(
        &mut self,
        i: usize,
        command: &Command,
        result: &Result<(), String>,
    ) {
        if self.restoring.contains(&i) {
            let restore = self.slots[i]
                .hardware_id
                .as_deref()
                .and_then(|h| self.store.sweep_under_way(h))
                .map(ModeTarget::command);
            if restore.as_ref() == Some(command) {
                self.restore_done(i, result);
            }
            return;
        }
        if let Err(reason) = result {
            if self.slots[i].arbiter.benchmarking() {
                self.tuning.send(Input::Stop {
                    index: i,
                    why: format!("the miner did not take {}: {reason}", command.describe()),
                });
            }
        }
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
            Output::Apply {
                index,
                target,
                label,
            } => {
                let name = self.slots[index].config.name.clone();
                let sent = self.send(
                    index,
                    &name,
                    "benchmark",
                    &label,
                    target.command(),
                    Origin::Benchmark,
                );
                if !sent {
                    self.tuning.send(Input::Stop {
                        index,
                        why: format!("{label} could not be sent"),
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
