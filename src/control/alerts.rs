//! Alerts: rules over each miner's readings, each with a cooldown per miner and kind. A rule's
//! condition holding is a *problem* (the miner's Problem binary sensor is on while any holds);
//! an alert fires when a condition starts, and again while it holds once the cooldown has
//! passed. Synchronous and clock-free; [`super::task`] runs it beside the watchdog.

use super::Reading;
use crate::config::{Alerts as AlertConfig, Safety, Thermal};
use std::time::Instant;

/// The kinds of alert, as Home Assistant's event entity lists them (`event_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Overheating,
    Offline,
    HashrateDrop,
    RejectRate,
    Watchdog,
    Drift,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Overheating,
        Kind::Offline,
        Kind::HashrateDrop,
        Kind::RejectRate,
        Kind::Watchdog,
        Kind::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Overheating => "overheating",
            Kind::Offline => "offline",
            Kind::HashrateDrop => "hashrate_drop",
            Kind::RejectRate => "reject_rate",
            Kind::Watchdog => "watchdog",
            Kind::Drift => "drift",
        }
    }
}

/// An alert that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub kind: Kind,
    pub message: String,
}

/// Samples at one clock before its mean hashrate is trusted.
const MEAN_AFTER: u32 = 10;
/// Weight of each new sample in the recent means.
const ALPHA: f64 = 0.05;
/// Shares over which the reject rate is judged, at least.
const SHARES_WINDOW: u64 = 50;
/// Samples at one clock before its efficiency history is trusted (an hour at 30 s).
const DRIFT_AFTER: u32 = 120;

/// One clock's efficiency: the long mean and a recent one.
#[derive(Debug, Clone, Copy, Default)]
struct Efficiency {
    long_sum: f64,
    long_n: u32,
    recent: f64,
    recent_n: u32,
}

/// What a hashrate is compared at: the clock (frequency, core voltage) and the work mode.
type Setting = (Option<(u32, u32)>, Option<usize>);

#[derive(Debug, Default)]
struct MinerAlerts {
    /// Conditions holding now, one bit per `Kind` (a few bytes per miner at 10,000 miners).
    active: u8,
    last_fired: [Option<Instant>; Kind::ALL.len()],
    /// The clock the hashrate mean belongs to.
    mean_clock: Option<Setting>,
    mean: f64,
    mean_n: u32,
    /// The share counters last seen, and the accepted and rejected shares since, each decayed
    /// by e^(−shares/100): a window of about the last hundred shares in four numbers.
    last_shares: Option<(u64, u64)>,
    window: (f64, f64),
    /// Per clock (frequency, core voltage) the miner has run at.
    efficiency: Vec<((u32, u32), Efficiency)>,
}

impl Kind {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The alert rules for the whole fleet.
pub struct AlertRules {
    config: AlertConfig,
    safety: Safety,
    /// By miner index.
    miners: Vec<MinerAlerts>,
}

impl AlertRules {
    pub fn new(config: AlertConfig, safety: Safety) -> AlertRules {
        AlertRules {
            config,
            safety,
            miners: Vec::new(),
        }
    }

    fn miner(&mut self, index: usize) -> &mut MinerAlerts {
        if self.miners.len() <= index {
            self.miners.resize_with(index + 1, MinerAlerts::default);
        }
        &mut self.miners[index]
    }

    /// The conditions holding for miner `index`, in `Kind` order.
    pub fn active(&self, index: usize) -> Vec<Kind> {
        let active = self.miners.get(index).map_or(0, |m| m.active);
        Kind::ALL
            .into_iter()
            .filter(|k| active & k.bit() != 0)
            .collect()
    }

    /// Sets whether `kind` holds for miner `index`; an alert fires with `message` when it
    /// starts, or when it holds and the cooldown has passed. Returns whether the set of
    /// problems changed, and the alert if one fired.
    pub fn set(
        &mut self,
        index: usize,
        kind: Kind,
        holds: bool,
        message: impl FnOnce() -> String,
        now: Instant,
    ) -> (bool, Option<Fired>) {
        let cooldown = self.config.cooldown;
        let m = self.miner(index);
        let was = m.active & kind.bit() != 0;
        if !holds {
            m.active &= !kind.bit();
            return (was, None);
        }
        m.active |= kind.bit();
        let due = m.last_fired[kind as usize].is_none_or(|t| now.duration_since(t) >= cooldown);
        // A condition that holds on fires again only after the cooldown; one that starts again
        // within the cooldown is not told twice either.
        let fired = due.then(|| {
            m.last_fired[kind as usize] = Some(now);
            Fired {
                kind,
                message: message(),
            }
        });
        (!was, fired)
    }

