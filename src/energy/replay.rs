//! `miner2mqtt replay`: modelled miners through recorded price days, minute by minute, under
//! each strategy — always on, bands, bands + champion — and against the limit: the cheapest
//! cost of the same terahashes with the day's prices known in advance, choosing per slot and
//! per miner among its modes and off (a per-slot choice minimising cost − λ·TH, swept over λ,
//! traces the frontier). The strategy is the daemon's own ([`Strategy`]), on a replayed clock.

use super::config::EnergyConfig;
use super::prices::{uk_day, PriceBook, PriceSlot};
use super::strategy::{Action, MinerInfo, MinerStatus, Strategy};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// One mode of a modelled miner.
#[derive(Debug, Clone, Serialize)]
pub struct ModeModel {
    pub name: String,
    pub watts: f64,
    pub ghs: f64,
}

/// A miner as the replay models it.
#[derive(Debug, Clone, Serialize)]
pub struct MinerModel {
    pub name: String,
    pub family: &'static str,
    /// Lowest first.
    pub modes: Vec<ModeModel>,
    /// The mode it runs in when nothing manages it (its factory default).
    pub default_mode: usize,
    /// Watts when off: 0 with a plug, the standby draw when its firmware can pause; `None`
    /// when it cannot be switched off.
    pub off_watts: Option<f64>,
    pub plug: bool,
}

/// The strategies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    AlwaysOn,
    Bands,
    BandsChampion,
}

impl Policy {
    pub fn label(self) -> &'static str {
        match self {
            Policy::AlwaysOn => "always on",
            Policy::Bands => "bands",
            Policy::BandsChampion => "bands + champion",
        }
    }
}

/// What a fleet did over the replayed days.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    pub kwh: f64,
    pub cost_gbp: f64,
    pub terahashes: f64,
    /// Mode changes and switches off or on.
    pub changes: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.kwh += o.kwh;
        self.cost_gbp += o.cost_gbp;
        self.terahashes += o.terahashes;
        self.changes += o.changes;
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    mode: usize,
    /// Paused or switched off at its plug.
    off: bool,
}

/// The whole UK days the slots cover (a day with a gap is left out, and named; a slot given
/// twice counts once, as in the daemon's book).
pub fn whole_days(slots: &[PriceSlot]) -> (Vec<Vec<PriceSlot>>, Vec<String>) {
    let mut book = PriceBook::new();
    book.insert(slots.iter().cloned());
    let uk_days: std::collections::BTreeSet<_> = slots.iter().map(|s| uk_day(s.start)).collect();
    let (mut days, mut skipped) = (Vec::new(), Vec::new());
    for (from, to) in uk_days {
        let day: Vec<PriceSlot> = book.range(from, to).cloned().collect();
        let whole = book.at(from).is_some_and(|s| s.start == from)
            && book.known_until(from).is_some_and(|end| end >= to);
        if whole {
            days.push(day);
        } else {
            skipped.push(format!(
                "{} ({} slots, not a whole day)",
                uk_date(from),
                day.len()
            ));
        }
    }
    (days, skipped)
}

/// The UK calendar date of an instant.
fn uk_date(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Europe::London)
        .format("%Y-%m-%d")
        .to_string()
}

