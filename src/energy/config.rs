//! The `energy:` section: where prices come from, the bands and how the strategy moves between
//! them. Raw (as written) and validated forms; every error names the key and what to write.

use super::bands::Band;
use super::octopus::REGIONS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Octopus Agile over the public API.
    Octopus,
    /// A fixed price or time-of-use periods from the config.
    Schedule,
    /// Prices pushed to `<base>/bridge/prices/set`.
    Mqtt,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOctopus {
    /// The region letter, A–P (the last letter of your tariff code).
    pub region: Option<String>,
    /// `auto` (the newest open Agile product) or a product code such as AGILE-24-10-01.
    pub product: String,
    pub base_url: String,
}

impl Default for RawOctopus {
    fn default() -> Self {
        RawOctopus {
            region: None,
            product: "auto".into(),
            base_url: "https://api.octopus.energy".into(),
        }
    }
}

/// A time-of-use period in UK local time: `{ from: "00:30", to: "04:30", price: 7.5 }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeriod {
    pub from: String,
    pub to: String,
    pub price: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSchedule {
    /// The price outside every period (or all day), p/kWh.
    pub price: Option<f64>,
    pub periods: Vec<RawPeriod>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBand {
    pub name: String,
    #[serde(default)]
    pub below: Option<f64>,
    pub target: BTreeMap<String, String>,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub champion: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEnergy {
    pub source: SourceKind,
    pub octopus: RawOctopus,
    pub schedule: RawSchedule,
    /// The band used whenever the current price is unknown; the dearest band when omitted.
    pub safe_band: Option<String>,
    /// p/kWh a price must be below a band's boundary before a cheaper band is chosen.
    pub hysteresis: f64,
    #[serde(with = "humantime_serde")]
    pub min_dwell: Duration,
    /// How long a change made by the user holds the strategy off that miner.
    #[serde(with = "humantime_serde")]
    pub manual_hold: Duration,
    /// The window of history over which miners' efficiency is compared for the champion.
    #[serde(with = "humantime_serde")]
    pub champion_window: Duration,
    pub bands: Vec<RawBand>,
}

impl Default for RawEnergy {
    fn default() -> Self {
        RawEnergy {
            source: SourceKind::Octopus,
            octopus: RawOctopus::default(),
            schedule: RawSchedule::default(),
            safe_band: None,
            hysteresis: 0.5,
            min_dwell: Duration::from_secs(30 * 60),
            manual_hold: Duration::from_secs(2 * 3600),
            champion_window: Duration::from_secs(6 * 3600),
            bands: Vec::new(),
        }
    }
}

/// Where prices come from, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Octopus {
        region: char,
        /// `None`: discovered from the products list.
        product: Option<String>,
        base_url: String,
    },
    /// (from, to, p/kWh) as UK minutes of the day, and the price outside them.
    Schedule {
        price: Option<f64>,
        periods: Vec<(u32, u32, f64)>,
    },
    Mqtt,
}

/// The validated energy settings.
#[derive(Debug, Clone)]
pub struct EnergyConfig {
    /// `None` without an `energy:` section: energy is metered, nothing is priced.
    pub source: Option<Source>,
    pub bands: Vec<Band>,
    pub safe_band: usize,
    pub hysteresis: f64,
    pub min_dwell: Duration,
    pub manual_hold: Duration,
    pub champion_window: Duration,
}

/// (key, value shown, what to do).
pub type Problem = (String, String, String);

fn problem(key: &str, value: impl std::fmt::Display, hint: &str) -> Problem {
    (key.to_string(), value.to_string(), hint.to_string())
}