    /// Sets whether `kind` holds for miner `index` without firing anything (a condition whose
    /// alerts are occurrences, told by [`AlertRules::occurred`]); says whether it changed.
    pub fn hold(&mut self, index: usize, kind: Kind, holds: bool) -> bool {
        let m = self.miner(index);
        let was = m.active & kind.bit() != 0;
        if holds {
            m.active |= kind.bit();
        } else {
            m.active &= !kind.bit();
        }
        was != holds
    }

    /// Fires an alert that is an occurrence rather than a condition (a watchdog action),
    /// subject to the same cooldown.
    pub fn occurred(
        &mut self,
        index: usize,
        kind: Kind,
        message: String,
        now: Instant,
    ) -> Option<Fired> {
        let cooldown = self.config.cooldown;
        let m = self.miner(index);
        let due = m.last_fired[kind as usize].is_none_or(|t| now.duration_since(t) >= cooldown);
        due.then(|| {
            m.last_fired[kind as usize] = Some(now);
            Fired { kind, message }
        })
    }

    /// Applies the reading rules to one reading of miner `index` (named `name`). Returns
    /// whether the set of problems changed, and the alerts that fired.
    pub fn on_reading(
        &mut self,
        index: usize,
        name: &str,
        th: &Thermal,
        r: &Reading,
        now: Instant,
    ) -> (bool, Vec<Fired>) {
        let s = self.safety.clone();
        let cfg = self.config.clone();
        let mut changed = false;
        let mut fired = Vec::new();
        let mut apply = |this: &mut Self, kind, holds, message: &dyn Fn() -> String| {
            let (c, f) = this.set(index, kind, holds, message, now);
            changed |= c;
            fired.extend(f);
        };

        // Overheating: our thresholds, or the firmware's own trip.
        let asic_hot = r.asic_temp.is_some_and(|t| t >= th.temp_overheat);
        let vr_hot = r.vr_temp.is_some_and(|t| t >= th.vr_temp_limit);
        let overheating = asic_hot || vr_hot || r.firmware_overheat == Some(true);
        apply(self, Kind::Overheating, overheating, &|| {
            if asic_hot {
                format!(
                    "{name} is overheating: ASIC at {:.1} °C (limit {} °C)",
                    r.asic_temp.unwrap_or_default(),
                    th.temp_overheat
                )
            } else if vr_hot {
                format!(
                    "{name} is overheating: VR at {:.1} °C (limit {} °C)",
                    r.vr_temp.unwrap_or_default(),
                    th.vr_temp_limit
                )
            } else {
                format!("{name}'s firmware tripped its overheat protection; it stops hashing until restarted")
            }
        });

        // Hashrate below its recent mean at the same clock (not while paused or booting).
        let booting = r.booting(&s);
        let m = self.miner(index);
        let clock = (r.clock(), r.work_mode);
        if m.mean_clock != Some(clock) {
            m.mean_clock = Some(clock);
            m.mean_n = 0;
            m.mean = 0.0;
        }
        let mut drop = None;
        if let (Some(h), false, false) = (r.hashrate, r.paused == Some(true), booting) {
            if m.mean_n >= MEAN_AFTER && h < cfg.hashrate_drop * m.mean {
                drop = Some((h, m.mean));
            } else {
                // The mean learns only from readings that are not a drop, so a lasting drop
                // stays one.
                m.mean = if m.mean_n == 0 {
                    h
                } else {
                    m.mean + (h - m.mean) * ALPHA.max(1.0 / (m.mean_n + 1) as f64)
                };
                m.mean_n += 1;
            }
        }
        apply(self, Kind::HashrateDrop, drop.is_some(), &|| {
            let (h, mean) = drop.unwrap_or_default();
            format!(
                "{name}'s hashrate fell to {:.0} GH/s, {:.0} % of its recent {:.0} GH/s at the same settings",
                h,
                h / mean * 100.0,
                mean
            )
        });

        // Reject rate over about the last hundred shares (at least 50 counted).
        let m = self.miner(index);
        let mut rate = None;
        if let (Some(a), Some(rj)) = (r.shares_accepted, r.shares_rejected) {
            match m.last_shares {
                // Counters went back: the miner restarted.
                Some((pa, pr)) if a < pa || rj < pr => m.window = (0.0, 0.0),
                Some((pa, pr)) => {
                    let (da, dr) = ((a - pa) as f64, (rj - pr) as f64);
                    let decay = (-(da + dr) / 100.0).exp();
                    m.window = (m.window.0 * decay + da, m.window.1 * decay + dr);
                }
                None => {}
            }
            m.last_shares = Some((a, rj));
            let total = m.window.0 + m.window.1;
            if total >= SHARES_WINDOW as f64 {
                rate = Some((m.window.1 / total, total.round() as u64));
            }
        }
        let high = rate.is_some_and(|(x, _)| x > cfg.reject_rate);
        apply(self, Kind::RejectRate, high, &|| {
            let (x, n) = rate.unwrap_or_default();
            format!(
                "{name} rejects {:.1} % of its shares (of about the last {n}; alerts.reject_rate is {:.1} %)",
                x * 100.0,
                cfg.reject_rate * 100.0
            )
        });

        // Efficiency drift at an unchanged clock.
        let m = self.miner(index);
        let mut drift = None;
        if let (Some(clock), Some(p), Some(h)) = (r.clock(), r.power, r.hashrate) {
            if h > 0.0 && p > 0.0 && r.paused != Some(true) && !booting && drop.is_none() {
                let jth = p / (h / 1000.0);
                let at = match m.efficiency.iter().position(|(c, _)| *c == clock) {
                    Some(at) => at,
                    None => {
                        m.efficiency.push((clock, Efficiency::default()));
                        m.efficiency.len() - 1
                    }
                };
                let e = &mut m.efficiency[at].1;
                e.recent = if e.recent_n == 0 {
                    jth
                } else {
                    e.recent + (jth - e.recent) * ALPHA
                };
                e.recent_n += 1;
                if e.long_n >= DRIFT_AFTER && e.recent_n >= MEAN_AFTER {
                    let long = e.long_sum / e.long_n as f64;
                    if e.recent > long * (1.0 + cfg.drift_percent / 100.0) {
                        drift = Some((e.recent, long, clock));
                    }
                }
                // The history learns only from readings near it, so a worsening is not absorbed
                // before it is told (a slow one over months still moves it, slowly).
                let near = e.long_n == 0
                    || e.recent <= e.long_sum / e.long_n as f64 * (1.0 + cfg.drift_percent / 200.0);
                if near {
                    e.long_sum += jth;
                    e.long_n += 1;
                }
            }
        }
        apply(self, Kind::Drift, drift.is_some(), &|| {
            let (now_jth, long, (f, v)) = drift.unwrap_or_default();
            format!(
                "{name} needs {:.1} J/TH at {f} MHz / {v} mV, {:.0} % more than its usual {:.1} J/TH there: dust, a failing fan or a tired chip?",
                now_jth,
                (now_jth / long - 1.0) * 100.0,
                long
            )
        });
        (changed, fired)
    }

