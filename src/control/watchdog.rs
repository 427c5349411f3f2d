//! The watchdog: always on, every miner, origin `safety`. Synchronous and clock-free (the time
//! of each reading is a parameter); [`super::task`] runs it on every reading.
//!
//! - Thermal: ASIC ≥ `temp_limit` steps the frequency down one `step_mhz` (again each poll while
//!   still above, never below the lowest allowed); ≥ `temp_overheat`, or VR ≥ `vr_temp_limit`,
//!   puts the safe profile on at once (its lowest mode), and if it still overheats there it
//!   pauses mining, or switches the plug off. Families without clock control step their work
//!   modes instead. Any of these starts a safety hold: nothing may raise the miner's frequency,
//!   voltage or mode until it has stayed 5 °C below `temp_limit` for `hold`; what the watchdog
//!   paused or switched off is switched back on then.
//! - Hashrate: zero, or exactly the same, for `zero_hashrate_polls` polls in a row (outside a
//!   boot, a pause and a thermal action) → a restart, at most `max_restarts_per_hour`; then it
//!   says so and leaves the miner alone until it hashes again.

use super::Reading;
use crate::config::{Safety, Thermal};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far below `temp_limit` a miner must stay for its hold to end, °C.
pub const COOL_MARGIN: f64 = 5.0;

/// Polls still overheating on the safe profile before mining is paused or the plug goes off.
const ESCALATE_AFTER: u32 = 3;

/// What the watchdog falls back to when a miner overheats.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SafeProfile {
    /// A clock preset (ESP-Miner's lowest mode): its name, frequency and core voltage.
    Clock {
        mode: String,
        frequency: u32,
        core_voltage: u32,
    },
    /// The lowest frequency allowed (clock control without presets).
    Frequency(u32),
    /// The firmware's lowest work mode (Avalon).
    WorkMode(String),
    /// Nothing can be set (read-only families).
    #[default]
    None,
}

/// What the watchdog can do to one miner, from its limits and config.
#[derive(Debug, Clone, PartialEq)]
pub struct Controls {
    pub name: String,
    /// Its family's temperature thresholds.
    pub thermal: Thermal,
    /// The lowest frequency allowed, when the frequency can be set.
    pub frequency_min: Option<u32>,
    /// Work modes, lowest first, when the firmware switches modes itself (no clock control).
    pub work_modes: Vec<String>,
    pub safe: SafeProfile,
    pub can_pause: bool,
    pub can_restart: bool,
    pub plug: bool,
}

/// What the watchdog asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// A command with origin `safety`, as a set-topic property and value.
    Command {
        property: &'static str,
        value: String,
    },
    /// The safety hold starts, with the reason a refused command gives, or ends (`None`).
    Hold(Option<String>),
    /// An event for `bridge/event` and the store.
    Event(Value),
}

/// A safety hold under way.
#[derive(Debug, Clone)]
struct Hold {
    /// The hottest ASIC (or VR) reading of this hold, for the reason.
    peak: f64,
    /// Since when it has been cool enough, if it is.
    cool_since: Option<Instant>,
    /// Polls still overheating on the safe profile.
    overheat_at_safe: u32,
    /// The watchdog paused its mining.
    paused: bool,
    /// The watchdog switched its plug off then.
    powered_off: Option<Instant>,
    /// Said once per hold that nothing more can be done.
    said_cannot_cool: bool,
}

/// One miner's watch.
#[derive(Debug, Default)]
struct Watch {
    hold: Option<Hold>,
    /// When the last thermal command went out: one per poll interval, however often readings
    /// come (a command's own re-poll arrives before the chip has cooled).
    last_thermal: Option<Instant>,
    zero_polls: u32,
    same_polls: u32,
    last_hashrate: Option<f64>,
    restarts: VecDeque<Instant>,
    gave_up: bool,
}

/// The watchdog for the whole fleet.
pub struct Watchdog {
    safety: Safety,
    poll_interval: Duration,
    /// By miner index.
    miners: Vec<Watch>,
}

fn c1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

impl Watchdog {
    pub fn new(safety: Safety, poll_interval: Duration) -> Watchdog {
        Watchdog {
            safety,
            poll_interval,
            miners: Vec::new(),
        }
    }

    fn watch(&mut self, index: usize) -> &mut Watch {
        if self.miners.len() <= index {
            self.miners.resize_with(index + 1, Watch::default);
        }
        &mut self.miners[index]
    }