/// One UK day, minute by minute, under `policy`.
pub fn run_day(
    policy: Policy,
    config: &EnergyConfig,
    fleet: &[MinerModel],
    day: &[PriceSlot],
) -> Totals {
    let (from, to) = uk_day(day[0].start);
    let mut book = PriceBook::new();
    book.insert(day.iter().cloned());
    let mut states: Vec<State> = fleet
        .iter()
        .map(|m| State {
            mode: m.default_mode,
            off: false,
        })
        .collect();
    let mut strategy = (policy != Policy::AlwaysOn).then(|| {
        let mut s = Strategy::new(config.clone());
        s.champion_enabled = policy == Policy::BandsChampion;
        s.book_mut().insert(day.to_vec());
        for (index, m) in fleet.iter().enumerate() {
            s.on_info(MinerInfo {
                index,
                name: m.name.clone(),
                family: m.family,
                modes: m.modes.iter().map(|x| x.name.clone()).collect(),
                roles: Vec::new(),
                can_pause: m.off_watts.is_some() && !m.plug,
                plug: m.plug,
            });
        }
        s
    });
    let mut totals = Totals::default();
    let mut now = from;
    while now < to {
        if let Some(s) = strategy.as_mut() {
            for (index, (m, st)) in fleet.iter().zip(&states).enumerate() {
                let (w, gh) = figures(m, st);
                let plugged_off = m.plug && st.off;
                s.on_status(MinerStatus {
                    index,
                    online: !plugged_off,
                    mode: Some(st.mode),
                    paused: Some(st.off && !m.plug),
                    powered_off: plugged_off,
                    sample: (!plugged_off).then_some((now, Some(w), Some(gh))),
                });
            }
            for action in s.tick(now) {
                if let Action::Command {
                    index,
                    property,
                    value,
                } = action
                {
                    let st = &mut states[index];
                    let before = (st.mode, st.off);
                    match property {
                        "mode" => {
                            if let Some(i) = fleet[index].modes.iter().position(|x| x.name == value)
                            {
                                st.mode = i;
                            }
                        }
                        "mining" | "power" => st.off = value == "OFF",
                        _ => {}
                    }
                    if (st.mode, st.off) != before {
                        totals.changes += 1;
                    }
                }
            }
        }
        let price = book.at(now).map_or(0.0, |s| s.p_per_kwh);
        for (m, st) in fleet.iter().zip(&states) {
            let (w, gh) = figures(m, st);
            let kwh = w / 60_000.0;
            totals.kwh += kwh;
            totals.cost_gbp += kwh * price / 100.0;
            totals.terahashes += gh * 60.0 / 1000.0;
        }
        now += Duration::minutes(1);
    }
    totals
}

fn figures(m: &MinerModel, st: &State) -> (f64, f64) {
    match (st.off, m.off_watts) {
        (true, Some(w)) => (w, 0.0),
        _ => {
            let mode = &m.modes[st.mode];
            (mode.watts, mode.ghs)
        }
    }
}

/// The (watts, GH/s) a miner can choose from: each mode, and off where it can be off.
fn options(m: &MinerModel) -> Vec<(f64, f64)> {
    let mut o: Vec<(f64, f64)> = m.modes.iter().map(|x| (x.watts, x.ghs)).collect();
    if let Some(w) = m.off_watts {
        o.push((w, 0.0));
    }
    o
}

/// The limit: points (terahashes, £) of the cheapest cost for each amount of work, over all the
/// days, from the per-slot choice minimising cost − λ·TH for λ swept from 0 to far above any
/// price per TH. Sorted by terahashes; the frontier between two points is their straight line.
pub fn frontier(fleet: &[MinerModel], days: &[Vec<PriceSlot>]) -> Vec<(f64, f64)> {
    let opts: Vec<Vec<(f64, f64)>> = fleet.iter().map(options).collect();
    // £ per TH: 0, then 1e-9 to 1e-2 at 60 steps a decade, then 1 (far above any price per TH:
    // every miner at its fastest).
    let lambdas = std::iter::once(0.0)
        .chain((0..=420).map(|i| 10f64.powf(-9.0 + i as f64 / 60.0)))
        .chain(std::iter::once(1.0));
    let mut points: Vec<(f64, f64)> = lambdas
        .map(|lambda| {
            let (mut th, mut cost) = (0.0, 0.0);
            for slot in days.iter().flatten() {
                let hours = (slot.end - slot.start).num_seconds() as f64 / 3600.0;
                for o in &opts {
                    let (c, t) = o
                        .iter()
                        .map(|&(w, gh)| {
                            (
                                w * hours / 1000.0 * slot.p_per_kwh / 100.0,
                                gh * hours * 3.6,
                            )
                        })
                        .min_by(|a, b| (a.0 - lambda * a.1).total_cmp(&(b.0 - lambda * b.1)))
                        .unwrap_or((0.0, 0.0));
                    cost += c;
                    th += t;
                }
            }
            (th, cost)
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points.dedup_by(|a, b| (a.0 - b.0).abs() < 1e-9);
    points
}

/// The frontier's cost at `terahashes` (`None` beyond what the fleet can do).
pub fn limit_cost(frontier: &[(f64, f64)], terahashes: f64) -> Option<f64> {
    let first = frontier.first()?;
    if terahashes <= first.0 {
        return Some(first.1);
    }
    frontier.windows(2).find_map(|w| {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        (terahashes >= t0 && terahashes <= t1).then(|| {
            if t1 - t0 < 1e-12 {
                c0
            } else {
                c0 + (c1 - c0) * (terahashes - t0) / (t1 - t0)
            }
        })
    })
}

/// One strategy's row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub strategy: Policy,
    #[serde(flatten)]
    pub totals: Totals,
    pub gbp_per_th: f64,
    pub changes_per_miner_day: f64,
    /// The limit's cost for the same terahashes.
    pub limit_cost_gbp: Option<f64>,
    /// (cost − limit) / limit, percent.
    pub gap_percent: Option<f64>,
}

/// The report over all the days.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub days: Vec<String>,
    pub skipped: Vec<String>,
    pub miners: Vec<MinerModel>,
    pub rows: Vec<Row>,
}

