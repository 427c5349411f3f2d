//! The strategy: each miner in the mode its price band asks for, and in the champion band only
//! the most efficient miner running. Synchronous and clock-free — every call takes `now` — so
//! tests and `replay` run whole days in milliseconds; `energy::task` drives it in the daemon.
//!
//! It never talks to a miner: it returns commands (origin `strategy`) that go through the same
//! validated path as Home Assistant's, where the arbiter may still refuse them (a user hold, a
//! safety hold, a running benchmark), and events for `bridge/event`.

use super::bands::{BandTracker, Basis};
use super::config::EnergyConfig;
use super::prices::{slot_start, PriceBook};
use super::rolling::{Efficiency, Rolling};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::HashSet;

/// How often targets are re-applied where a miner drifted.
pub const RECONCILE_EVERY: Duration = Duration::minutes(5);
/// How long a champion may take to hash after being told to.
const CHAMPION_GRACE: Duration = Duration::minutes(5);
/// Failures in a row after which the next best miner is promoted.
const CHAMPION_FAILURES: u32 = 3;
/// Samples a champion candidate needs in the window.
const CHAMPION_MIN_SECONDS: f64 = 30.0 * 60.0;

/// What a miner is: sent when it is first read and whenever that changes.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerInfo {
    pub index: usize,
    pub name: String,
    /// `axeos`, `avalon`, `antminer`, `nmminer`: band targets may name a family.
    pub family: &'static str,
    /// Mode names, lowest first.
    pub modes: Vec<String>,
    /// `eco` / `turbo` as a benchmark found them among a firmware's own work modes (most
    /// efficient, fastest), by index into `modes`; a band's `eco` or `turbo` means these.
    pub roles: Vec<(String, usize)>,
    pub can_pause: bool,
    /// It has a smart plug: `off` switches the plug.
    pub plug: bool,
}

/// How a miner is now: sent on every reading and availability change, so it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinerStatus {
    pub index: usize,
    pub online: bool,
    /// The mode it is in, as an index into its info's modes.
    pub mode: Option<usize>,
    pub paused: Option<bool>,
    /// Switched off at its plug on purpose (so not online, but not failing either).
    pub powered_off: bool,
    /// A sample taken at this time: power (W) and hashrate (GH/s).
    pub sample: Option<(DateTime<Utc>, Option<f64>, Option<f64>)>,
}

/// What the strategy wants a miner doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Mode(String),
    Off,
}

/// Something for the hub to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A command, origin `strategy`, as a set-topic property and payload.
    Command {
        index: usize,
        property: &'static str,
        value: String,
    },
    Event(Value),
}

#[derive(Debug, Clone, Default)]
struct Track {
    info: Option<MinerInfo>,
    online: bool,
    mode: Option<usize>,
    paused: Option<bool>,
    powered_off: bool,
    rolling: Rolling,
    /// Held by the arbiter (a change by hand) until this time.
    held_until: Option<DateTime<Utc>>,
    /// In the watchdog's safety hold: running hot, so no champion (what it is told still goes
    /// through the arbiter, which lets only what cools it pass).
    safety_held: bool,
    /// The last target applied.
    applied: Option<Want>,
    /// The pool a band's `pool:` last selected on it.
    pool_sent: Option<String>,
    /// The slot in which a mode command was last sent (at most one mode change per slot).
    mode_slot: Option<DateTime<Utc>>,
    /// Warned that this miner cannot do what a band asks.
    warned: HashSet<String>,
    /// Latest hashrate seen, GH/s, and when.
    hashing: Option<(DateTime<Utc>, bool)>,
}

#[derive(Debug, Clone)]
struct Champion {
    index: usize,
    told_at: DateTime<Utc>,
    failures: u32,
}

/// The strategy's state.
pub struct Strategy {
    config: EnergyConfig,
    tracker: BandTracker,
    book: PriceBook,
    miners: Vec<Track>,
    pub enabled: bool,
    pub champion_enabled: bool,
    champion: Option<Champion>,
    /// Miners that failed as champion in this champion-band episode.
    failed_champions: HashSet<usize>,
    last_reconcile: Option<DateTime<Utc>>,
    price_missing: bool,
    /// A miner appeared or came back: apply targets at the next tick.
    apply_soon: bool,
}