    /// Whether miner `index` is in a safety hold.
    pub fn holding(&self, index: usize) -> bool {
        self.miners.get(index).is_some_and(|w| w.hold.is_some())
    }

    /// Whether the watchdog has given up restarting miner `index`.
    pub fn gave_up(&self, index: usize) -> bool {
        self.miners.get(index).is_some_and(|w| w.gave_up)
    }

    /// The miner was in a safety hold when the daemon last stopped: the hold goes on (no event;
    /// it was told then) and ends as any, once it has been cool for `hold`.
    pub fn resume_hold(&mut self, index: usize) {
        let w = self.watch(index);
        if w.hold.is_none() {
            w.hold = Some(Hold {
                peak: f64::MIN,
                cool_since: None,
                overheat_at_safe: 0,
                paused: false,
                powered_off: None,
                said_cannot_cool: false,
            });
        }
    }

    /// The miner was switched off on purpose, or is a different miner now: its counts start
    /// again (a hold is kept: it is still as hot as it was).
    pub fn reset_counts(&mut self, index: usize) {
        if let Some(w) = self.miners.get_mut(index) {
            w.zero_polls = 0;
            w.same_polls = 0;
            w.last_hashrate = None;
        }
    }

    /// Acts on one reading of miner `index`.
    pub fn on_reading(
        &mut self,
        index: usize,
        c: &Controls,
        r: &Reading,
        now: Instant,
    ) -> Vec<Act> {
        self.watch(index);
        let s = &self.safety;
        let th = &c.thermal;
        let w = &mut self.miners[index];
        let mut acts = Vec::new();
        let asic = r.asic_temp;
        let vr = r.vr_temp;
        let overheat = asic.is_some_and(|t| t >= th.temp_overheat)
            || vr.is_some_and(|t| t >= th.vr_temp_limit);
        let hot = asic.is_some_and(|t| t >= th.temp_limit);
        let temps = json!({ "asic_temp": asic.map(c1), "vr_temp": vr.map(c1) });
        let event = |action: &str, command: &str, reason: String| {
            let mut e = json!({ "type": "watchdog_action", "miner": c.name, "action": action,
                "command": command, "reason": reason });
            e["asic_temp"] = temps["asic_temp"].clone();
            e["vr_temp"] = temps["vr_temp"].clone();
            Act::Event(e)
        };
        // One thermal command per poll interval (less a little for jitter).
        let may_act = w
            .last_thermal
            .is_none_or(|t| now.duration_since(t) >= self.poll_interval.mul_f64(0.8));

        if overheat || hot {
            let peak = asic.unwrap_or(f64::MIN).max(vr.unwrap_or(f64::MIN));
            match &mut w.hold {
                Some(h) => {
                    h.peak = h.peak.max(peak);
                    h.cool_since = None;
                }
                None => {
                    let what = if overheat && !asic.is_some_and(|t| t >= th.temp_overheat) {
                        format!("its VR reached {:.1} °C", vr.unwrap_or_default())
                    } else {
                        format!("it reached {:.1} °C", asic.unwrap_or_default())
                    };
                    w.hold = Some(Hold {
                        peak,
                        cool_since: None,
                        overheat_at_safe: 0,
                        paused: false,
                        powered_off: None,
                        said_cannot_cool: false,
                    });
                    let reason = hold_reason(&c.name, th, s.hold, &what);
                    acts.push(Act::Hold(Some(reason.clone())));
                    acts.push(Act::Event(json!({ "type": "safety_hold", "miner": c.name,
                        "reason": reason, "asic_temp": temps["asic_temp"], "vr_temp": temps["vr_temp"] })));
                }
            }
        }

        if overheat {
            let at_safe = at_safe(c, r);
            let hold = w.hold.as_mut().expect("a hold starts above");
            if !at_safe {
                hold.overheat_at_safe = 0;
                if may_act {
                    if let Some((property, value)) = safe_command(c, r) {
                        let reason = format!(
                            "overheating (ASIC ≥ {} °C or VR ≥ {} °C): the safe profile at once",
                            th.temp_overheat, th.vr_temp_limit
                        );
                        acts.push(event(
                            "safe_profile",
                            &format!("{property} {value}"),
                            reason,
                        ));
                        acts.push(Act::Command { property, value });
                        w.last_thermal = Some(now);
                    }
                }
            } else {
                hold.overheat_at_safe += 1;
                let escalate = hold.overheat_at_safe >= ESCALATE_AFTER
                    && !hold.paused
                    && hold.powered_off.is_none()
                    && r.paused != Some(true);
                if escalate {
                    let reason = format!(
                        "still overheating on its safe profile after {} polls",
                        hold.overheat_at_safe
                    );
                    if c.can_pause {
                        hold.paused = true;
                        acts.push(event("pause", "mining OFF", reason));
                        acts.push(Act::Command {
                            property: "mining",
                            value: "OFF".into(),
                        });
                    } else if c.plug {
                        hold.powered_off = Some(now);
                        acts.push(event("power_off", "power OFF", reason));
                        acts.push(Act::Command {
                            property: "power",
                            value: "OFF".into(),
                        });
                    } else if !hold.said_cannot_cool {
                        hold.said_cannot_cool = true;
                        acts.push(event(
                            "cannot_cool",
                            "",
                            format!("{reason}, and it can neither pause nor be switched off at a plug: check its fan and airflow, or switch it off"),
                        ));
                    }
                    w.last_thermal = Some(now);
                }
            }
        } else if hot && may_act {
            if let Some((property, value)) = step_down(c, r, s.step_mhz) {
                let reason = format!("ASIC at or above {} °C: one step down", th.temp_limit);
                acts.push(event("step_down", &format!("{property} {value}"), reason));
                acts.push(Act::Command { property, value });
                w.last_thermal = Some(now);
            }
        }

        // Cooling: the hold ends after `hold` below temp_limit − 5 °C (and VR below its limit −
        // 5 °C); what the watchdog paused is resumed.
        if let Some(h) = &mut w.hold {
            let cool = asic.is_some_and(|t| t < th.temp_limit - COOL_MARGIN)
                && vr.is_none_or(|t| t < th.vr_temp_limit - COOL_MARGIN);
            if !cool {
                h.cool_since = None;
            } else {
                let since = *h.cool_since.get_or_insert(now);
                if now.duration_since(since) >= s.hold {
                    let paused = h.paused;
                    w.hold = None;
                    let reason = format!(
                        "below {} °C for {}",
                        th.temp_limit - COOL_MARGIN,
                        humantime::format_duration(s.hold)
                    );
                    acts.push(Act::Hold(None));
                    acts.push(Act::Event(
                        json!({ "type": "safety_hold_released", "miner": c.name,
                        "reason": reason, "asic_temp": temps["asic_temp"] }),
                    ));
                    if paused {
                        acts.push(event("resume", "mining ON", reason));
                        acts.push(Act::Command {
                            property: "mining",
                            value: "ON".into(),
                        });
                    }
                }
            }
        }

        acts.extend(self.hashrate(index, c, r, now, hot || overheat));
        acts
    }