/// Runs every strategy over every whole day in `slots`.
pub fn report(config: &EnergyConfig, fleet: &[MinerModel], slots: &[PriceSlot]) -> Report {
    let (days, skipped) = whole_days(slots);
    let edge = frontier(fleet, &days);
    let n = (fleet.len() * days.len()).max(1) as f64;
    let rows = [Policy::AlwaysOn, Policy::Bands, Policy::BandsChampion]
        .into_iter()
        .map(|policy| {
            let mut totals = Totals::default();
            for day in &days {
                totals.add(&run_day(policy, config, fleet, day));
            }
            let limit = limit_cost(&edge, totals.terahashes);
            Row {
                strategy: policy,
                gbp_per_th: totals.cost_gbp / totals.terahashes.max(1e-12),
                changes_per_miner_day: totals.changes as f64 / n,
                limit_cost_gbp: limit,
                gap_percent: limit
                    .filter(|l| *l > 0.0)
                    .map(|l| (totals.cost_gbp - l) / l * 100.0),
                totals,
            }
        })
        .collect();
    Report {
        days: days.iter().map(|d| uk_date(uk_day(d[0].start).0)).collect(),
        skipped,
        miners: fleet.to_vec(),
        rows,
    }
}

/// An ESP-Miner board as the replay models it: its ASIC's eco / standard / turbo presets
/// through the simulator's chip physics; off is 0 W on a plug, the idle draw where the
/// firmware pauses.
fn esp_model(name: &str, spec: &crate::sim::axeos::DeviceSpec, plug: bool) -> MinerModel {
    let (chip, chips) = (spec.chip, spec.chips);
    let profile = crate::miner::asic::profile(chip.model).expect("the simulator's ASICs are known");
    let modes = profile
        .presets
        .iter()
        .filter(|p| p.name != "oc")
        .map(|p| {
            let (watts, ghs) = chip.steady(chips, p.frequency_mhz, p.core_voltage_mv);
            ModeModel {
                name: p.name.to_string(),
                watts,
                ghs,
            }
        })
        .collect();
    let idle = chip.board_watts(chips, 0.0, 0.0, false);
    MinerModel {
        name: name.into(),
        family: "axeos",
        default_mode: 1,
        modes,
        off_watts: if plug {
            Some(0.0)
        } else {
            spec.firmware.pauses().then_some(idle)
        },
        plug,
    }
}

