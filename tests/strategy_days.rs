//! The strategy replayed over whole real Agile days with a fake clock: every minute of the day
//! in milliseconds. Simulated miners obey the strategy's commands at once and report samples
//! whose power and hashrate follow their mode.

use chrono::{DateTime, Duration, Utc};
use miner2mqtt::energy::bands::Band;
use miner2mqtt::energy::config::{EnergyConfig, Source};
use miner2mqtt::energy::octopus::parse_rates_page;
use miner2mqtt::energy::prices::{uk_day, PriceSlot};
use miner2mqtt::energy::strategy::{Action, MinerInfo, MinerStatus, Strategy};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

fn day(name: &str) -> Vec<PriceSlot> {
    let path = format!(
        "{}/../shared/fixtures/octopus/days/agile_AGILE-FLEX-22-11-25_J_{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    parse_rates_page(&std::fs::read(&path).unwrap()).unwrap().0
}

fn band(name: &str, below: Option<f64>, target: &str, champion: bool) -> Band {
    Band {
        name: name.into(),
        below,
        target: BTreeMap::from([("default".to_string(), target.to_string())]),
        pool: None,
        champion,
    }
}

fn config(champion: bool) -> EnergyConfig {
    EnergyConfig {
        source: Some(Source::Mqtt),
        bands: vec![
            band("negative", Some(0.0), "turbo", false),
            band("cheap", Some(12.0), "standard", false),
            band("normal", Some(20.0), "eco", false),
            band("expensive", Some(30.0), "off", champion),
            band("peak", None, "off", false),
        ],
        safe_band: 3,
        hysteresis: 0.5,
        min_dwell: std::time::Duration::from_secs(1800),
        manual_hold: std::time::Duration::from_secs(7200),
        champion_window: std::time::Duration::from_secs(6 * 3600),
    }
}

/// A simulated miner: W and GH/s per mode; paused draws 2 W and hashes nothing.
struct Sim {
    name: String,
    modes: Vec<(&'static str, f64, f64)>,
    mode: usize,
    paused: bool,
    /// Ignores being told to run (a broken miner).
    stuck: bool,
    mode_changes: Vec<DateTime<Utc>>,
}

impl Sim {
    fn new(name: &str, watts_per_th: f64) -> Sim {
        // eco / standard / turbo at 0.8, 1.0, 1.2 TH/s, efficiency worse as it goes up.
        let m = |th: f64, factor: f64| (th * watts_per_th * factor, th * 1000.0);
        let (e, s, t) = (m(0.8, 0.9), m(1.0, 1.0), m(1.2, 1.15));
        Sim {
            name: name.into(),
            modes: vec![
                ("eco", e.0, e.1),
                ("standard", s.0, s.1),
                ("turbo", t.0, t.1),
            ],
            mode: 1,
            paused: false,
            stuck: false,
            mode_changes: Vec::new(),
        }
    }

    fn info(&self, index: usize) -> MinerInfo {
        MinerInfo {
            index,
            name: self.name.clone(),
            family: "axeos",
            modes: self.modes.iter().map(|m| m.0.to_string()).collect(),
            roles: Vec::new(),
            can_pause: true,
            plug: false,
        }
    }

    fn status(&self, index: usize, at: DateTime<Utc>) -> MinerStatus {
        let (_, w, gh) = self.modes[self.mode];
        let hashing = !self.paused && !self.stuck;
        MinerStatus {
            index,
            mode: Some(self.mode),
            paused: Some(self.paused),
            powered_off: false,
            online: true,
            sample: Some((
                at,
                Some(if hashing { w } else { 2.0 }),
                Some(if hashing { gh } else { 0.0 }),
            )),
        }
    }
}

struct Replay {
    strategy: Strategy,
    fleet: Vec<Sim>,
    events: Vec<Value>,
}

impl Replay {
    fn new(config: EnergyConfig, fleet: Vec<Sim>, prices: Vec<PriceSlot>) -> Replay {
        let mut strategy = Strategy::new(config);
        for (i, m) in fleet.iter().enumerate() {
            strategy.on_info(m.info(i));
        }
        strategy.book_mut().insert(prices);
        Replay {
            strategy,
            fleet,
            events: Vec::new(),
        }
    }

    /// Minute by minute from `from` to `to`: samples, then the strategy's tick, commands obeyed.
    fn run(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let mut now = from;
        while now < to {
            for (i, m) in self.fleet.iter().enumerate() {
                self.strategy.on_status(m.status(i, now));
            }
            for action in self.strategy.tick(now) {
                match action {
                    Action::Event(mut e) => {
                        e["at"] = now.timestamp().into();
                        self.events.push(e)
                    }
                    Action::Command {
                        index,
                        property,
                        value,
                    } => {
                        let m = &mut self.fleet[index];
                        match property {
                            "mode" => {
                                m.mode = m.modes.iter().position(|x| x.0 == value).unwrap();
                                m.mode_changes.push(now);
                            }
                            "mining" => m.paused = value == "OFF",
                            other => panic!("unexpected command {other}"),
                        }
                    }
                }
            }
            now += Duration::minutes(1);
        }
    }

    fn events(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }
}

fn whole_day(prices: &[PriceSlot]) -> (DateTime<Utc>, DateTime<Utc>) {
    uk_day(prices[0].start + Duration::hours(1))
}

#[test]
fn bands_follow_the_real_days_without_flapping() {
    for name in [
        "2023-03-26",
        "2023-07-02",
        "2023-10-29",
        "2023-11-29",
        "2024-01-08",
    ] {
        let prices = day(name);
        let (from, to) = whole_day(&prices);
        let mut r = Replay::new(config(false), vec![Sim::new("gamma", 17.0)], prices.clone());
        // Minute by minute, the miner does what the band now in force asks: paused when it says
        // off, else in its mode.
        let mut now = from;
        while now < to {
            r.run(now, now + Duration::minutes(1));
            let m = &r.fleet[0];
            let wanted = match r.strategy.band() {
                Some("negative") => Some("turbo"),
                Some("cheap") => Some("standard"),
                Some("normal") => Some("eco"),
                _ => None,
            };
            match wanted {
                None => assert!(
                    m.paused,
                    "{name} {now}: running in band {:?}",
                    r.strategy.band()
                ),
                Some(mode) => {
                    assert!(
                        !m.paused,
                        "{name} {now}: paused in band {:?}",
                        r.strategy.band()
                    );
                    assert_eq!(m.modes[m.mode].0, mode, "{name} {now}");
                }
            }
            now += Duration::minutes(1);
        }
        let changes = r.events("band_changed");
        assert!(!changes.is_empty(), "{name}: no band at all");
        // Each band change happens in the first minute of a slot: bands never move mid-slot.
        for e in &changes[1..] {
            assert_eq!(e["at"].as_i64().unwrap() % 1800, 0, "{name}: {e}");
            assert!(e["reason"].is_string(), "{name}: {e}");
        }
        // No more band changes than slot boundaries where the raw band changes.
        let raw: Vec<usize> = prices
            .iter()
            .map(|s| miner2mqtt::energy::bands::band_of(&config(false).bands, s.p_per_kwh))
            .collect();
        let raw_changes = raw.windows(2).filter(|w| w[0] != w[1]).count() + 1;
        assert!(
            changes.len() <= raw_changes,
            "{name}: {} band changes for {raw_changes} raw changes",
            changes.len()
        );
        // At most one mode change per miner per slot.
        let m = &r.fleet[0];
        let mut per_slot: HashMap<i64, usize> = HashMap::new();
        for t in &m.mode_changes {
            *per_slot.entry(t.timestamp() / 1800).or_default() += 1;
        }
        assert!(per_slot.values().all(|n| *n <= 1), "{name}: {per_slot:?}");
        // Whole published days: no slot is ever without a price.
        assert!(r.events("price_missing").is_empty(), "{name}");
    }
}

#[test]
fn on_a_negative_day_the_miner_runs_turbo_when_paid_and_stops_at_the_peak() {
    // 2023-07-02: 18 negative slots in the afternoon.
    let prices = day("2023-07-02");
    let (from, to) = whole_day(&prices);
    let mut r = Replay::new(config(false), vec![Sim::new("gamma", 17.0)], prices.clone());
    let mut turbo_minutes = 0;
    let mut now = from;
    while now < to {
        r.run(now, now + Duration::minutes(1));
        let m = &r.fleet[0];
        if !m.paused && m.modes[m.mode].0 == "turbo" {
            turbo_minutes += 1;
            let p = prices.iter().find(|s| s.contains(now)).unwrap().p_per_kwh;
            assert!(p < 0.5, "turbo at {p} p/kWh at {now}");
        }
        now += Duration::minutes(1);
    }
    assert!(
        turbo_minutes >= 8 * 60,
        "only {turbo_minutes} minutes of turbo"
    );
}

#[test]
fn the_champion_is_the_most_efficient_miner_and_the_rest_are_off() {
    // 2023-11-29 reaches 70 p/kWh in the evening: an expensive (champion) band exists.
    let prices = day("2023-11-29");
    let (from, to) = whole_day(&prices);
    let fleet = vec![
        Sim::new("hungry", 25.0),
        Sim::new("best", 15.0),
        Sim::new("middling", 18.0),
    ];
    let mut r = Replay::new(config(true), fleet, prices.clone());
    let mut champion_minutes = 0;
    let mut now = from;
    while now < to {
        r.run(now, now + Duration::minutes(1));
        if r.strategy.band() == Some("expensive") && r.strategy.champion().is_some() {
            champion_minutes += 1;
            assert_eq!(r.strategy.champion(), Some("best"));
            let running: Vec<&str> = r
                .fleet
                .iter()
                .filter(|m| !m.paused)
                .map(|m| m.name.as_str())
                .collect();
            assert_eq!(running, ["best"], "at {now}");
            assert_eq!(r.fleet[1].modes[r.fleet[1].mode].0, "eco", "lowest mode");
        }
        now += Duration::minutes(1);
    }
    assert!(
        champion_minutes > 60,
        "{champion_minutes} minutes with a champion"
    );
    let chosen = r.events("champion_changed");
    let first = chosen.iter().find(|e| e["to"] == "best").unwrap();
    let candidates = first["candidates"].as_array().unwrap();
    assert_eq!(candidates[0]["miner"], "best");
    assert!(
        candidates[0]["j_per_th"].as_f64().unwrap() < candidates[1]["j_per_th"].as_f64().unwrap()
    );
}

#[test]
fn a_miner_in_the_watchdogs_safety_hold_is_never_the_champion() {
    let prices = day("2023-11-29");
    let (from, to) = whole_day(&prices);
    let fleet = vec![
        Sim::new("hungry", 25.0),
        Sim::new("best", 15.0),
        Sim::new("middling", 18.0),
    ];
    let mut r = Replay::new(config(true), fleet, prices.clone());
    // "best" runs hot all evening: the watchdog holds it.
    r.strategy.on_safety_hold(1, true);
    let mut champions = std::collections::BTreeSet::new();
    let mut now = from;
    while now < to {
        r.run(now, now + Duration::minutes(1));
        if let Some(c) = r.strategy.champion() {
            champions.insert(c.to_string());
        }
        now += Duration::minutes(1);
    }
    assert_eq!(
        champions.into_iter().collect::<Vec<_>>(),
        ["middling"],
        "the next most efficient"
    );
}

#[test]
fn a_champion_that_will_not_hash_is_replaced_after_three_failures() {
    let prices = day("2023-11-29");
    let (from, to) = whole_day(&prices);
    let fleet = vec![Sim::new("best", 15.0), Sim::new("second", 18.0)];
    let mut r = Replay::new(config(true), fleet, prices.clone());
    // Until the champion is first chosen all is well; then "best" stops hashing.
    let mut now = from;
    while r.strategy.champion().is_none() && now < to {
        r.run(now, now + Duration::minutes(1));
        now += Duration::minutes(1);
    }
    assert_eq!(r.strategy.champion(), Some("best"));
    let chosen_at = now;
    r.fleet[0].stuck = true;
    while r.strategy.champion() == Some("best") && now < to {
        r.run(now, now + Duration::minutes(1));
        now += Duration::minutes(1);
    }
    assert_eq!(r.strategy.champion(), Some("second"));
    let took = now - chosen_at;
    assert!(
        took >= Duration::minutes(15) && took <= Duration::minutes(17),
        "promoted after {took}"
    );
    let last = r
        .events("champion_changed")
        .last()
        .copied()
        .unwrap()
        .clone();
    assert!(
        last["reason"].as_str().unwrap().contains("3 failures"),
        "{last}"
    );
}

#[test]
fn without_a_price_the_safe_band_applies_and_says_why() {
    let prices = day("2024-01-08");
    let (from, to) = whole_day(&prices);
    // Only the morning is known.
    let morning: Vec<PriceSlot> = prices
        .into_iter()
        .filter(|s| s.start < from + Duration::hours(6))
        .collect();
    let mut r = Replay::new(config(false), vec![Sim::new("gamma", 17.0)], morning);
    r.run(from, to);
    let missing = r.events("price_missing");
    assert_eq!(missing.len(), 1, "said once, not every minute");
    assert!(missing[0]["reason"].as_str().unwrap().contains("safe band"));
    assert_eq!(r.strategy.band(), Some("expensive"));
    assert!(r.fleet[0].paused, "the safe band's target (off) applies");
}

#[test]
fn a_held_miner_is_left_alone_until_the_hold_ends() {
    let prices = day("2024-01-08");
    let (from, _) = whole_day(&prices);
    let mut r = Replay::new(config(false), vec![Sim::new("gamma", 17.0)], prices);
    r.run(from, from + Duration::minutes(5));
    // The user sets turbo by hand and holds the strategy off for two hours.
    r.fleet[0].mode = 2;
    r.fleet[0].paused = false;
    let until = from + Duration::minutes(5) + Duration::hours(2);
    r.strategy.on_hold(0, Some(until));
    r.run(from + Duration::minutes(5), until - Duration::minutes(1));
    assert_eq!(r.fleet[0].modes[r.fleet[0].mode].0, "turbo");
    assert!(!r.fleet[0].paused);
    // After the hold the reconciliation puts the band's target back within 5 minutes.
    r.run(until - Duration::minutes(1), until + Duration::minutes(6));
    let m = &r.fleet[0];
    assert!(m.paused || m.modes[m.mode].0 != "turbo");
}
