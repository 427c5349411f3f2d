//! The JSON published on `<base>/<miner>/state`: the telemetry plus what the daemon derives
//! (efficiency, the mode the clock matches, overheating). Every key is always present.

use crate::config::{Safety, Thermal};
use crate::miner::Telemetry;
use crate::safety::Limits;
use serde_json::Value;

/// The body of `<base>/<miner>/state`: the telemetry flattened, and what the daemon derives.
#[derive(serde::Serialize)]
struct StateBody<'a> {
    #[serde(flatten)]
    telemetry: &'a Telemetry,
    efficiency: Option<f64>,
    mode: Option<&'a str>,
    overheating: Option<bool>,
    firmware: Option<&'a str>,
    #[serde(flatten)]
    extras: &'a Extras,
}

/// What the daemon adds beyond the device's own readings.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Extras {
    /// kWh since first seen (for HA's energy dashboard).
    pub energy: Option<f64>,
    /// £ spent today.
    pub cost_today: Option<f64>,
    /// Until when a change made by hand holds the strategy off (RFC 3339).
    pub strategy_hold: Option<String>,
    /// Its smart plug: `ON` or `OFF` (null without a plug, or before it is known).
    pub plug_power: Option<&'static str>,
    /// Whether any alert condition holds (the Problem sensor), and which (`overheating`,
    /// `offline`, `hashrate_drop`, `reject_rate`, `watchdog`, `drift`).
    pub problem: bool,
    pub problems: Vec<&'static str>,
    /// Whether the watchdog holds it: nothing may raise its frequency, voltage or mode.
    pub safety_hold: bool,
}

fn body<'a>(
    t: &'a Telemetry,
    firmware: Option<&'a str>,
    limits: Option<&'a Limits>,
    thermal: &Thermal,
    extras: &'a Extras,
) -> StateBody<'a> {
    let round = |v: Option<f64>, digits: i32| {
        v.map(|x| {
            let p = 10f64.powi(digits);
            (x * p).round() / p
        })
    };
    StateBody {
        telemetry: t,
        efficiency: round(t.efficiency_j_per_th(), 2),
        mode: mode(t, limits),
        overheating: overheating(t, thermal),
        firmware,
        extras,
    }
}

/// The state message as published, serialised straight from the telemetry (no JSON tree in
/// between: it is built on every poll).
pub fn state_payload(
    telemetry: Option<&Telemetry>,
    firmware: Option<&str>,
    limits: Option<&Limits>,
    thermal: &Thermal,
    extras: &Extras,
) -> String {
    let empty = Telemetry::default();
    let t = telemetry.unwrap_or(&empty);
    serde_json::to_string(&body(t, firmware, limits, thermal, extras)).unwrap_or_default()
}

/// Builds the state JSON. `telemetry` is `None` before the first successful poll, in which case
/// every reading is `null`. `firmware` is the device's firmware version (from its identity), read
/// by the Firmware sensor.
pub fn state_json(
    telemetry: Option<&Telemetry>,
    firmware: Option<&str>,
    limits: Option<&Limits>,
    safety: &Safety,
) -> Value {
    serde_json::from_str(&state_payload(
        telemetry,
        firmware,
        limits,
        &safety.thermal(crate::config::MinerKind::Axeos),
        &Extras::default(),
    ))
    .unwrap_or_default()
}

/// The mode a miner is in: the device's own work mode (Avalon), else the preset its clock
/// matches (ESP-Miner).
pub fn mode<'a>(t: &'a Telemetry, limits: Option<&'a Limits>) -> Option<&'a str> {
    t.work_mode
        .as_deref()
        .or_else(|| limits.and_then(|l| l.mode_of(t.clock())))
}

/// Overheating by our thresholds or the firmware's own trip; `None` when nothing is known.
pub fn overheating(t: &Telemetry, thermal: &Thermal) -> Option<bool> {
    let asic = t.asic_temp.map(|c| c >= thermal.temp_overheat);
    let vr = t.vr_temp.map(|c| c >= thermal.vr_temp_limit);
    let fw = t.firmware_overheat;
    match (asic, vr, fw) {
        (None, None, None) => None,
        _ => Some(asic == Some(true) || vr == Some(true) || fw == Some(true)),
    }
}

/// The keys of the state JSON, for tests and documentation.
pub fn state_keys() -> Vec<String> {
    match state_json(None, None, None, &Safety::default()) {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_present_and_null_before_the_first_poll() {
        let v = state_json(None, None, None, &Safety::default());
        let obj = v.as_object().unwrap();
        for key in [
            "hashrate",
            "power",
            "efficiency",
            "asic_temp",
            "frequency",
            "mode",
            "overheating",
            "pool",
            "firmware",
        ] {
            assert!(obj.get(key).unwrap().is_null(), "{key}");
        }
    }

    #[test]
    fn overheating_by_threshold_or_firmware() {
        let s = Safety::default().thermal(crate::config::MinerKind::Axeos);
        let mut t = Telemetry {
            asic_temp: Some(60.0),
            ..Default::default()
        };
        assert_eq!(overheating(&t, &s), Some(false));
        t.asic_temp = Some(71.0);
        assert_eq!(overheating(&t, &s), Some(true));
        t.asic_temp = Some(50.0);
        t.firmware_overheat = Some(true);
        assert_eq!(overheating(&t, &s), Some(true));
    }
}