/// An Avalon as the replay models it: its work modes, and its standby where it has one.
fn avalon_model(name: &str, model: crate::sim::cgminer::Model) -> MinerModel {
    use crate::miner::avalon::Model as Adapter;
    use crate::sim::cgminer::{Model, STANDBY_W};
    // The mode names are the adapter's, as the daemon offers them.
    let names = match model {
        Model::Nano3 => Adapter::Nano3,
        Model::Nano3s => Adapter::Nano3s,
        Model::Mini3 => Adapter::Mini3,
        Model::Q => Adapter::Q,
        Model::S19pro => Adapter::Other(String::new()),
    }
    .work_modes();
    MinerModel {
        name: name.into(),
        family: "avalon",
        modes: model
            .modes()
            .iter()
            .zip(names)
            .map(|(&(ths, watts), n)| ModeModel {
                name: n.to_string(),
                watts,
                ghs: ths * 1000.0,
            })
            .collect(),
        default_mode: 1,
        off_watts: model.soft_off().then_some(STANDBY_W),
        plug: false,
    }
}

/// The demo's fleet, from the demo's own device specs. The read-only Antminer and the NMMiner
/// have nothing to choose, so they are left out.
pub fn demo_fleet() -> Vec<MinerModel> {
    let esp = crate::demo::esp_miners()
        .into_iter()
        .map(|(name, spec)| esp_model(name, &spec, name == crate::demo::PLUGGED));
    let avalons = crate::demo::AVALONS
        .into_iter()
        .map(|(name, model)| avalon_model(name, model));
    esp.chain(avalons).collect()
}

/// A configured fleet, modelled by family (the replay cannot read a chip offline): ESP-Miner
/// boards as a Bitaxe Gamma, Avalons as a Nano 3S; a plug makes a miner switchable to 0 W.
/// Antminers (read-only) and NMMiners have nothing to choose and are left out.
pub fn config_fleet(config: &crate::config::Config) -> Vec<MinerModel> {
    use crate::config::MinerKind;
    let gamma = crate::sim::axeos::DeviceSpec::gamma(0, crate::sim::axeos::Firmware::V2_12);
    config
        .miners
        .iter()
        .filter_map(|m| {
            let plug = m.power.is_some();
            let mut model = match m.kind {
                MinerKind::Axeos => esp_model(&m.name, &gamma, plug),
                MinerKind::Avalon => avalon_model(&m.name, crate::sim::cgminer::Model::Nano3s),
                MinerKind::Antminer | MinerKind::Nmminer => return None,
            };
            if plug {
                model.plug = true;
                model.off_watts = Some(0.0);
            }
            Some(model)
        })
        .collect()
}

