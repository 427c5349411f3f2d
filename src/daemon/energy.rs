//! The hub's side of the energy controller: what it tells the controller (readings, holds,
//! failed strategy commands, pushed prices, switches) and what it does with the controller's
//! output (commands through the arbiter and the validated path, events, bridge state).

use super::Hub;
use crate::control::Origin;
use crate::energy::prices::{check_slot, PriceSlot, SlotKind};
use crate::energy::strategy::{MinerInfo, MinerStatus};
use crate::energy::task::{Input, Output, Switch};
use crate::hass::discovery::EnergyFeatures;
use crate::hass::{command, state};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The most slots one `bridge/prices/set` message may carry (two weeks of half hours).
const MAX_PUSHED_SLOTS: usize = 2 * 7 * 48;

impl Hub {
    /// The energy entities the configuration calls for.
    pub(super) fn energy_features(&self) -> EnergyFeatures {
        let e = &self.config.energy;
        EnergyFeatures {
            priced: e.source.is_some(),
            strategy: e.has_strategy(),
            champion: e.has_champion(),
        }
    }

    /// Tells the controller what miner `i` is: its name, family and modes (on its first reading
    /// and whenever its capabilities or identity change).
    pub(super) fn energy_info(&mut self, i: usize) {
        let slot = &self.slots[i];
        let Some(key) = slot.hardware_id.clone() else {
            return;
        };
        let limits = slot.limits.as_ref();
        // Least power first: the strategy's "lowest mode", and `eco`/`turbo` before a benchmark,
        // are the first and the last.
        let modes: Vec<String> = match slot.modes_by_power() {
            Some(by_power) => by_power.to_vec(),
            None => limits
                .map(|l| l.modes.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default(),
        };
        // The roles name modes by their place in the limits' list; the strategy's list may be
        // in another order.
        let roles = limits
            .map(|l| {
                l.roles
                    .iter()
                    .filter_map(|(role, i)| {
                        let name = &l.modes.get(*i)?.0;
                        Some((role.clone(), modes.iter().position(|m| m == name)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let info = MinerInfo {
            index: i,
            name: slot.config.name.clone(),
            family: slot.config.kind.family(),
            modes,
            roles,
            can_pause: limits.is_some_and(|l| l.pause),
            plug: slot.config.power.is_some(),
        };
        self.energy.send(Input::Info { info, key });
    }

    /// Tells the controller how miner `i` is: online, mode, paused and, with `sample`, a sample
    /// taken now by the controller's clock (which runs fast in the demo).
    pub(super) fn energy_status(&mut self, i: usize, sample: bool) {
        let slot = &self.slots[i];
        let t = slot.reading.as_ref().map(|r| &r.telemetry);
        let limits = slot.limits.as_ref();
        let mode =
            t.and_then(|t| state::mode(t, limits))
                .and_then(|name| match slot.modes_by_power() {
                    Some(by_power) => by_power.iter().position(|n| n == name),
                    None => limits.and_then(|l| l.modes.iter().position(|(n, _)| n == name)),
                });
        let off = self.off_on_purpose(i);
        let slot = &self.slots[i];
        let status = MinerStatus {
            index: i,
            online: slot.online == Some(true) && !off,
            powered_off: off,
            mode,
            paused: t.and_then(|t| t.paused),
            sample: sample.then(|| {
                let (power, hashrate) = (t.and_then(|t| t.power), t.and_then(|t| t.hashrate));
                (self.clock.now(), power, hashrate)
            }),
        };
        self.energy.send(Input::Status(status));
    }

    /// What the controller asks for.
    pub(super) fn on_energy(&mut self, out: Output) {
        match out {
            Output::Command {
                index,
                property,
                value,
            } => {
                let name = self.slots[index].config.name.clone();
                self.command(index, &name, property, value.as_bytes(), Origin::Strategy);
            }
            Output::Event(e) => {
                tracing::info!(event = %e, "energy");
                self.event(e);
            }
            Output::Bridge(state) => {
                self.mqtt
                    .publish(self.topics.bridge_energy(), state.to_string(), true);
            }
            Output::Slots(slots) => {
                self.mqtt
                    .publish(self.topics.bridge_prices(), slots.to_string(), true);
            }
            Output::Meter {
                index,
                kwh,
                cost_today,
            } => {
                if let Some(slot) = self.slots.get_mut(index) {
                    slot.meter = Some((kwh, cost_today));
                }
            }
        }
    }

    /// `<base>/bridge/prices/set`: `[{"start": RFC 3339, "end": RFC 3339, "value": price}]`, the
    /// price in the unit of the bands (p/kWh for UK tariffs). All or nothing: one bad slot refuses
    /// the message, and the event says which and why.
    pub(super) fn on_prices_set(&mut self, payload: &[u8]) {
        match parse_pushed_prices(payload) {
            Ok(slots) => {
                tracing::info!(slots = slots.len(), "prices received over MQTT");
                self.event(json!({ "type": "prices_received", "slots": slots.len() }));
                self.energy.send(Input::Prices(slots));
            }
            Err(reason) => {
                tracing::warn!(%reason, "prices pushed over MQTT refused");
                self.event(json!({ "type": "prices_rejected", "reason": reason }));
            }
        }
    }

    /// The bridge's energy switches, ON or OFF.
    pub(super) fn energy_switch(&mut self, switch: Switch, text: &str) -> Result<Value, String> {
        let action = switch.request();
        if !self.config.energy.has_strategy() {
            return Err(format!(
                "{action} needs energy.bands in the configuration; none are configured"
            ));
        }
        let on = command::on_off(text, action)?;
        self.energy.send(Input::Switch(switch, on));
        Ok(json!({ "value": if on { "ON" } else { "OFF" } }))
    }
}

/// Reads a pushed price list.
pub fn parse_pushed_prices(payload: &[u8]) -> Result<Vec<PriceSlot>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pushed {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        value: f64,
    }
    if payload.len() > 1 << 20 {
        return Err(format!(
            "{} bytes is more than any price list (at most {MAX_PUSHED_SLOTS} slots)",
            payload.len()
        ));
    }
    let list: Vec<Pushed> = serde_json::from_slice(payload).map_err(|e| {
        format!("expected a JSON list like [{{\"start\": \"2024-01-08T10:00:00Z\", \"end\": \"2024-01-08T10:30:00Z\", \"value\": 15.2}}]: {e}")
    })?;
    if list.is_empty() {
        return Err("the list is empty".into());
    }
    if list.len() > MAX_PUSHED_SLOTS {
        return Err(format!(
            "{} slots is more than two weeks; send at most {MAX_PUSHED_SLOTS}",
            list.len()
        ));
    }
    let mut slots = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let slot = PriceSlot {
            start: p.start,
            end: p.end,
            p_per_kwh: p.value,
            kind: SlotKind::Actual,
        };
        check_slot(&slot).map_err(|e| format!("slot {i}: {e}"))?;
        slots.push(slot);
    }
    slots.sort_by_key(|s| s.start);
    if let Some(w) = slots.windows(2).find(|w| w[1].start < w[0].end) {
        return Err(format!(
            "the slots starting {} and {} overlap",
            w[0].start, w[1].start
        ));
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_prices_are_all_or_nothing_with_the_reason() {
        let ok = br#"[{"start":"2024-01-08T10:30:00Z","end":"2024-01-08T11:00:00Z","value":-1.5},
                      {"start":"2024-01-08T10:00:00Z","end":"2024-01-08T10:30:00Z","value":15.2}]"#;
        let slots = parse_pushed_prices(ok).unwrap();
        assert_eq!(slots[0].p_per_kwh, 15.2);
        assert_eq!(slots[1].p_per_kwh, -1.5);
        let overlap = br#"[{"start":"2024-01-08T10:00:00Z","end":"2024-01-08T11:00:00Z","value":1},
                           {"start":"2024-01-08T10:30:00Z","end":"2024-01-08T11:00:00Z","value":2}]"#;
        assert!(parse_pushed_prices(overlap)
            .unwrap_err()
            .contains("overlap"));
        let backwards =
            br#"[{"start":"2024-01-08T10:30:00Z","end":"2024-01-08T10:00:00Z","value":1}]"#;
        assert!(parse_pushed_prices(backwards)
            .unwrap_err()
            .starts_with("slot 0"));
        assert!(parse_pushed_prices(b"15.2")
            .unwrap_err()
            .contains("JSON list"));
        assert!(parse_pushed_prices(b"[]").unwrap_err().contains("empty"));
    }
}
