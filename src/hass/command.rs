//! Parsing `<base>/<miner>/set/<property>` payloads into commands. Parsing only: whether the value
//! is allowed is `safety::Limits::check`'s decision, made right after.

use crate::miner::Command;
use crate::safety::{Limits, ModeTarget};

/// The properties a miner's set topic accepts.
pub const PROPERTIES: [&str; 10] = [
    "frequency",
    "core_voltage",
    "fan_speed",
    "auto_fan",
    "mode",
    "pool",
    "power",
    "restart",
    "mining",
    "benchmark",
];

/// Turns a raw payload into a command, or says what was wrong with it.
pub fn parse(property: &str, payload: &str, limits: &Limits) -> Result<Command, String> {
    let p = payload.trim();
    match property {
        "frequency" => whole(p, "frequency", "MHz").map(Command::SetFrequency),
        "core_voltage" => whole(p, "core voltage", "mV").map(Command::SetCoreVoltage),
        "fan_speed" => {
            let v = whole(p, "fan speed", "%")?;
            u8::try_from(v)
                .ok()
                .filter(|v| *v <= 100)
                .map(Command::SetFanSpeed)
                .ok_or_else(|| format!("fan speed {v} % is not a percentage (0–100)"))
        }
        "auto_fan" => on_off(p, "auto_fan").map(Command::SetAutoFan),
        "mining" => on_off(p, "mining").map(Command::SetMining),
        "mode" => limits
            .modes
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(p))
            .map(|(_, target)| match target {
                ModeTarget::Clock(clock) => Command::SetClock(*clock),
                ModeTarget::Level(code) => Command::SetWorkMode(*code),
            })
            .ok_or_else(|| {
                let names: Vec<&str> = limits.modes.iter().map(|(n, _)| n.as_str()).collect();
                if names.is_empty() {
                    format!("mode {p:?} cannot be set: this miner offers no modes")
                } else {
                    format!("mode {p:?} is not one of {}", names.join(", "))
                }
            }),
        "pool" => Ok(Command::SelectPool(p.to_string())),
        "restart" => Ok(Command::Restart),
        "power" => {
            Err("power on/off needs a smart plug, and none is configured for this miner".into())
        }
        "benchmark" => {
            Err("benchmark sweeps are not available in this version of miner2mqtt".into())
        }
        other => Err(format!(
            "unknown property {other:?}; the set topics are {}",
            PROPERTIES.join(", ")
        )),
    }
}

fn whole(p: &str, what: &str, unit: &str) -> Result<u32, String> {
    let v: f64 = p
        .parse()
        .map_err(|_| format!("{what} must be a number of {unit}, got {p:?}"))?;
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
        return Err(format!(
            "{what} must be a whole, positive number of {unit}, got {p:?}"
        ));
    }
    Ok(v as u32)
}

fn on_off(p: &str, what: &str) -> Result<bool, String> {
    match p.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{what} takes ON or OFF, got {p:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miner::ClockConfig;

    fn limits() -> Limits {
        Limits {
            asic_model: Some("BM1370".into()),
            frequency_mhz: Some(100..=625),
            core_voltage_mv: Some(1000..=1250),
            overclock_frequency_mhz: None,
            overclock_core_voltage_mv: None,
            fan_speed: Some(20..=100),
            auto_fan: true,
            restart: true,
            pause: false,
            modes: vec![(
                "eco".into(),
                ModeTarget::Clock(ClockConfig {
                    frequency_mhz: 400,
                    core_voltage_mv: 1060,
                }),
            )],
            pools: vec![],
        }
    }

    #[test]
    fn numbers_from_ha_sliders_parse() {
        assert_eq!(
            parse("frequency", "600", &limits()),
            Ok(Command::SetFrequency(600))
        );
        assert_eq!(
            parse("frequency", "600.0", &limits()),
            Ok(Command::SetFrequency(600))
        );
        assert_eq!(
            parse("fan_speed", " 80 ", &limits()),
            Ok(Command::SetFanSpeed(80))
        );
    }

    #[test]
    fn garbage_says_what_was_expected() {
        assert!(parse("frequency", "fast", &limits())
            .unwrap_err()
            .contains("number of MHz"));
        assert!(parse("frequency", "600.5", &limits()).is_err());
        assert!(parse("frequency", "-5", &limits()).is_err());
        assert!(parse("frequency", "NaN", &limits()).is_err());
        assert!(parse("fan_speed", "300", &limits()).is_err());
        assert!(parse("auto_fan", "maybe", &limits())
            .unwrap_err()
            .contains("ON or OFF"));
        assert!(parse("mode", "ludicrous", &limits())
            .unwrap_err()
            .contains("eco"));
        assert!(parse("warp", "1", &limits())
            .unwrap_err()
            .contains("unknown property"));
    }

    #[test]
    fn modes_map_to_clock_presets() {
        assert_eq!(
            parse("mode", "ECO", &limits()),
            Ok(Command::SetClock(ClockConfig {
                frequency_mhz: 400,
                core_voltage_mv: 1060
            }))
        );
    }
}