/// The index of the mode a target names: the work mode a benchmark gave that role (`eco`,
/// `turbo`), else that exact mode, else `eco`/`low` → the lowest, `standard`/`medium` → the
/// middle one, `turbo`/`high` → the highest.
pub fn resolve_mode(target: &str, modes: &[String], roles: &[(String, usize)]) -> Option<usize> {
    if let Some((_, i)) = roles
        .iter()
        .find(|(r, i)| r.eq_ignore_ascii_case(target) && *i < modes.len())
    {
        return Some(*i);
    }
    if let Some(m) = modes.iter().position(|m| m.eq_ignore_ascii_case(target)) {
        return Some(m);
    }
    if modes.is_empty() {
        return None;
    }
    let rank = match target.to_ascii_lowercase().as_str() {
        "eco" | "low" | "lowest" => 0,
        "standard" | "medium" | "normal" => (modes.len() - 1) / 2,
        "turbo" | "high" | "highest" | "max" => modes.len() - 1,
        _ => return None,
    };
    Some(rank)
}

impl Strategy {
    pub fn new(config: EnergyConfig) -> Strategy {
        let tracker = BandTracker::new(
            config.bands.clone(),
            config.safe_band,
            config.hysteresis,
            Duration::from_std(config.min_dwell).unwrap_or(Duration::minutes(30)),
        );
        Strategy {
            config,
            tracker,
            book: PriceBook::new(),
            miners: Vec::new(),
            enabled: true,
            champion_enabled: true,
            champion: None,
            failed_champions: HashSet::new(),
            last_reconcile: None,
            price_missing: false,
            apply_soon: false,
        }
    }

    pub fn config(&self) -> &EnergyConfig {
        &self.config
    }

    pub fn book(&self) -> &PriceBook {
        &self.book
    }

    pub fn book_mut(&mut self) -> &mut PriceBook {
        &mut self.book
    }

    /// The band now, by name.
    pub fn band(&self) -> Option<&str> {
        self.tracker
            .current()
            .map(|i| self.config.bands[i].name.as_str())
    }

    /// The champion now, by name.
    pub fn champion(&self) -> Option<&str> {
        let c = self.champion.as_ref()?;
        self.miners[c.index].info.as_ref().map(|i| i.name.as_str())
    }

    fn track(&mut self, index: usize) -> &mut Track {
        if self.miners.len() <= index {
            self.miners.resize_with(index + 1, Track::default);
        }
        &mut self.miners[index]
    }

    /// What a miner is (new, or its modes changed): its target is applied at the next tick.
    pub fn on_info(&mut self, info: MinerInfo) {
        let t = self.track(info.index);
        t.info = Some(info);
        self.apply_soon |= t.online;
    }

    /// A reading or an availability change. Says whether the miner came online: then its
    /// target should be applied now rather than at the next reconciliation.
    pub fn on_status(&mut self, status: MinerStatus) -> bool {
        let t = self.track(status.index);
        let news = status.online && !t.online && t.info.is_some();
        t.online = status.online;
        t.mode = status.mode;
        t.paused = status.paused;
        t.powered_off = status.powered_off;
        if let Some((at, power, hashrate)) = status.sample {
            t.rolling
                .add(at.timestamp_millis().max(0) as u64, power, hashrate);
            t.hashing = Some((at, hashrate.is_some_and(|h| h > 0.0)));
        }
        self.apply_soon |= news;
        news
    }

    /// The arbiter's hold on a miner changed: a change by hand holds the strategy off it until
    /// `until`.
    pub fn on_hold(&mut self, index: usize, until: Option<DateTime<Utc>>) {
        let t = self.track(index);
        t.held_until = until;
    }

    /// The watchdog's safety hold on a miner started or ended.
    pub fn on_safety_hold(&mut self, index: usize, held: bool) {
        self.track(index).safety_held = held;
    }

