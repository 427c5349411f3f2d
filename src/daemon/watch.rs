//! The hub's side of the safety controller (watchdog and alerts): what it tells the controller
//! (what each miner can be told, its readings, offline and back), and what it does with the
//! controller's output — commands with origin `safety` through the validated path, the safety
//! hold in the miner's arbiter, events, alerts on the miner's event entity, and its problems.

use super::Hub;
use crate::control::task::{Input, Output};
use crate::control::watchdog::{Controls, SafeProfile};
use crate::control::{Origin, Reading};
use crate::energy::task::Input as EnergyInput;
use crate::safety::ModeTarget;
use serde_json::json;

impl Hub {
    /// Tells the controller what miner `i` can be told (on its first reading and whenever its
    /// limits change).
    pub(super) fn watch_info(&mut self, i: usize) {
        let slot = &self.slots[i];
        let Some(limits) = &slot.limits else {
            return;
        };
        let levels = slot.levels_by_power();
        // The coolest clock preset (modes are in display order, the config's own after the
        // built-in ones), else the lowest frequency, else the lowest work mode.
        let coolest = limits
            .modes
            .iter()
            .filter_map(|(n, t)| match t {
                ModeTarget::Clock(c) => Some((n, c)),
                ModeTarget::Level(_) => None,
            })
            .min_by_key(|(_, c)| (c.frequency_mhz, c.core_voltage_mv));
        let safe = match (coolest, &limits.frequency_mhz, levels.first()) {
            (Some((name, c)), _, _) => SafeProfile::Clock {
                mode: name.clone(),
                frequency: c.frequency_mhz,
                core_voltage: c.core_voltage_mv,
            },
            (None, Some(r), _) => SafeProfile::Frequency(*r.start()),
            (None, None, Some(lowest)) => SafeProfile::WorkMode(lowest.clone()),
            (None, None, None) => SafeProfile::None,
        };
        let controls = Controls {
            name: slot.config.name.clone(),
            thermal: self.config.safety.thermal(slot.config.kind),
            frequency_min: limits.frequency_mhz.as_ref().map(|r| *r.start()),
            work_modes: levels,
            safe,
            can_pause: limits.pause,
            can_restart: limits.restart,
            plug: slot.config.power.is_some(),
        };
        self.watch.send(Input::Info { index: i, controls });
    }

    /// A miner read for the first time since start that was in a safety hold when the daemon
    /// stopped is held again until it has been cool for `safety.hold`.
    pub(super) fn resume_safety_hold(&mut self, i: usize) {
        let slot = &self.slots[i];
        if slot.arbiter.safety_held() {
            return;
        }
        let Some(reason) = slot
            .hardware_id
            .as_deref()
            .and_then(|h| self.store.safety_hold(h))
        else {
            return;
        };
        tracing::warn!(miner = %slot.config.name, %reason, "still in the safety hold it was in when miner2mqtt stopped");
        self.slots[i].arbiter.set_safety_hold(Some(reason));
        self.watch.send(Input::ResumeHold { index: i });
        self.energy.send(EnergyInput::SafetyHold {
            index: i,
            held: true,
        });
    }

    /// Hands miner `i`'s reading to the controller.
    pub(super) fn watch_reading(&mut self, i: usize) {
        let slot = &self.slots[i];
        let Some(t) = slot.reading.as_ref().map(|r| &r.telemetry) else {
            return;
        };
        // Its place among its work modes, least power first (what the watchdog steps through).
        let work_mode = t
            .work_mode
            .as_deref()
            .and_then(|name| slot.levels_by_power().iter().position(|n| n == name));
        let reading = Reading {
            asic_temp: t.asic_temp,
            vr_temp: t.vr_temp,
            firmware_overheat: t.firmware_overheat,
            hashrate: t.hashrate,
            power: t.power,
            frequency: t.frequency.map(|f| f.round() as u32),
            core_voltage: t.core_voltage.map(|v| v.round() as u32),
            work_mode,
            shares_accepted: t.shares_accepted,
            shares_rejected: t.shares_rejected,
            paused: t.paused,
            uptime: t.uptime,
        };
        self.watch.send(Input::Reading { index: i, reading });
    }

    /// What the controller asks for.
    pub(super) fn on_watch(&mut self, out: Output) {
        match out {
            Output::Command {
                index,
                property,
                value,
            } => {
                let name = self.slots[index].config.name.clone();
                tracing::warn!(miner = %name, property, %value, "watchdog");
                // Safety outranks a benchmark: the sweep ends (its restore then meets the
                // safety hold, which lets nothing hotter through).
                self.tuning_stop(index, "the watchdog stepped in");
                self.command(index, &name, property, value.as_bytes(), Origin::Safety);
            }
            Output::Hold { index, reason } => {
                let name = &self.slots[index].config.name;
                match &reason {
                    Some(r) => tracing::warn!(miner = %name, reason = %r, "safety hold"),
                    None => tracing::info!(miner = %name, "safety hold released"),
                }
                let held = reason.is_some();
                if let Some(hwid) = &self.slots[index].hardware_id {
                    if let Err(e) = self.store.keep_safety_hold(hwid, reason.as_deref()) {
                        tracing::error!(error = %e, "cannot keep the safety hold in the store; a restart would release it");
                    }
                }
                self.slots[index].arbiter.set_safety_hold(reason);
                self.energy.send(EnergyInput::SafetyHold { index, held });
                self.publish_state(index);
            }
            Output::Event(e) => {
                tracing::info!(event = %e, "watchdog");
                self.event(e);
            }
            Output::Alert {
                index,
                kind,
                message,
            } => {
                let name = self.slots[index].config.name.clone();
                tracing::warn!(miner = %name, kind = kind.as_str(), %message, "alert");
                self.event(json!({ "type": "alert", "kind": kind.as_str(), "miner": name, "message": message }));
                if self.connected {
                    let body = json!({ "event_type": kind.as_str(), "message": message });
                    self.mqtt
                        .publish(self.topics.alert(&name), body.to_string(), false);
                }
            }
            Output::Problems { index, kinds } => {
                self.slots[index].problems = kinds;
                self.publish_state(index);
            }
        }
    }
}

impl super::Slot {
    /// Its firmware's work modes least power first: the adapter's order where it knows one
    /// (Mini 3), else the order of their codes.
    fn levels_by_power(&self) -> Vec<String> {
        if let Some(l) = self.modes_by_power() {
            return l.to_vec();
        }
        self.limits
            .as_ref()
            .map(|l| {
                l.modes
                    .iter()
                    .filter(|(_, t)| matches!(t, ModeTarget::Level(_)))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The adapter's least-power-first order of the firmware's work modes, where it differs
    /// from their codes' (Mini 3); borrowed, for the per-reading paths.
    pub(super) fn modes_by_power(&self) -> Option<&[String]> {
        self.limits
            .as_ref()
            .map(|l| l.modes_by_power.as_slice())
            .filter(|l| !l.is_empty())
    }
}
