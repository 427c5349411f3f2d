//! The safety limits, resolved per miner, and the check every command passes before it can be
//! queued for a device. Commands outside the limits are refused with a reason, never clamped.
//!
//! Limits start from the ASIC model's rated range (or its absolute range with
//! `allow_overclock: true`), are narrowed by the miner's own `limits:` in the config, and are
//! never widened. A miner whose ASIC model is unknown gets no frequency or voltage control.

use crate::config::{Bounds, Config, MinerConfig};
use crate::miner::{asic, Capabilities, ClockConfig, Command};
use std::ops::RangeInclusive;

/// What choosing a mode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ModeTarget {
    /// A frequency/voltage preset (ESP-Miner).
    Clock(ClockConfig),
    /// A firmware work mode by code (Avalon).
    Level(u8),
}

impl ModeTarget {
    /// The command that puts it on the miner.
    pub fn command(self) -> Command {
        match self {
            ModeTarget::Clock(c) => Command::SetClock(c),
            ModeTarget::Level(code) => Command::SetWorkMode(code),
        }
    }
}

/// What may be sent to one miner.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The ASIC model the ranges come from.
    pub asic_model: Option<String>,
    pub frequency_mhz: Option<RangeInclusive<u32>>,
    pub core_voltage_mv: Option<RangeInclusive<u32>>,
    /// The range `allow_overclock: true` would open, to say so in a refusal.
    pub overclock_frequency_mhz: Option<RangeInclusive<u32>>,
    pub overclock_core_voltage_mv: Option<RangeInclusive<u32>>,
    /// Manual fan duty accepted, %; `None` when the fan cannot be set.
    pub fan_speed: Option<RangeInclusive<u8>>,
    pub auto_fan: bool,
    pub restart: bool,
    pub pause: bool,
    /// Modes offered, in display order: presets that fit inside the limits, or the firmware's
    /// own work modes.
    pub modes: Vec<(String, ModeTarget)>,
    /// On a miner with work modes of its own, which of them a benchmark found most efficient
    /// (`eco`) and fastest (`turbo`): the roles a band's `eco`/`turbo` target means, by index
    /// into `modes`.
    pub roles: Vec<(String, usize)>,
    /// The firmware's work modes least power first, where that is not code order (Mini 3).
    pub modes_by_power: Vec<String>,
    pub pools: Vec<String>,
}