/// Reads price files: Octopus `standard-unit-rates` pages, or `[{"start","end","value"}]` as
/// `bridge/prices/set` takes them.
pub fn read_prices(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<PriceSlot>> {
    let mut slots = Vec::new();
    for path in paths {
        let body = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        match super::octopus::parse_rates_page(&body) {
            Ok((page, _)) if !page.is_empty() => slots.extend(page),
            octopus => match crate::daemon::energy::parse_pushed_prices(&body) {
                Ok(pushed) => slots.extend(pushed),
                Err(pushed) => anyhow::bail!(
                    "{} is neither an Octopus rates page ({}) nor a price list ({pushed})",
                    path.display(),
                    match octopus {
                        Ok(_) => "it has no results".to_string(),
                        Err(e) => e,
                    }
                ),
            },
        }
    }
    Ok(slots)
}

pub use super::show::Format;

/// `miner2mqtt replay`.
pub fn run(
    prices: &[std::path::PathBuf],
    config: Option<&std::path::Path>,
    format: Format,
) -> anyhow::Result<()> {
    let slots = read_prices(prices)?;
    let demo_bands = || {
        super::config::validate(Some(crate::demo::demo_energy("http://127.0.0.1")))
            .map_err(|(k, v, h)| anyhow::anyhow!("{k}: {v}: {h}"))
    };
    let (energy, fleet, whose) = match config {
        Some(path) => {
            let c = crate::config::load(path, true)?;
            let fleet = config_fleet(&c);
            let energy = if c.energy.has_strategy() {
                c.energy.clone()
            } else {
                demo_bands()?
            };
            (
                energy,
                fleet,
                format!(
                    "{} (ESP-Miner boards modelled as a Bitaxe Gamma, Avalons as a Nano 3S)",
                    path.display()
                ),
            )
        }
        None => (demo_bands()?, demo_fleet(), "the demo fleet".to_string()),
    };
    if fleet.is_empty() {
        anyhow::bail!("no miner in the fleet has modes to choose from (Antminers are read-only, NMMiners have no modes)");
    }
    let report = report(&energy, &fleet, &slots);
    if report.days.is_empty() {
        anyhow::bail!(
            "no whole UK day in the price files ({}); a day needs every slot from 00:00 to 24:00 UK time",
            report.skipped.join(", ")
        );
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} day(s): {}; {} miner(s) from {whose}",
        report.days.len(),
        report.days.join(", "),
        fleet.len()
    );
    let bands: Vec<String> = energy
        .bands
        .iter()
        .map(|b| {
            let below = b.below.map(|p| format!(" <{p}p")).unwrap_or_default();
            let champion = if b.champion { " (champion)" } else { "" };
            let target = b.target.get("default").map(String::as_str).unwrap_or("-");
            format!("{}{below} {target}{champion}", b.name)
        })
        .collect();
    println!("bands: {}", bands.join(" | "));
    for s in &report.skipped {
        println!("skipped: {s}");
    }
    println!(
        "\n{:<18} {:>9} {:>9} {:>12} {:>8} {:>13} {:>9} {:>7}",
        "strategy", "kWh", "£", "TH", "£/PH", "changes/m/day", "limit £", "gap"
    );
    for r in &report.rows {
        println!(
            "{:<18} {:>9.2} {:>9.3} {:>12.0} {:>8.5} {:>13.1} {:>9} {:>7}",
            r.strategy.label(),
            r.totals.kwh,
            r.totals.cost_gbp,
            r.totals.terahashes,
            r.gbp_per_th * 1000.0,
            r.changes_per_miner_day,
            r.limit_cost_gbp.map_or("-".into(), |l| format!("{l:.3}")),
            r.gap_percent.map_or("-".into(), |g| format!("{g:+.1}%")),
        );
    }
    println!("\nlimit: the cheapest cost of the same terahashes with each day's prices known in advance, choosing per half hour and per miner among its modes and off; gap = cost above it");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat_day(price: f64) -> Vec<PriceSlot> {
        let (from, _) = uk_day("2024-01-08T12:00:00Z".parse().unwrap());
        (0..48)
            .map(|i| PriceSlot {
                start: from + Duration::minutes(30 * i),
                end: from + Duration::minutes(30 * (i + 1)),
                p_per_kwh: price,
                kind: super::super::prices::SlotKind::Actual,
            })
            .collect()
    }

    fn miner() -> MinerModel {
        MinerModel {
            name: "m".into(),
            family: "axeos",
            modes: vec![
                ModeModel {
                    name: "eco".into(),
                    watts: 10.0,
                    ghs: 1000.0,
                },
                ModeModel {
                    name: "turbo".into(),
                    watts: 30.0,
                    ghs: 1500.0,
                },
            ],
            default_mode: 1,
            off_watts: Some(0.0),
            plug: true,
        }
    }

    #[test]
    fn always_on_costs_what_the_arithmetic_says_and_the_limit_below_it() {
        let day = flat_day(20.0);
        let t = run_day(Policy::AlwaysOn, &EnergyConfig::default(), &[miner()], &day);
        // 30 W for 24 h = 0.72 kWh at 20 p = £0.144; 1.5 TH/s for 86 400 s.
        assert!((t.kwh - 0.72).abs() < 1e-9, "{t:?}");
        assert!((t.cost_gbp - 0.144).abs() < 1e-9, "{t:?}");
        assert!((t.terahashes - 129_600.0).abs() < 1e-6, "{t:?}");
        let edge = frontier(&[miner()], &[day]);
        // The same work costs no less at the limit (turbo all day is the only way to it).
        let at_full = limit_cost(&edge, t.terahashes).unwrap();
        assert!((at_full - 0.144).abs() < 1e-9);
        // Eco all day: 2/3 of the work for 1/3 of the cost.
        let eco = limit_cost(&edge, 86_400.0).unwrap();
        assert!((eco - 0.048).abs() < 1e-9, "{eco}");
        assert_eq!(limit_cost(&edge, 0.0), Some(0.0));
    }
}
