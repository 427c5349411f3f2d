//! What we know about each ASIC model: cores per chip, the clock range the manufacturer's
//! firmware offers (rated), the range we will ever send with `allow_overclock: true` (absolute),
//! and the built-in mode presets. These tables are the root of the safety limits.
//!
//! Numbers come from ESP-Miner's own frequency/voltage option lists and defaults per ASIC; the
//! absolute ceilings sit where community overclocking reports chips degrading or shutting down.

use std::ops::RangeInclusive;

/// A named clock setting offered as a mode in Home Assistant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPreset {
    pub name: &'static str,
    pub frequency_mhz: u32,
    pub core_voltage_mv: u32,
}

/// Everything the safety limits and the simulator need to know about one ASIC model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsicProfile {
    pub model: &'static str,
    /// Small cores per chip; hashrate ≈ frequency × small cores × chips / 1000 GH/s.
    pub small_cores: u32,
    pub default_frequency_mhz: u32,
    pub default_core_voltage_mv: u32,
    /// The range the stock firmware offers without its overclock switch.
    pub rated_frequency_mhz: RangeInclusive<u32>,
    pub rated_core_voltage_mv: RangeInclusive<u32>,
    /// The range never exceeded, even with `allow_overclock: true`.
    pub absolute_frequency_mhz: RangeInclusive<u32>,
    pub absolute_core_voltage_mv: RangeInclusive<u32>,
    /// eco / standard / turbo / oc. `oc` lies outside the rated range and is only offered with
    /// `allow_overclock: true`.
    pub presets: [ClockPreset; 4],
}

const fn preset(name: &'static str, frequency_mhz: u32, core_voltage_mv: u32) -> ClockPreset {
    ClockPreset {
        name,
        frequency_mhz,
        core_voltage_mv,
    }
}

/// The ASIC models ESP-Miner boards ship with.
pub fn profiles() -> [AsicProfile; 4] {
    [
        AsicProfile {
            model: "BM1397",
            small_cores: 672,
            default_frequency_mhz: 425,
            default_core_voltage_mv: 1400,
            rated_frequency_mhz: 100..=650,
            rated_core_voltage_mv: 1100..=1500,
            absolute_frequency_mhz: 100..=800,
            absolute_core_voltage_mv: 1100..=1550,
            presets: [
                preset("eco", 350, 1300),
                preset("standard", 425, 1400),
                preset("turbo", 500, 1450),
                preset("oc", 700, 1500),
            ],
        },
        AsicProfile {
            model: "BM1366",
            small_cores: 894,
            default_frequency_mhz: 485,
            default_core_voltage_mv: 1200,
            rated_frequency_mhz: 100..=575,
            rated_core_voltage_mv: 1000..=1300,
            absolute_frequency_mhz: 100..=750,
            absolute_core_voltage_mv: 1000..=1350,
            presets: [
                preset("eco", 400, 1100),
                preset("standard", 485, 1200),
                preset("turbo", 575, 1250),
                preset("oc", 650, 1320),
            ],
        },
        AsicProfile {
            model: "BM1368",
            small_cores: 1276,
            default_frequency_mhz: 490,
            default_core_voltage_mv: 1166,
            rated_frequency_mhz: 100..=575,
            rated_core_voltage_mv: 1000..=1300,
            absolute_frequency_mhz: 100..=800,
            absolute_core_voltage_mv: 1000..=1350,
            presets: [
                preset("eco", 425, 1100),
                preset("standard", 490, 1166),
                preset("turbo", 575, 1250),
                preset("oc", 650, 1300),
            ],
        },
        AsicProfile {
            model: "BM1370",
            small_cores: 2040,
            default_frequency_mhz: 525,
            default_core_voltage_mv: 1150,
            rated_frequency_mhz: 100..=625,
            rated_core_voltage_mv: 1000..=1250,
            absolute_frequency_mhz: 100..=1000,
            absolute_core_voltage_mv: 1000..=1350,
            presets: [
                preset("eco", 400, 1060),
                preset("standard", 525, 1150),
                preset("turbo", 600, 1200),
                preset("oc", 800, 1280),
            ],
        },
    ]
}

/// The profile for a model name as the firmware reports it (`"BM1370"`), if we know it.
pub fn profile(model: &str) -> Option<AsicProfile> {
    profiles()
        .into_iter()
        .find(|p| p.model.eq_ignore_ascii_case(model.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_lie_within_absolute_limits_and_only_oc_outside_rated() {
        for p in profiles() {
            for preset in p.presets {
                assert!(
                    p.absolute_frequency_mhz.contains(&preset.frequency_mhz),
                    "{p:?}"
                );
                assert!(
                    p.absolute_core_voltage_mv.contains(&preset.core_voltage_mv),
                    "{p:?}"
                );
                let rated = p.rated_frequency_mhz.contains(&preset.frequency_mhz)
                    && p.rated_core_voltage_mv.contains(&preset.core_voltage_mv);
                assert_eq!(rated, preset.name != "oc", "{} {}", p.model, preset.name);
            }
            assert!(p.rated_frequency_mhz.contains(&p.default_frequency_mhz));
            assert!(p.rated_core_voltage_mv.contains(&p.default_core_voltage_mv));
        }
    }

    #[test]
    fn unknown_models_have_no_profile() {
        assert!(profile("BM9999").is_none());
        assert_eq!(profile(" bm1370 ").unwrap().small_cores, 2040);
    }
}
