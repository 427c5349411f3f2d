//! The hub's side of the plugs: the `power` command (through the arbiter, like any other), what
//! the plug task reports, and what "off on purpose" means for a miner — shown `off` with no
//! hashrate and no power, not unavailable, not polled, no `miner_offline`, until switched on;
//! after switching on, failed polls are expected for `BOOT_GRACE` while it boots.

use super::Hub;
use crate::control::task::Input as WatchInput;
use crate::control::{Change, Origin};
use crate::energy::task::Input as EnergyInput;
use crate::hass::command;
use crate::power::task::{Input, Output};
use crate::power::Plug;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long a miner switched on at its plug may take to answer before it counts as offline.
pub const BOOT_GRACE: Duration = Duration::from_secs(180);

/// What the hub knows of a miner's plug.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlugView {
    /// What it should be (set by a command; remembered across restarts).
    pub wanted: Option<bool>,
    /// What the plug last said (or, for a plug that never reports, what it was last told).
    pub actual: Option<bool>,
}

impl PlugView {
    /// Off on purpose: miner2mqtt was told to switch it off (by the user or the strategy). A
    /// plug found off with no such word is a miner without power, polled like any other: it
    /// shows offline, and its never-read device can still appear once it is switched on.
    pub fn off(&self) -> bool {
        self.wanted == Some(false)
    }

    /// The switch's state: what the plug says, else what it should be.
    pub fn shown(&self) -> Option<bool> {
        self.actual.or(self.wanted)
    }
}

/// Which miners each MQTT plug state topic speaks for (a topic may serve more than one).
pub(super) fn state_topics(slots: &[super::Slot]) -> HashMap<String, Vec<usize>> {
    let mut topics: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, slot) in slots.iter().enumerate() {
        if let Some(Plug::Mqtt(p)) = &slot.config.power {
            if let Some(t) = &p.state_topic {
                topics.entry(t.clone()).or_default().push(i);
            }
        }
    }
    topics
}

impl Hub {
    /// Whether miner `i` is switched off at its plug on purpose.
    pub(super) fn off_on_purpose(&self, i: usize) -> bool {
        self.slots[i].plug.is_some_and(|p| p.off())
    }

    /// Whether miner `i` is booting after being switched on (failed polls are expected).
    pub(super) fn booting(&self, i: usize) -> bool {
        self.slots[i].boot_until.is_some_and(|t| Instant::now() < t)
    }

    /// A message on a plug's state topic; says whether it was one.
    pub(super) fn on_plug_message(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(miners) = self.plug_topics.get(topic) else {
            return false;
        };
        for &index in miners {
            self.power.send(Input::Observed {
                index,
                payload: payload.to_vec(),
            });
        }
        true
    }

    /// `<base>/<miner>/set/power` (ON/OFF), from any origin.
    pub(super) fn power_command(&mut self, i: usize, name: &str, payload: &[u8], origin: Origin) {
        let value = command::clip(payload);
        if self.slots[i].config.power.is_none() {
            let reason = format!("{name} has no smart plug: add power: {{ mqtt: {{ command_topic: ... }} }} or power: {{ ha: {{ entity_id: switch.... }} }} to it in the config");
            self.refuse_from(i, name, "power", &value, &reason, origin);
            return;
        }
        let on = match std::str::from_utf8(payload)
            .map_err(|_| "the payload is not UTF-8 text".to_string())
            .and_then(|p| command::on_off(p.trim(), "power"))
        {
            Ok(on) => on,
            Err(reason) => {
                self.refuse_from(i, name, "power", &value, &reason, origin);
                return;
            }
        };
        if !on && self.slots[i].arbiter.benchmarking() {
            // Switching off is always allowed: the sweep ends first.
            self.tuning_stop(i, "switched off at its plug");
            self.slots[i].arbiter.set_benchmark(false);
        }
        let change = Change {
            setting: true,
            raises: on,
        };
        let hold = match self.admit(i, origin, change, if on { "power on" } else { "power off" }) {
            Ok(hold) => hold,
            Err(reason) => {
                self.not_admitted(i, name, "power", &value, &reason, origin);
                return;
            }
        };
        tracing::info!(miner = %name, on, origin = origin.as_str(), "switching the plug");
        self.power.send(Input::Set {
            index: i,
            on,
            origin,
        });
        self.hold_changed(i, hold);
    }

    /// What the plug task reports.
    pub(super) fn on_power(&mut self, out: Output) {
        match out {
            Output::State {
                index,
                wanted,
                actual,
            } => self.plug_changed(index, PlugView { wanted, actual }),
            Output::Done {
                index,
                on,
                origin,
                result,
            } => {
                let name = self.slots[index].config.name.clone();
                let command = format!("power {}", if on { "on" } else { "off" });
                match result {
                    Ok(()) => self.event(json!({ "type": "command_applied", "miner": name, "command": command, "origin": origin.as_str() })),
                    Err(reason) => {
                        tracing::warn!(miner = %name, %reason, "the plug could not be switched");
                        if origin == Origin::Strategy {
                            self.energy.send(EnergyInput::CommandFailed { index });
                        }
                        self.event(json!({ "type": "command_failed", "miner": name, "command": command, "origin": origin.as_str(), "reason": reason }));
                    }
                }
            }
            Output::Event(e) => self.event(e),
        }
    }

    fn plug_changed(&mut self, i: usize, view: PlugView) {
        let was_off = self.off_on_purpose(i);
        self.slots[i].plug = Some(view);
        let off = self.off_on_purpose(i);
        let name = self.slots[i].config.name.clone();
        if off != was_off {
            self.slots[i].handle.set_polling(!off);
            if off {
                tracing::info!(miner = %name, "switched off at its plug: shown off, not polled until it is switched on");
                let slot = &mut self.slots[i];
                slot.failures = 0;
                slot.boot_until = None;
                if slot.hardware_id.is_none() {
                    tracing::warn!(miner = %name, "off at its plug and never read, so Home Assistant has no device for it yet: switch it on once (miner2mqtt/{name}/set/power ON) so miner2mqtt can learn what it is");
                }
                self.set_availability(i, true);
                self.watch.send(WatchInput::Off { index: i });
                self.event(json!({ "type": "miner_powered", "miner": name, "state": "off" }));
            } else {
                tracing::info!(miner = %name, "switched on at its plug: polling again while it boots");
                let slot = &mut self.slots[i];
                slot.boot_until = Some(Instant::now() + BOOT_GRACE);
                // Its last reading is from before it was switched off.
                slot.reading = None;
                self.event(json!({ "type": "miner_powered", "miner": name, "state": "on" }));
            }
            if self.slots[i].hardware_id.is_some() {
                self.energy_info(i);
            }
        }
        self.energy_status(i, false);
        self.publish_state(i);
    }
}