    /// The zero / flat-lined hashrate rule.
    fn hashrate(
        &mut self,
        index: usize,
        c: &Controls,
        r: &Reading,
        now: Instant,
        thermal: bool,
    ) -> Vec<Act> {
        self.watch(index);
        let s = &self.safety;
        let w = &mut self.miners[index];
        let booting = r.booting(s);
        let paused = r.paused == Some(true) || w.hold.as_ref().is_some_and(|h| h.paused);
        if booting || paused || thermal {
            // Not a fault to count: a boot, a pause, or the thermal rule acting first (a
            // restart while hot would trip again).
            w.zero_polls = 0;
            w.same_polls = 0;
            w.last_hashrate = r.hashrate;
            return Vec::new();
        }
        let Some(h) = r.hashrate else {
            return Vec::new();
        };
        if h <= 0.0 {
            w.zero_polls += 1;
            w.same_polls = 0;
        } else if w.last_hashrate == Some(h) {
            w.same_polls += 1;
            w.zero_polls = 0;
        } else {
            w.zero_polls = 0;
            w.same_polls = 0;
            if w.gave_up {
                w.gave_up = false;
            }
        }
        w.last_hashrate = Some(h);
        let stuck = w.zero_polls.max(w.same_polls);
        if stuck < s.zero_hashrate_polls {
            return Vec::new();
        }
        let what = if w.zero_polls > 0 {
            format!("no hashrate for {stuck} polls")
        } else {
            format!("the same hashrate ({h} GH/s) for {stuck} polls: the firmware is stuck")
        };
        while w
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
        {
            w.restarts.pop_front();
        }
        w.zero_polls = 0;
        w.same_polls = 0;
        if c.can_restart && (w.restarts.len() as u32) < s.max_restarts_per_hour {
            w.restarts.push_back(now);
            return vec![
                Act::Event(
                    json!({ "type": "watchdog_action", "miner": c.name, "action": "restart",
                    "command": "restart", "reason": what, "restarts_last_hour": w.restarts.len() }),
                ),
                Act::Command {
                    property: "restart",
                    value: "PRESS".into(),
                },
            ];
        }
        if w.gave_up {
            return Vec::new();
        }
        w.gave_up = true;
        let reason = if c.can_restart {
            format!(
                "{what}, and it was restarted {} times in the last hour (safety.max_restarts_per_hour); leaving it alone until it hashes again",
                w.restarts.len()
            )
        } else {
            format!("{what}, and it cannot be restarted remotely; check it")
        };
        vec![Act::Event(
            json!({ "type": "watchdog_gave_up", "miner": c.name, "reason": reason }),
        )]
    }