impl Limits {
    /// Resolves the limits for `miner` given what its device reports. Returns warnings worth
    /// logging once (an override that tried to loosen a limit, an unknown ASIC).
    pub fn resolve(
        config: &Config,
        miner: &MinerConfig,
        asic_model: Option<&str>,
        caps: &Capabilities,
    ) -> (Limits, Vec<String>) {
        let mut warnings = Vec::new();
        let profile = asic_model.and_then(asic::profile);
        let allow_oc = config.safety.allow_overclock;

        let mut narrow = |what: &str,
                          base: RangeInclusive<u32>,
                          over: Option<Bounds>,
                          unit: &str|
         -> RangeInclusive<u32> {
            let Some(b) = over else { return base };
            let lo = b.min.max(*base.start());
            let hi = b.max.min(*base.end());
            if b.min < *base.start() || b.max > *base.end() {
                warnings.push(format!(
                    "miner {}: limits.{what} {}..{} {unit} is wider than the {:?} {unit} allowed for {}; using {lo}..{hi}{}",
                    miner.name, b.min, b.max, base, asic_model.unwrap_or("?"),
                    if allow_oc { "" } else { " (safety.allow_overclock: true opens the overclock range)" }
                ));
            }
            if lo > hi {
                *base.start()..=*base.start()
            } else {
                lo..=hi
            }
        };

        let (frequency, voltage, oc_f, oc_v) = match (&profile, caps.frequency_options.is_some()) {
            (Some(p), true) => {
                let (bf, bv) = if allow_oc {
                    (
                        p.absolute_frequency_mhz.clone(),
                        p.absolute_core_voltage_mv.clone(),
                    )
                } else {
                    (
                        p.rated_frequency_mhz.clone(),
                        p.rated_core_voltage_mv.clone(),
                    )
                };
                (
                    Some(narrow("frequency", bf, miner.limits.frequency, "MHz")),
                    Some(narrow("core_voltage", bv, miner.limits.core_voltage, "mV")),
                    Some(p.absolute_frequency_mhz.clone()),
                    Some(p.absolute_core_voltage_mv.clone()),
                )
            }
            (None, true) => {
                warnings.push(format!(
                    "miner {}: ASIC model {:?} is not known to miner2mqtt; frequency and voltage control are disabled",
                    miner.name,
                    asic_model.unwrap_or("unreported")
                ));
                (None, None, None, None)
            }
            _ => (None, None, None, None),
        };

        // The firmware's own option lists set the floor: nothing below what the device offers.
        let floor = |range: Option<RangeInclusive<u32>>, options: &Option<Vec<u32>>| {
            let range = range?;
            let lowest = options.as_ref().and_then(|o| o.iter().copied().min());
            Some(match lowest {
                Some(lo) if lo > *range.start() && lo <= *range.end() => lo..=*range.end(),
                _ => range,
            })
        };
        let frequency = floor(frequency, &caps.frequency_options);
        let voltage = floor(voltage, &caps.core_voltage_options);

        let mut modes = Vec::new();
        if let (Some(p), Some(f), Some(v)) = (&profile, &frequency, &voltage) {
            let overrides = config.modes.get(p.model);
            let mut candidates: Vec<(String, ClockConfig)> = p
                .presets
                .iter()
                .map(|pr| {
                    let c = overrides.and_then(|o| o.get(pr.name));
                    (
                        pr.name.to_string(),
                        ClockConfig {
                            frequency_mhz: c.map_or(pr.frequency_mhz, |c| c.frequency),
                            core_voltage_mv: c.map_or(pr.core_voltage_mv, |c| c.core_voltage),
                        },
                    )
                })
                .collect();
            if let Some(o) = overrides {
                for (name, c) in o {
                    if !candidates.iter().any(|(n, _)| n == name) {
                        candidates.push((
                            name.clone(),
                            ClockConfig {
                                frequency_mhz: c.frequency,
                                core_voltage_mv: c.core_voltage,
                            },
                        ));
                    }
                }
            }
            modes = candidates
                .into_iter()
                .filter(|(_, c)| f.contains(&c.frequency_mhz) && v.contains(&c.core_voltage_mv))
                .map(|(n, c)| (n, ModeTarget::Clock(c)))
                .collect();
        }
        if !caps.work_modes.is_empty() {
            modes = caps
                .work_modes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), ModeTarget::Level(i as u8)))
                .collect();
        }

        let limits = Limits {
            asic_model: profile.as_ref().map(|p| p.model.to_string()),
            frequency_mhz: frequency,
            core_voltage_mv: voltage,
            overclock_frequency_mhz: oc_f,
            overclock_core_voltage_mv: oc_v,
            fan_speed: caps
                .fan_speed
                .then_some(config.safety.min_fan_speed.max(caps.fan_min).min(100)..=100),
            auto_fan: caps.auto_fan,
            restart: caps.restart,
            pause: caps.pause,
            modes,
            roles: Vec::new(),
            modes_by_power: caps.work_modes_by_power.clone(),
            pools: caps.pools.iter().map(|p| p.label.clone()).collect(),
        };
        (limits, warnings)
    }

    /// A benchmark's results become the chip's own modes: `eco` its most efficient passing
    /// clock, `turbo` its fastest (each only where it fits the limits; `standard` stays the
    /// factory default and the presets stay the fallback). On a miner with work modes of its
    /// own, the modes found most efficient and fastest take the `eco` and `turbo` roles.
    pub fn learn(&mut self, eco: Option<ModeTarget>, turbo: Option<ModeTarget>) {
        let fits = |c: &ClockConfig| {
            self.frequency_mhz
                .as_ref()
                .is_some_and(|r| r.contains(&c.frequency_mhz))
                && self
                    .core_voltage_mv
                    .as_ref()
                    .is_some_and(|r| r.contains(&c.core_voltage_mv))
        };
        let mut clocks = Vec::new();
        let mut roles = Vec::new();
        for (name, target) in [("eco", eco), ("turbo", turbo)] {
            match target {
                Some(ModeTarget::Clock(c)) if fits(&c) => clocks.push((name, c)),
                Some(level @ ModeTarget::Level(_)) => {
                    if let Some(i) = self.modes.iter().position(|(_, t)| *t == level) {
                        roles.push((name.to_string(), i));
                    }
                }
                _ => {}
            }
        }
        self.roles = roles;
        for (name, clock) in clocks {
            match self.modes.iter_mut().find(|(n, _)| n == name) {
                Some((_, target @ ModeTarget::Clock(_))) => *target = ModeTarget::Clock(clock),
                Some(_) => {}
                // Its preset did not fit the limits: the learned one does.
                None if name == "eco" => self
                    .modes
                    .insert(0, (name.into(), ModeTarget::Clock(clock))),
                None => self.modes.push((name.into(), ModeTarget::Clock(clock))),
            }
        }
    }

    /// The code of the firmware work mode named `name`.
    pub fn level_of(&self, name: &str) -> Option<u8> {
        self.modes.iter().find_map(|(n, t)| match t {
            ModeTarget::Level(code) if n == name => Some(*code),
            _ => None,
        })
    }

    /// The name of the firmware work mode with code `code`.
    pub fn level_name(&self, code: u8) -> Option<&str> {
        self.modes
            .iter()
            .find(|(_, t)| *t == ModeTarget::Level(code))
            .map(|(n, _)| n.as_str())
    }

    /// The mode whose preset matches the clock now, if any.
    pub fn mode_of(&self, clock: Option<ClockConfig>) -> Option<&str> {
        let clock = ModeTarget::Clock(clock?);
        self.modes
            .iter()
            .find(|(_, c)| *c == clock)
            .map(|(n, _)| n.as_str())
    }

    /// Checks a command against the limits. The error is the reason shown to the user.
    pub fn check(&self, command: &Command) -> Result<(), String> {
        let model = self.asic_model.as_deref().unwrap_or("this ASIC");
        let in_range = |what: &str,
                        value: u32,
                        unit: &str,
                        range: &Option<RangeInclusive<u32>>,
                        oc: &Option<RangeInclusive<u32>>|
         -> Result<(), String> {
            let Some(r) = range else {
                return Err(format!(
                    "{what} cannot be set on this miner (its ASIC model is unknown or the firmware does not allow it)"
                ));
            };
            if r.contains(&value) {
                return Ok(());
            }
            let mut reason = format!(
                "{what} {value} {unit} is outside the allowed {}–{} {unit} for {model}",
                r.start(),
                r.end()
            );
            if let Some(oc) = oc {
                if oc.contains(&value) && !r.contains(&value) && value > *r.end() {
                    reason.push_str(&format!(
                        "; safety.allow_overclock: true allows up to {} {unit}",
                        oc.end()
                    ));
                }
            }
            Err(reason)
        };
        match command {
            Command::SetFrequency(f) => in_range(
                "frequency",
                *f,
                "MHz",
                &self.frequency_mhz,
                &self.overclock_frequency_mhz,
            ),
            Command::SetCoreVoltage(v) => in_range(
                "core voltage",
                *v,
                "mV",
                &self.core_voltage_mv,
                &self.overclock_core_voltage_mv,
            ),
            Command::SetClock(c) => {
                in_range(
                    "frequency",
                    c.frequency_mhz,
                    "MHz",
                    &self.frequency_mhz,
                    &self.overclock_frequency_mhz,
                )?;
                in_range(
                    "core voltage",
                    c.core_voltage_mv,
                    "mV",
                    &self.core_voltage_mv,
                    &self.overclock_core_voltage_mv,
                )
            }
            Command::SetWorkMode(m) => {
                if self.modes.iter().any(|(_, t)| *t == ModeTarget::Level(*m)) {
                    Ok(())
                } else {
                    Err(format!("work mode {m} is not one this miner offers"))
                }
            }
            Command::SetFanSpeed(p) => match &self.fan_speed {
                None => Err("the fan speed cannot be set on this miner".into()),
                Some(r) if r.contains(p) => Ok(()),
                Some(r) => Err(format!(
                    "fan speed {p} % is outside the allowed {}–{} % (safety.min_fan_speed keeps the chip cooled)",
                    r.start(),
                    r.end()
                )),
            },
            Command::SetAutoFan(_) if self.auto_fan => Ok(()),
            Command::SetAutoFan(_) => Err("automatic fan control is not available on this miner".into()),
            Command::Restart if self.restart => Ok(()),
            Command::Restart => Err("this miner cannot be restarted remotely".into()),
            Command::SetMining(_) if self.pause => Ok(()),
            Command::SetMining(_) => {
                Err("this miner cannot pause mining (ESP-Miner needs v2.14 or later; Avalon Mini 3 and Q have standby)".into())
            }
            Command::SelectPool(label) if self.pools.contains(label) => Ok(()),
            Command::SelectPool(label) => Err(if self.pools.is_empty() {
                format!("pool {label:?} cannot be selected: this miner has no pools to choose from (firmware before v2.15 needs pools: in the config)")
            } else {
                format!("pool {label:?} is not one of {:?}", self.pools)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitOverrides, MinerKind, RawConfig};
    use figment::{providers::Serialized, Figment};

    fn config(allow_oc: bool) -> Config {
        let mut raw = RawConfig::default();
        raw.safety.allow_overclock = allow_oc;
        crate::config::from_figment(&Figment::from(Serialized::defaults(raw))).unwrap()
    }

    fn miner(limits: LimitOverrides) -> MinerConfig {
        MinerConfig {
            name: "bitaxe-1".into(),
            kind: MinerKind::Axeos,
            host: "x".into(),
            totp_secret: None,
            admin_password: None,
            limits,
            power: None,
        }
    }

    fn caps() -> Capabilities {
        Capabilities {
            frequency_options: Some(vec![400, 525, 625]),
            core_voltage_options: Some(vec![1000, 1150, 1250]),
            fan_speed: true,
            auto_fan: true,
            restart: true,
            ..Default::default()
        }
    }

    #[test]
    fn rated_range_without_overclock_and_the_refusal_says_how_to_open_it() {
        let (l, w) = Limits::resolve(
            &config(false),
            &miner(Default::default()),
            Some("BM1370"),
            &caps(),
        );
        assert!(w.is_empty());
        assert!(l.check(&Command::SetFrequency(600)).is_ok());
        // Below the firmware's lowest option (400 MHz).
        assert!(l.check(&Command::SetFrequency(300)).is_err());
        assert_eq!(l.frequency_mhz, Some(400..=625));
        let e = l.check(&Command::SetFrequency(800)).unwrap_err();
        assert!(
            e.contains("800 MHz") && e.contains("625") && e.contains("allow_overclock"),
            "{e}"
        );
        assert!(l
            .check(&Command::SetFrequency(1200))
            .unwrap_err()
            .contains("outside"));
        assert_eq!(
            l.modes.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            ["eco", "standard", "turbo"]
        );
    }

    #[test]
    fn overclock_opens_the_absolute_range_and_the_oc_mode() {
        let (l, _) = Limits::resolve(
            &config(true),
            &miner(Default::default()),
            Some("BM1370"),
            &caps(),
        );
        assert!(l.check(&Command::SetFrequency(800)).is_ok());
        assert!(l.check(&Command::SetFrequency(1001)).is_err());
        assert!(l.modes.iter().any(|m| m.0 == "oc"));
    }

    #[test]
    fn config_limits_narrow_but_never_widen() {
        let over = LimitOverrides {
            frequency: Some(Bounds { min: 450, max: 900 }),
            core_voltage: None,
        };
        let (l, w) = Limits::resolve(&config(false), &miner(over), Some("BM1370"), &caps());
        assert_eq!(l.frequency_mhz, Some(450..=625));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(l.check(&Command::SetFrequency(440)).is_err());
        // eco (400 MHz) no longer fits, so it is not offered.
        assert!(!l.modes.iter().any(|m| m.0 == "eco"));
    }

    #[test]
    fn a_benchmark_teaches_eco_and_turbo_within_the_limits() {
        let (mut l, _) = Limits::resolve(
            &config(false),
            &miner(Default::default()),
            Some("BM1370"),
            &caps(),
        );
        let clock = |f, v| ClockConfig {
            frequency_mhz: f,
            core_voltage_mv: v,
        };
        let c = |f, v| Some(ModeTarget::Clock(clock(f, v)));
        l.learn(c(500, 1060), c(900, 1300));
        let target = |n: &str| l.modes.iter().find(|m| m.0 == n).unwrap().1;
        assert_eq!(target("eco"), ModeTarget::Clock(clock(500, 1060)));
        // 900 MHz is outside the rated range: turbo keeps its preset.
        assert_eq!(target("turbo"), ModeTarget::Clock(clock(600, 1200)));
        assert_eq!(target("standard"), ModeTarget::Clock(clock(525, 1150)));
        assert_eq!(l.mode_of(Some(clock(500, 1060))), Some("eco"));
        // Limits too narrow for the eco preset: the learned eco is offered all the same.
        let over = LimitOverrides {
            frequency: Some(Bounds { min: 500, max: 600 }),
            core_voltage: None,
        };
        let (mut narrow, _) =
            Limits::resolve(&config(false), &miner(over), Some("BM1370"), &caps());
        assert!(!narrow.modes.iter().any(|m| m.0 == "eco"));
        narrow.learn(c(500, 1060), None);
        assert_eq!(
            narrow.modes[0],
            ("eco".to_string(), ModeTarget::Clock(clock(500, 1060)))
        );
    }

    #[test]
    fn a_work_mode_comparison_gives_its_modes_the_eco_and_turbo_roles() {
        let caps = Capabilities {
            work_modes: ["low", "medium", "high"].map(String::from).to_vec(),
            ..Capabilities::default()
        };
        let (mut l, _) = Limits::resolve(&config(false), &miner(Default::default()), None, &caps);
        l.learn(Some(ModeTarget::Level(0)), Some(ModeTarget::Level(2)));
        assert_eq!(
            l.roles,
            vec![("eco".to_string(), 0), ("turbo".to_string(), 2)]
        );
        // The firmware's own modes are what the select offers, unchanged.
        let names: Vec<&str> = l.modes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["low", "medium", "high"]);
        // A level the miner does not have gives no role.
        l.learn(Some(ModeTarget::Level(7)), None);
        assert!(l.roles.is_empty());
    }

    #[test]
    fn unknown_asic_gets_no_clock_control() {
        let (l, w) = Limits::resolve(
            &config(true),
            &miner(Default::default()),
            Some("BM9999"),
            &caps(),
        );
        assert!(l.frequency_mhz.is_none() && l.modes.is_empty());
        assert_eq!(w.len(), 1);
        assert!(l.check(&Command::SetFrequency(500)).is_err());
    }

    #[test]
    fn fan_floor() {
        let (l, _) = Limits::resolve(
            &config(false),
            &miner(Default::default()),
            Some("BM1370"),
            &caps(),
        );
        assert!(l
            .check(&Command::SetFanSpeed(5))
            .unwrap_err()
            .contains("min_fan_speed"));
        assert!(l.check(&Command::SetFanSpeed(100)).is_ok());
        assert!(l.check(&Command::SetMining(false)).is_err());
    }
}