    /// A strategy command to a miner failed (refused or the device said no).
    pub fn on_command_failed(&mut self, index: usize, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.champion.as_ref().is_some_and(|c| c.index == index) {
            self.champion_failed(now, "a command to it failed", &mut actions);
        }
        actions
    }

    /// A miner's efficiency over the champion window.
    pub fn efficiency(&mut self, index: usize, now: DateTime<Utc>) -> Option<Efficiency> {
        let window = self.config.champion_window.as_millis() as u64;
        self.miners
            .get_mut(index)?
            .rolling
            .efficiency(now.timestamp_millis().max(0) as u64, window)
    }

    /// One evaluation (every minute, and whenever prices or switches change). Without bands
    /// there is no strategy: nothing to evaluate.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.config.has_strategy() {
            return actions;
        }
        let change = self.tracker.evaluate(now, &self.book);
        let missing = self.book.at(now).is_none();
        if missing && !self.price_missing {
            let safe = &self.config.bands[self.config.safe_band].name;
            actions.push(Action::Event(json!({
                "type": "price_missing",
                "band": safe,
                "reason": format!("no price is known for {}: the safe band {safe:?} applies until one is", slot_start(now).format("%Y-%m-%d %H:%M UTC")),
            })));
        }
        self.price_missing = missing;
        let mut apply = std::mem::take(&mut self.apply_soon);
        if let Some(c) = &change {
            let name = |i: Option<usize>| i.map(|i| self.config.bands[i].name.clone());
            let price = match c.basis {
                Basis::Price { p_per_kwh } => Some(p_per_kwh),
                Basis::Missing => None,
            };
            actions.push(Action::Event(json!({
                "type": "band_changed",
                "from": name(c.from),
                "to": name(Some(c.to)),
                "price": price,
                "reason": c.reason,
            })));
            apply = true;
            // A new band selects its pool again.
            for t in &mut self.miners {
                t.pool_sent = None;
            }
            let champion_band = self.config.bands[c.to].champion;
            if !champion_band && self.champion.is_some() {
                self.end_champion("the champion band ended", &mut actions);
            }
            if !champion_band {
                self.failed_champions.clear();
            }
        }
        if !self.enabled {
            return actions;
        }
        if self.in_champion_band() && self.champion_enabled {
            apply |= self.check_champion(now, &mut actions);
        } else if self.champion.is_some() {
            self.end_champion("champion mode is off", &mut actions);
            apply = true;
        }
        let reconcile = self
            .last_reconcile
            .is_none_or(|t| now - t >= RECONCILE_EVERY);
        if apply || reconcile {
            self.last_reconcile = Some(now);
            self.apply(now, &mut actions);
        }
        actions
    }

    fn in_champion_band(&self) -> bool {
        self.tracker
            .current()
            .is_some_and(|i| self.config.bands[i].champion)
    }

    /// What a miner should be doing now.
    pub fn want(&self, index: usize) -> Option<Want> {
        let band = &self.config.bands[self.tracker.current()?];
        let info = self.miners.get(index)?.info.as_ref()?;
        if self.in_champion_band() && self.champion_enabled {
            if let Some(c) = &self.champion {
                return Some(if c.index == index {
                    Want::Mode(info.modes.first()?.clone())
                } else {
                    Want::Off
                });
            }
        }
        match band.target_for(&info.name, info.family)? {
            t if t.eq_ignore_ascii_case("off") => Some(Want::Off),
            t => Some(Want::Mode(t.to_string())),
        }
    }

    fn apply(&mut self, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        let band = self
            .tracker
            .current()
            .map(|i| self.config.bands[i].name.clone())
            .unwrap_or_default();
        let slot = slot_start(now);
        let pool = self
            .tracker
            .current()
            .and_then(|i| self.config.bands[i].pool.clone());
        for index in 0..self.miners.len() {
            let Some(want) = self.want(index) else {
                continue;
            };
            let t = &mut self.miners[index];
            let Some(info) = t.info.as_ref() else {
                continue;
            };
            // A miner off at its plug is not online but can be switched on.
            if t.held_until.is_some_and(|u| u > now) || !(t.online || t.powered_off) {
                continue;
            }
            let mut sent = Vec::new();
            let mut note = None;
            match &want {
                Want::Off => {
                    if info.plug {
                        if !t.powered_off {
                            sent.push(("power", "OFF".to_string()));
                        }
                    } else if info.can_pause {
                        if t.paused != Some(true) {
                            sent.push(("mining", "OFF".to_string()));
                        }
                    } else if let Some(lowest) = info.modes.first() {
                        note = Some(format!("{} cannot be switched off (no smart plug is configured and its firmware cannot pause), so it runs in its lowest mode, {lowest}", info.name));
                        if t.mode != Some(0) && t.mode_slot != Some(slot) {
                            sent.push(("mode", lowest.clone()));
                        }
                    } else {
                        note = Some(format!("{} has no modes the strategy can set (and cannot pause): it is left as it is in every band", info.name));
                    }
                }
                Want::Mode(target) => match resolve_mode(target, &info.modes, &info.roles) {
                    Some(_) if t.powered_off => {
                        // Its mode follows once it is back (a miner that comes online gets
                        // its target at once).
                        sent.push(("power", "ON".to_string()));
                    }
                    Some(mode) => {
                        if t.paused == Some(true) {
                            sent.push(("mining", "ON".to_string()));
                        }
                        if t.mode != Some(mode) && t.mode_slot != Some(slot) {
                            sent.push(("mode", info.modes[mode].clone()));
                        }
                        // The band's pool, once per band (the hub sends nothing when the miner
                        // is already on it).
                        if let Some(p) = pool.as_ref().filter(|p| t.pool_sent.as_ref() != Some(*p))
                        {
                            t.pool_sent = Some(p.clone());
                            sent.push(("pool", p.clone()));
                        }
                    }
                    None if info.modes.is_empty() => {
                        note = Some(format!(
                            "{} has no modes the strategy can set (and cannot pause): it is left as it is in every band",
                            info.name
                        ));
                    }
                    None => {
                        note = Some(format!(
                            "band {band:?} asks for mode {target:?}, which {} does not have (its modes: {}); it is left as it is",
                            info.name,
                            if info.modes.is_empty() { "none".to_string() } else { info.modes.join(", ") }
                        ));
                    }
                },
            }
            if let Some(reason) = note {
                // A miner with no modes that cannot pause is told about once, not per band.
                let key = if info.modes.is_empty() && !info.can_pause {
                    "uncontrollable".to_string()
                } else {
                    format!("{band}/{want:?}")
                };
                if t.warned.insert(key) {
                    actions.push(Action::Event(json!({
                        "type": "strategy_skipped", "miner": info.name, "band": band, "reason": reason,
                    })));
                }
            }
            if sent.is_empty() {
                continue;
            }
            let name = info.name.clone();
            let target = match &want {
                Want::Off => "off".to_string(),
                Want::Mode(m) => m.clone(),
            };
            let drift = t.applied.as_ref() == Some(&want);
            if sent.iter().any(|(p, _)| *p == "mode") {
                t.mode_slot = Some(slot);
            }
            t.applied = Some(want);
            let commands: Vec<String> = sent.iter().map(|(p, v)| format!("{p} {v}")).collect();
            actions.push(Action::Event(json!({
                "type": "strategy_applied",
                "miner": name,
                "band": band,
                "target": target,
                "commands": commands,
                "reason": if drift {
                    format!("{name} drifted from band {band:?}'s target {target:?}; re-applied")
                } else {
                    format!("band {band:?} asks for {target:?}")
                },
            })));
            for (property, value) in sent {
                actions.push(Action::Command {
                    index,
                    property,
                    value,
                });
            }
        }
    }

    /// Chooses a champion if there is none; checks the one there is. Says whether targets
    /// changed.
    fn check_champion(&mut self, now: DateTime<Utc>, actions: &mut Vec<Action>) -> bool {
        if let Some(c) = self.champion.clone() {
            let t = &self.miners[c.index];
            let online = t.online;
            let hashing = t.hashing.is_some_and(|(at, yes)| yes && at > c.told_at);
            if hashing && online {
                if let Some(c) = self.champion.as_mut() {
                    c.failures = 0;
                }
                return false;
            }
            if now - c.told_at < CHAMPION_GRACE {
                return false;
            }
            let why = if online {
                "it is not hashing 5 minutes after being told to run"
            } else {
                "it is offline"
            };
            let before = self.champion.as_ref().map(|c| c.index);
            self.champion_failed(now, why, actions);
            return self.champion.as_ref().map(|c| c.index) != before;
        }
        self.choose_champion(now, None, actions)
    }

    fn champion_failed(&mut self, now: DateTime<Utc>, why: &str, actions: &mut Vec<Action>) {
        let Some(c) = self.champion.as_mut() else {
            return;
        };
        c.failures += 1;
        c.told_at = now;
        if c.failures < CHAMPION_FAILURES {
            return;
        }
        let index = c.index;
        self.failed_champions.insert(index);
        let reason = format!("{CHAMPION_FAILURES} failures in a row (last: {why})");
        self.choose_champion(now, Some(reason), actions);
    }

    /// Picks the most efficient candidate; returns whether the champion changed.
    fn choose_champion(
        &mut self,
        now: DateTime<Utc>,
        replacing: Option<String>,
        actions: &mut Vec<Action>,
    ) -> bool {
        let mut ranked: Vec<(usize, Efficiency)> = Vec::new();
        for index in 0..self.miners.len() {
            let eligible = {
                let t = &self.miners[index];
                (t.online || t.powered_off)
                    && t.info.as_ref().is_some_and(|i| !i.modes.is_empty())
                    // A miner held by hand is the user's, not a candidate.
                    && t.held_until.is_none_or(|u| u <= now)
                    && !t.safety_held
                    && !self.failed_champions.contains(&index)
            };
            if !eligible {
                continue;
            }
            if let Some(e) = self.efficiency(index, now) {
                if e.seconds >= CHAMPION_MIN_SECONDS {
                    ranked.push((index, e));
                }
            }
        }
        ranked.sort_by(|a, b| a.1.j_per_th.total_cmp(&b.1.j_per_th).then(a.0.cmp(&b.0)));
        let from = self.champion().map(str::to_string);
        let name = |s: &Self, i: usize| s.miners[i].info.as_ref().map(|x| x.name.clone());
        let figures: Vec<Value> = ranked
            .iter()
            .take(5)
            .map(|(i, e)| {
                json!({
                    "miner": name(self, *i),
                    "j_per_th": (e.j_per_th * 100.0).round() / 100.0,
                    "hours": (e.seconds / 36.0).round() / 100.0,
                })
            })
            .collect();
        let next = ranked.first().map(|(i, _)| *i);
        let changed = self.champion.as_ref().map(|c| c.index) != next;
        self.champion = next.map(|index| Champion {
            index,
            told_at: now,
            failures: 0,
        });
        if changed || replacing.is_some() {
            let window = humantime::format_duration(self.config.champion_window).to_string();
            let reason = match (&replacing, next) {
                (Some(r), Some(_)) => format!("the champion was replaced after {r}; the next most efficient over the last {window} takes over"),
                (Some(r), None) => format!("the champion was dropped after {r}, and no other miner has 30 minutes of hashing in the last {window}"),
                (None, Some(_)) => format!("the most efficient miner over the last {window}"),
                (None, None) => format!("no miner has 30 minutes of hashing in the last {window}; the band's own targets apply"),
            };
            actions.push(Action::Event(json!({
                "type": "champion_changed",
                "from": from,
                "to": next.and_then(|i| name(self, i)),
                "reason": reason,
                "candidates": figures,
            })));
        }
        changed
    }

    fn end_champion(&mut self, why: &str, actions: &mut Vec<Action>) {
        if let Some(from) = self.champion().map(str::to_string) {
            actions.push(Action::Event(json!({
                "type": "champion_changed", "from": from, "to": null, "reason": why,
            })));
        }
        self.champion = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Miner 0, a Gamma that can pause, with these modes.
    #[test]
    fn a_bands_eco_and_turbo_mean_the_work_modes_a_benchmark_found() {
        let q: Vec<String> = ["eco", "standard", "super"].map(String::from).to_vec();
        // Before a benchmark: the Q's own eco, and turbo → its highest.
        assert_eq!(resolve_mode("eco", &q, &[]), Some(0));
        assert_eq!(resolve_mode("turbo", &q, &[]), Some(2));
        // A comparison found standard the most efficient and super the fastest.
        let roles = vec![("eco".to_string(), 1), ("turbo".to_string(), 2)];
        assert_eq!(resolve_mode("eco", &q, &roles), Some(1));
        assert_eq!(resolve_mode("TURBO", &q, &roles), Some(2));
        assert_eq!(resolve_mode("standard", &q, &roles), Some(1));
        // A role pointing past the modes (they changed) is ignored.
        assert_eq!(resolve_mode("eco", &q[..1], &roles), Some(0));
    }

    fn gamma(modes: &[&str]) -> MinerInfo {
        MinerInfo {
            index: 0,
            name: "gamma".into(),
            family: "axeos",
            modes: modes.iter().map(|m| m.to_string()).collect(),
            roles: Vec::new(),
            can_pause: true,
            plug: false,
        }
    }

    /// Miner 0 online and hashing in its first mode.
    fn running(sample: Option<(DateTime<Utc>, Option<f64>, Option<f64>)>) -> MinerStatus {
        MinerStatus {
            index: 0,
            online: true,
            mode: Some(0),
            paused: Some(false),
            powered_off: false,
            sample,
        }
    }

    #[test]
    fn a_band_with_a_pool_selects_it_once_on_running_miners() {
        let band = |name: &str, below: Option<f64>, target: &str, pool: Option<&str>| {
            super::super::bands::Band {
                name: name.into(),
                below,
                target: std::collections::BTreeMap::from([(
                    "default".to_string(),
                    target.to_string(),
                )]),
                pool: pool.map(str::to_string),
                champion: false,
            }
        };
        let config = EnergyConfig {
            source: Some(super::super::config::Source::Mqtt),
            bands: vec![
                band("cheap", Some(12.0), "eco", Some("solo")),
                band("dear", None, "off", None),
            ],
            safe_band: 1,
            min_dwell: std::time::Duration::ZERO,
            ..EnergyConfig::default()
        };
        let mut s = Strategy::new(config);
        let now: DateTime<Utc> = "2024-01-08T10:00:00Z".parse().unwrap();
        s.book_mut().insert(vec![super::super::prices::PriceSlot {
            start: now,
            end: now + Duration::hours(2),
            p_per_kwh: 5.0,
            kind: super::super::prices::SlotKind::Actual,
        }]);
        s.on_info(gamma(&["eco", "turbo"]));
        s.on_status(running(None));
        let commands = |actions: Vec<Action>| -> Vec<(&'static str, String)> {
            actions
                .into_iter()
                .filter_map(|a| match a {
                    Action::Command {
                        property, value, ..
                    } => Some((property, value)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(commands(s.tick(now)), [("pool", "solo".to_string())]);
        // Reconciliation does not select it again.
        assert!(commands(s.tick(now + Duration::minutes(6))).is_empty());
    }

    #[test]
    fn without_bands_there_is_nothing_to_do_and_nothing_breaks() {
        // Regression: with no energy section the first tick indexed the safe band of an empty
        // list and the controller task died, taking the energy meters with it.
        let mut s = Strategy::new(EnergyConfig::default());
        s.on_info(gamma(&["eco"]));
        let now: DateTime<Utc> = "2024-01-08T10:00:00Z".parse().unwrap();
        s.on_status(running(Some((now, Some(15.0), Some(1000.0)))));
        assert!(s.tick(now).is_empty());
        assert_eq!(s.band(), None);
    }
}