    /// Miners switched off at their plug by the watchdog are switched on again once `hold`
    /// has passed (they send no readings to cool down by while off); their hold goes on until
    /// their readings show them cool.
    pub fn on_tick(&mut self, now: Instant, names: impl Fn(usize) -> String) -> Vec<(usize, Act)> {
        let hold_for = self.safety.hold;
        let mut acts = Vec::new();
        for (index, w) in self.miners.iter_mut().enumerate() {
            let Some(h) = &mut w.hold else { continue };
            if h.powered_off
                .is_some_and(|t| now.duration_since(t) >= hold_for)
            {
                h.powered_off = None;
                h.overheat_at_safe = 0;
                let reason = format!(
                    "switched off for {} to cool down",
                    humantime::format_duration(hold_for)
                );
                acts.push((
                    index,
                    Act::Event(json!({ "type": "watchdog_action", "miner": names(index),
                        "action": "power_on", "command": "power ON", "reason": reason })),
                ));
                acts.push((
                    index,
                    Act::Command {
                        property: "power",
                        value: "ON".into(),
                    },
                ));
            }
        }
        acts
    }
}

/// What a refused command says during a hold.
fn hold_reason(name: &str, th: &Thermal, hold: Duration, what: &str) -> String {
    format!(
        "the thermal watchdog holds {name} ({what}): nothing may raise its frequency, voltage or mode until it has stayed below {} °C for {}",
        th.temp_limit - COOL_MARGIN,
        humantime::format_duration(hold)
    )
}

/// Whether the miner is on (or below) its safe profile.
fn at_safe(c: &Controls, r: &Reading) -> bool {
    match &c.safe {
        SafeProfile::Clock { frequency, .. } => r.frequency.is_some_and(|f| f <= *frequency),
        SafeProfile::Frequency(f) => r.frequency.is_some_and(|x| x <= *f),
        SafeProfile::WorkMode(_) => r.work_mode == Some(0),
        SafeProfile::None => true,
    }
}

/// The command that puts the safe profile on without raising anything: the preset when its
/// voltage is no higher than the miner's now, else only its frequency.
fn safe_command(c: &Controls, r: &Reading) -> Option<(&'static str, String)> {
    match &c.safe {
        SafeProfile::Clock {
            mode,
            frequency,
            core_voltage,
        } => {
            if r.core_voltage.is_none_or(|v| *core_voltage <= v) {
                Some(("mode", mode.clone()))
            } else {
                Some(("frequency", frequency.to_string()))
            }
        }
        SafeProfile::Frequency(f) => Some(("frequency", f.to_string())),
        SafeProfile::WorkMode(m) => Some(("mode", m.clone())),
        SafeProfile::None => None,
    }
}