    /// The miner is gone from the fleet's view (off on purpose): its conditions end.
    pub fn clear(&mut self, index: usize) -> bool {
        self.miners
            .get_mut(index)
            .map(|m| std::mem::take(&mut m.active) != 0)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TH: Thermal = Thermal {
        temp_limit: 65.0,
        temp_overheat: 70.0,
        vr_temp_limit: 85.0,
    };

    fn rules() -> AlertRules {
        AlertRules::new(AlertConfig::default(), Safety::default())
    }

    fn reading(h: f64) -> Reading {
        Reading {
            asic_temp: Some(55.0),
            vr_temp: Some(50.0),
            hashrate: Some(h),
            power: Some(18.0),
            frequency: Some(525),
            core_voltage: Some(1150),
            uptime: Some(3600),
            shares_accepted: Some(100),
            shares_rejected: Some(0),
            paused: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn an_alert_fires_once_per_cooldown_while_its_condition_holds() {
        let mut a = rules();
        let t0 = Instant::now();
        let mut hot = reading(1000.0);
        hot.asic_temp = Some(72.0);
        let (changed, fired) = a.on_reading(0, "bitaxe-1", &TH, &hot, t0);
        assert!(changed);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].message.contains("72.0 °C"), "{}", fired[0].message);
        assert_eq!(a.active(0), [Kind::Overheating]);
        let mut count = 1;
        for k in 1..=60 {
            let (_, f) = a.on_reading(0, "bitaxe-1", &TH, &hot, t0 + Duration::from_secs(30 * k));
            count += f.len();
        }
        // 30 minutes of overheating: one alert at the start, one when the cooldown has passed.
        assert_eq!(count, 2);
        // Cooled: the problem ends; overheating again within the cooldown tells no one twice.
        let t1 = t0 + Duration::from_secs(30 * 61);
        let (changed, fired) = a.on_reading(0, "bitaxe-1", &TH, &reading(1000.0), t1);
        assert!(changed && fired.is_empty());
        assert!(a.active(0).is_empty());
        let (changed, fired) = a.on_reading(0, "bitaxe-1", &TH, &hot, t1 + Duration::from_secs(60));
        assert!(changed && fired.is_empty(), "{fired:?}");
        // Another miner has its own cooldown.
        assert_eq!(a.on_reading(1, "bitaxe-2", &TH, &hot, t1).1.len(), 1);
    }

    #[test]
    fn a_lasting_condition_without_alerts_of_its_own_leaves_the_cooldown_alone() {
        let mut a = rules();
        let t0 = Instant::now();
        assert!(a.hold(0, Kind::Watchdog, true));
        assert!(!a.hold(0, Kind::Watchdog, true));
        assert_eq!(a.active(0), [Kind::Watchdog]);
        // An hour of holding later, an action still alerts.
        let later = t0 + Duration::from_secs(3600);
        assert!(a.occurred(0, Kind::Watchdog, "x".into(), later).is_some());
        assert!(
            a.occurred(0, Kind::Watchdog, "y".into(), later).is_none(),
            "cooldown"
        );
        assert!(a.hold(0, Kind::Watchdog, false));
        assert!(a.active(0).is_empty());
    }

    #[test]
    fn a_hashrate_drop_is_measured_against_the_same_clock() {
        let mut a = rules();
        let t0 = Instant::now();
        for k in 0..20 {
            let (_, f) = a.on_reading(0, "m", &TH, &reading(1000.0 + (k % 3) as f64), t0);
            assert!(f.is_empty());
        }
        let (_, f) = a.on_reading(0, "m", &TH, &reading(700.0), t0);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("70 %"), "{}", f[0].message);
        // A lower clock is not a drop: its own mean starts.
        let mut lower = reading(700.0);
        lower.frequency = Some(400);
        a.on_reading(0, "m", &TH, &lower, t0);
        assert!(a.active(0).is_empty());
        // Paused is not a drop.
        let mut paused = reading(0.0);
        paused.frequency = Some(400);
        paused.paused = Some(true);
        for _ in 0..20 {
            a.on_reading(0, "m", &TH, &lower, t0);
        }
        a.on_reading(0, "m", &TH, &paused, t0);
        assert!(a.active(0).is_empty());
    }

