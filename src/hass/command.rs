//! Parsing `<base>/<miner>/set/<property>` payloads into commands. Parsing only: whether the value
//! is allowed is `safety::Limits::check`'s decision, made right after.

use crate::miner::Command;
use crate::safety::Limits;

/// The properties a miner's set topic accepts.
pub const PROPERTIES: [&str; 11] = [
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
    "profile",
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
            // `eco` / `turbo` on a miner whose benchmark gave those roles to its own modes.
            .or_else(|| {
                let (_, i) = limits
                    .roles
                    .iter()
                    .find(|(role, _)| role.eq_ignore_ascii_case(p))?;
                limits.modes.get(*i)
            })
            .map(|(_, target)| target.command())
            .ok_or_else(|| {
                let names: Vec<&str> = limits.modes.iter().map(|(n, _)| n.as_str()).collect();
                if names.is_empty() {
                    format!(
                        "mode {} cannot be set: this miner offers no modes",
                        quote(p.as_bytes())
                    )
                } else {
                    format!(
                        "mode {} is not one of {}",
                        quote(p.as_bytes()),
                        names.join(", ")
                    )
                }
            }),
        "pool" => Ok(Command::SelectPool(p.to_string())),
        "restart" => {
            if p.eq_ignore_ascii_case("press") || p.eq_ignore_ascii_case("restart") {
                Ok(Command::Restart)
            } else {
                Err(format!(
                    "restart takes PRESS (the button's payload) or restart, got {}",
                    quote(p.as_bytes())
                ))
            }
        }
        "power" => {
            Err("power on/off needs a smart plug, and none is configured for this miner".into())
        }
        "benchmark" | "profile" => Err(format!(
            "{property} is handled by the daemon's benchmark, not parsed as a setting"
        )),
        other => Err(format!(
            "unknown property {}; the set topics are {}",
            quote(other.as_bytes()),
            PROPERTIES.join(", ")
        )),
    }
}

/// The longest command payload looked at; anything longer is refused unread.
pub const MAX_PAYLOAD: usize = 4096;

/// How much of a payload is ever shown back.
const SHOWN: usize = 40;

/// A payload as it may appear in a log line or an event's `value`: at most 40 characters, with
/// the full length when it was cut, so a megabyte of junk costs a line, not a megabyte.
pub fn clip(payload: &[u8]) -> String {
    let (shown, cut) = shown(payload);
    if cut {
        format!("{shown}… ({} bytes)", payload.len())
    } else {
        shown
    }
}

/// As `clip`, in quotes, for prose: `got "fast"`.
pub fn quote(payload: &[u8]) -> String {
    let (shown, cut) = shown(payload);
    if cut {
        format!("{shown:?}… ({} bytes)", payload.len())
    } else {
        format!("{shown:?}")
    }
}

fn shown(payload: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(SHOWN * 4)]);
    let shown: String = text.chars().take(SHOWN).collect();
    let cut = shown.len() < payload.len();
    (shown, cut)
}

fn whole(p: &str, what: &str, unit: &str) -> Result<u32, String> {
    let v: f64 = p.parse().map_err(|_| {
        format!(
            "{what} must be a number of {unit}, got {}",
            quote(p.as_bytes())
        )
    })?;
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
        return Err(format!(
            "{what} must be a whole, positive number of {unit}, got {}",
            quote(p.as_bytes())
        ));
    }
    Ok(v as u32)
}

/// `ON`/`OFF` (also `true`/`false`, `1`/`0`, any case), or what `what` takes.
pub fn on_off(p: &str, what: &str) -> Result<bool, String> {
    match p.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!(
            "{what} takes ON or OFF, got {}",
            quote(p.as_bytes())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miner::ClockConfig;
    use crate::safety::ModeTarget;

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
            roles: vec![],
            modes_by_power: vec![],
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
    fn restart_takes_only_the_button_payload() {
        assert_eq!(parse("restart", "PRESS", &limits()), Ok(Command::Restart));
        assert_eq!(parse("restart", "restart", &limits()), Ok(Command::Restart));
        assert!(parse("restart", "", &limits())
            .unwrap_err()
            .contains("PRESS"));
        assert!(parse("restart", "junk", &limits()).is_err());
    }

    #[test]
    fn junk_is_quoted_short() {
        let junk = vec![b'x'; 1 << 20];
        let q = quote(&junk);
        assert!(q.len() < 80, "{q}");
        assert!(q.ends_with("(1048576 bytes)"), "{q}");
        assert_eq!(quote(b"eco"), "\"eco\"");
        assert_eq!(clip(b"900"), "900");
        assert!(clip(&junk).len() < 80);
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