/// One step down: `step` MHz lower (not below the lowest allowed), or the next lower work mode.
fn step_down(c: &Controls, r: &Reading, step: u32) -> Option<(&'static str, String)> {
    if let (Some(min), Some(f)) = (c.frequency_min, r.frequency) {
        return (f > min).then(|| ("frequency", f.saturating_sub(step).max(min).to_string()));
    }
    let m = r.work_mode.filter(|m| *m > 0)?;
    c.work_modes.get(m - 1).map(|name| ("mode", name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gamma() -> Controls {
        Controls {
            name: "bitaxe-1".into(),
            thermal: Safety::default().thermal(crate::config::MinerKind::Axeos),
            frequency_min: Some(400),
            work_modes: Vec::new(),
            safe: SafeProfile::Clock {
                mode: "eco".into(),
                frequency: 400,
                core_voltage: 1060,
            },
            can_pause: true,
            can_restart: true,
            plug: false,
        }
    }

    fn at(temp: f64, frequency: u32) -> Reading {
        Reading {
            asic_temp: Some(temp),
            vr_temp: Some(50.0),
            hashrate: Some(1000.0 + temp),
            frequency: Some(frequency),
            core_voltage: Some(1150),
            paused: Some(false),
            uptime: Some(3600),
            ..Default::default()
        }
    }

    fn commands(acts: &[Act]) -> Vec<(&'static str, String)> {
        acts.iter()
            .filter_map(|a| match a {
                Act::Command { property, value } => Some((*property, value.clone())),
                _ => None,
            })
            .collect()
    }

    fn safety() -> Safety {
        Safety {
            hold: Duration::from_secs(600),
            ..Safety::default()
        }
    }

    #[test]
    fn hot_steps_down_once_per_poll_and_never_below_the_minimum() {
        let mut w = Watchdog::new(safety(), Duration::from_secs(30));
        let t0 = Instant::now();
        let acts = w.on_reading(0, &gamma(), &at(66.0, 525), t0);
        assert_eq!(commands(&acts), [("frequency", "500".to_string())]);
        assert!(acts
            .iter()
            .any(|a| matches!(a, Act::Hold(Some(r)) if r.contains("66.0 °C"))));
        // The command's own re-poll a second later: no second step.
        assert!(
            commands(&w.on_reading(0, &gamma(), &at(66.0, 500), t0 + Duration::from_secs(1)))
                .is_empty()
        );
        let acts = w.on_reading(0, &gamma(), &at(65.5, 500), t0 + Duration::from_secs(30));
        assert_eq!(commands(&acts), [("frequency", "475".to_string())]);
        let acts = w.on_reading(0, &gamma(), &at(65.2, 410), t0 + Duration::from_secs(60));
        assert_eq!(commands(&acts), [("frequency", "400".to_string())]);
        let acts = w.on_reading(0, &gamma(), &at(65.1, 400), t0 + Duration::from_secs(90));
        assert!(commands(&acts).is_empty(), "{acts:?}");
        assert!(w.holding(0));
    }

    #[test]
    fn overheating_puts_the_safe_profile_on_then_pauses_and_the_hold_ends_after_cooling() {
        let mut w = Watchdog::new(safety(), Duration::from_secs(30));
        let t0 = Instant::now();
        let acts = w.on_reading(0, &gamma(), &at(71.0, 600), t0);
        assert_eq!(commands(&acts), [("mode", "eco".to_string())]);
        let mut t = t0;
        let mut paused = false;
        for _ in 0..ESCALATE_AFTER {
            t += Duration::from_secs(30);
            let acts = w.on_reading(0, &gamma(), &at(70.5, 400), t);
            paused |= commands(&acts).contains(&("mining", "OFF".to_string()));
        }
        assert!(paused, "still overheating on eco: paused");
        // Cool, but not for long enough: still held.
        let mut r = at(55.0, 400);
        r.paused = Some(true);
        t += Duration::from_secs(30);
        assert!(w.on_reading(0, &gamma(), &r, t).is_empty());
        // Warm again (above 60 °C) restarts the cooling time.
        t += Duration::from_secs(300);
        r.asic_temp = Some(61.0);
        w.on_reading(0, &gamma(), &r, t);
        r.asic_temp = Some(55.0);
        t += Duration::from_secs(30);
        w.on_reading(0, &gamma(), &r, t);
        t += Duration::from_secs(599);
        assert!(w.holding(0));
        assert!(w.on_reading(0, &gamma(), &r, t).is_empty());
        t += Duration::from_secs(1);
        let acts = w.on_reading(0, &gamma(), &r, t);
        assert!(acts.contains(&Act::Hold(None)));
        assert_eq!(commands(&acts), [("mining", "ON".to_string())]);
        assert!(!w.holding(0));
    }

    #[test]
    fn the_safe_profile_never_raises_the_voltage() {
        let mut w = Watchdog::new(safety(), Duration::from_secs(30));
        let mut r = at(72.0, 550);
        r.core_voltage = Some(1000);
        let acts = w.on_reading(0, &gamma(), &r, Instant::now());
        assert_eq!(commands(&acts), [("frequency", "400".to_string())]);
    }

    #[test]
    fn avalon_steps_its_work_modes_and_uses_the_plug() {
        let nano = Controls {
            name: "nano".into(),
            thermal: Safety::default().thermal(crate::config::MinerKind::Axeos),
            frequency_min: None,
            work_modes: vec!["low".into(), "medium".into(), "high".into()],
            safe: SafeProfile::WorkMode("low".into()),
            can_pause: false,
            can_restart: true,
            plug: true,
        };
        let mut w = Watchdog::new(safety(), Duration::from_secs(30));
        let t0 = Instant::now();
        let mut r = Reading {
            asic_temp: Some(66.0),
            work_mode: Some(2),
            hashrate: Some(4000.0),
            ..Default::default()
        };
        assert_eq!(
            commands(&w.on_reading(0, &nano, &r, t0)),
            [("mode", "medium".to_string())]
        );
        r.asic_temp = Some(75.0);
        r.work_mode = Some(1);
        assert_eq!(
            commands(&w.on_reading(0, &nano, &r, t0 + Duration::from_secs(30))),
            [("mode", "low".to_string())]
        );
        r.work_mode = Some(0);
        let mut off = false;
        for k in 2..6 {
            let acts = w.on_reading(0, &nano, &r, t0 + Duration::from_secs(30 * k));
            off |= commands(&acts).contains(&("power", "OFF".to_string()));
        }
        assert!(off);
        let later = t0 + Duration::from_secs(30 * 6) + Duration::from_secs(600);
        let acts = w.on_tick(later, |_| "nano".into());
        assert!(acts.iter().any(|(_, a)| *a
            == Act::Command {
                property: "power",
                value: "ON".into()
            }));
        assert!(w.holding(0), "held until its readings show it cool");
    }

    #[test]
    fn zero_hashrate_restarts_no_more_often_than_the_cap_then_gives_up() {
        let s = Safety {
            zero_hashrate_polls: 3,
            max_restarts_per_hour: 2,
            ..safety()
        };
        let mut w = Watchdog::new(s, Duration::from_secs(30));
        let mut r = at(50.0, 525);
        r.hashrate = Some(0.0);
        let t0 = Instant::now();
        let mut restarts = 0;
        let mut gave_up = 0;
        for k in 0..30 {
            let acts = w.on_reading(0, &gamma(), &r, t0 + Duration::from_secs(30 * k));
            restarts += commands(&acts).iter().filter(|c| c.0 == "restart").count();
            gave_up += acts
                .iter()
                .filter(|a| matches!(a, Act::Event(e) if e["type"] == "watchdog_gave_up"))
                .count();
        }
        assert_eq!((restarts, gave_up), (2, 1));
        assert!(w.gave_up(0));
        // An hour after the first restart, and hashing again, it is watched as before.
        r.hashrate = Some(1000.0);
        w.on_reading(0, &gamma(), &r, t0 + Duration::from_secs(3700));
        assert!(!w.gave_up(0));
        r.hashrate = Some(0.0);
        let mut again = 0;
        for k in 0..3 {
            let acts = w.on_reading(0, &gamma(), &r, t0 + Duration::from_secs(3730 + 30 * k));
            again += commands(&acts).iter().filter(|c| c.0 == "restart").count();
        }
        assert_eq!(again, 1);
    }

    #[test]
    fn a_boot_a_pause_or_a_frozen_reading_are_told_apart() {
        let s = Safety {
            zero_hashrate_polls: 3,
            ..safety()
        };
        let mut w = Watchdog::new(s, Duration::from_secs(30));
        let t0 = Instant::now();
        let mut r = at(50.0, 525);
        r.hashrate = Some(0.0);
        r.uptime = Some(60);
        let mut paused = r;
        paused.uptime = Some(3600);
        paused.paused = Some(true);
        for k in 0..10 {
            let t = t0 + Duration::from_secs(30 * k);
            assert!(
                commands(&w.on_reading(0, &gamma(), &r, t)).is_empty(),
                "booting"
            );
            assert!(
                commands(&w.on_reading(1, &gamma(), &paused, t)).is_empty(),
                "paused"
            );
        }
        // Exactly the same non-zero hashrate, poll after poll: frozen.
        let mut frozen = at(50.0, 525);
        frozen.hashrate = Some(1012.5);
        let mut restarted = false;
        for k in 0..4 {
            let acts = w.on_reading(2, &gamma(), &frozen, t0 + Duration::from_secs(30 * k));
            restarted |= commands(&acts).iter().any(|c| c.0 == "restart");
        }
        assert!(restarted);
    }
}