/// "07:30" → 450.
fn minutes_of_day(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

impl Default for EnergyConfig {
    /// No `energy:` section: meters only.
    fn default() -> Self {
        let raw = RawEnergy::default();
        EnergyConfig {
            source: None,
            bands: Vec::new(),
            safe_band: 0,
            hysteresis: raw.hysteresis,
            min_dwell: raw.min_dwell,
            manual_hold: raw.manual_hold,
            champion_window: raw.champion_window,
        }
    }
}

impl EnergyConfig {
    /// Whether bands are configured (the strategy runs).
    pub fn has_strategy(&self) -> bool {
        !self.bands.is_empty()
    }

    pub fn has_champion(&self) -> bool {
        self.bands.iter().any(|b| b.champion)
    }
}

/// Checks the raw section; no section means energy is metered and nothing else.
pub fn validate(raw: Option<RawEnergy>) -> Result<EnergyConfig, Problem> {
    let Some(raw) = raw else {
        return Ok(EnergyConfig::default());
    };
    let source = match raw.source {
        SourceKind::Octopus => {
            let o = &raw.octopus;
            let region = o.region.as_deref().map(str::trim).unwrap_or_default();
            let letter = region
                .strip_prefix('_')
                .unwrap_or(region)
                .to_ascii_uppercase();
            let region = match letter.chars().collect::<Vec<_>>()[..] {
                [c] if REGIONS.contains(c) => c,
                _ => {
                    return Err(problem(
                        "energy.octopus.region",
                        format!("{:?}", o.region.clone().unwrap_or_default()),
                        "your region letter, one of A B C D E F G H J K L M N P (the last letter of your tariff code, e.g. J in E-1R-AGILE-24-10-01-J)",
                    ))
                }
            };
            let product = o.product.trim();
            let product = if product.is_empty() || product.eq_ignore_ascii_case("auto") {
                None
            } else if product
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                Some(product.to_ascii_uppercase())
            } else {
                return Err(problem(
                    "energy.octopus.product",
                    format!("{product:?}"),
                    "auto, or a product code such as AGILE-24-10-01",
                ));
            };
            let url = o.base_url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(problem(
                    "energy.octopus.base_url",
                    format!("{url:?}"),
                    "an http:// or https:// URL; https://api.octopus.energy unless testing",
                ));
            }
            Source::Octopus {
                region,
                product,
                base_url: url.trim_end_matches('/').to_string(),
            }
        }
        SourceKind::Schedule => {
            let s = &raw.schedule;
            if s.price.is_none() && s.periods.is_empty() {
                return Err(problem(
                    "energy.schedule",
                    "empty",
                    "give price: (p/kWh all day) and/or periods: [{ from: \"00:30\", to: \"04:30\", price: 7.5 }]",
                ));
            }
            let mut periods = Vec::new();
            for (i, p) in s.periods.iter().enumerate() {
                let key = format!("energy.schedule.periods[{i}]");
                let (Some(from), Some(to)) = (minutes_of_day(&p.from), minutes_of_day(&p.to))
                else {
                    return Err(problem(
                        &key,
                        format!("from {:?} to {:?}", p.from, p.to),
                        "times are UK local HH:MM, e.g. from: \"00:30\", to: \"04:30\"",
                    ));
                };
                if from == to || !p.price.is_finite() {
                    return Err(problem(
                        &key,
                        format!("{} to {} at {}", p.from, p.to, p.price),
                        "a period needs two different times and a price in p/kWh",
                    ));
                }
                periods.push((from, to, p.price));
            }
            if let Some(p) = s.price.filter(|p| !p.is_finite()) {
                return Err(problem("energy.schedule.price", p, "a price in p/kWh"));
            }
            Source::Schedule {
                price: s.price,
                periods,
            }
        }
        SourceKind::Mqtt => Source::Mqtt,
    };

    let mut bands: Vec<Band> = Vec::new();
    let last = raw.bands.len().saturating_sub(1);
    for (i, b) in raw.bands.into_iter().enumerate() {
        let key = |f: &str| format!("energy.bands[{i}].{f}");
        let name = b.name.trim().to_string();
        if name.is_empty() || bands.iter().any(|o| o.name == name) {
            return Err(problem(
                &key("name"),
                format!("{name:?}"),
                "each band needs its own name",
            ));
        }
        match (b.below, i == last) {
            (None, false) => {
                return Err(problem(
                    &key("below"),
                    "missing",
                    "every band but the last needs below: (its upper price in p/kWh)",
                ))
            }
            (Some(v), _) if !v.is_finite() => {
                return Err(problem(&key("below"), v, "a price in p/kWh"))
            }
            (Some(v), _) => {
                if let Some(prev) = bands.last().and_then(|p| p.below) {
                    if v <= prev {
                        return Err(problem(
                            &key("below"),
                            v,
                            &format!("bands go from cheap to dear: this one must be above the previous band's {prev}"),
                        ));
                    }
                }
            }
            (None, true) => {}
        }
        if b.target.is_empty() {
            return Err(problem(
                &key("target"),
                "empty",
                "say what miners do in this band, e.g. target: { default: eco } (a mode name, or \"off\")",
            ));
        }
        for (who, what) in &b.target {
            if what.trim().is_empty() {
                return Err(problem(
                    &key(&format!("target.{who}")),
                    "empty",
                    "a mode name of that miner, or \"off\"",
                ));
            }
        }
        if b.champion && bands.iter().any(|o| o.champion) {
            return Err(problem(
                &key("champion"),
                true,
                "only one band can be the champion band",
            ));
        }
        bands.push(Band {
            name,
            below: b.below,
            target: b
                .target
                .into_iter()
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
            pool: b
                .pool
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty()),
            champion: b.champion,
        });
    }
    let safe_band = match &raw.safe_band {
        None => bands.len().saturating_sub(1),
        Some(name) => bands
            .iter()
            .position(|b| b.name == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = bands.iter().map(|b| b.name.as_str()).collect();
                problem(
                    "energy.safe_band",
                    format!("{name:?}"),
                    &format!("the name of one of the bands: {}", names.join(", ")),
                )
            })?,
    };
    if !(0.0..=50.0).contains(&raw.hysteresis) {
        return Err(problem(
            "energy.hysteresis",
            raw.hysteresis,
            "p/kWh, 0 to 50; 0.5 suits Agile",
        ));
    }
    let day = Duration::from_secs(86_400);
    for (key, d, max) in [
        ("energy.min_dwell", raw.min_dwell, day),
        ("energy.manual_hold", raw.manual_hold, 7 * day),
        ("energy.champion_window", raw.champion_window, 7 * day),
    ] {
        if d > max {
            return Err(problem(
                key,
                humantime::format_duration(d),
                &format!("at most {}", humantime::format_duration(max)),
            ));
        }
    }
    if raw.champion_window < Duration::from_secs(30 * 60) {
        return Err(problem(
            "energy.champion_window",
            humantime::format_duration(raw.champion_window),
            "at least 30m: a champion needs 30 minutes of samples",
        ));
    }
    Ok(EnergyConfig {
        source: Some(source),
        bands,
        safe_band,
        hysteresis: raw.hysteresis,
        min_dwell: raw.min_dwell,
        manual_hold: raw.manual_hold,
        champion_window: raw.champion_window,
    })
}