    #[test]
    fn reject_rate_over_about_the_last_hundred_shares() {
        let mut a = rules();
        let t0 = Instant::now();
        let mut r = reading(1000.0);
        // 1 rejected in 100: fine.
        for k in 0..10u64 {
            r.shares_accepted = Some(k * 10);
            r.shares_rejected = Some(k / 9);
            a.on_reading(0, "m", &TH, &r, t0);
        }
        assert!(a.active(0).is_empty());
        // Then 6 of the next 60 rejected: 10 %.
        let (acc, rej) = (90u64, 1u64);
        let mut fired = Vec::new();
        for k in 1..=6u64 {
            r.shares_accepted = Some(acc + k * 9);
            r.shares_rejected = Some(rej + k);
            fired.extend(a.on_reading(0, "m", &TH, &r, t0).1);
        }
        assert_eq!(a.active(0), [Kind::RejectRate]);
        assert!(fired[0].message.contains("%"), "{fired:?}");
        // A restart resets the counters: no false alarm from the jump.
        r.shares_accepted = Some(1);
        r.shares_rejected = Some(0);
        a.on_reading(0, "m", &TH, &r, t0);
        assert!(a.active(0).is_empty());
    }

    #[test]
    fn efficiency_drift_against_its_own_history() {
        let mut a = rules();
        let t0 = Instant::now();
        for _ in 0..DRIFT_AFTER {
            a.on_reading(0, "m", &TH, &reading(1000.0), t0);
        }
        assert!(a.active(0).is_empty());
        // Same hashrate, 25 % more power: the recent mean climbs past +15 %.
        let mut worse = reading(1000.0);
        worse.power = Some(22.5);
        let mut fired = Vec::new();
        for _ in 0..60 {
            fired.extend(a.on_reading(0, "m", &TH, &worse, t0).1);
        }
        assert_eq!(a.active(0), [Kind::Drift]);
        assert!(fired[0].message.contains("525 MHz"), "{fired:?}");
    }
}
