//! Who may change a miner, and the controllers that watch over it.
//!
//! Every command carries its origin, and one arbiter per miner (beside its command queue, in the
//! hub) decides the same way every time: `safety` wins over everything, and after a thermal
//! action nothing else may raise the miner's frequency, voltage or mode until the watchdog ends
//! its safety hold; a user change wins over the strategy and holds it off that miner for
//! `energy.manual_hold`; the strategy acts only where nothing holds the miner.
//!
//! - [`watchdog`]: the thermal and hashrate watchdog (always on).
//! - [`alerts`]: the alert rules and their cooldowns.
//! - [`task`]: the controller task that runs both on every reading, beside the hub.
//!
//! Benchmarks (which outrank the user) arrive with the benchmark sweeps; their origin is here
//! already so every command path carries one.

pub mod alerts;
pub mod task;
pub mod watchdog;

use crate::miner::{Command, Telemetry};
use crate::safety::Limits;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The hub's sending side of a controller's channel. The hub never waits on a controller.
#[derive(Debug)]
pub struct Inbox<T> {
    tx: tokio::sync::mpsc::Sender<T>,
}

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Inbox {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> Inbox<T> {
    pub fn new(tx: tokio::sync::mpsc::Sender<T>) -> Inbox<T> {
        Inbox { tx }
    }

    /// A reading: dropped when the controller is busy (the next one carries the same news).
    pub fn offer(&self, input: T) {
        let _ = self.tx.try_send(input);
    }

    /// Something that must arrive (a command result, a switch): queued, or handed to a task
    /// that waits for room.
    pub fn deliver(&self, input: T) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(input)) = self.tx.try_send(input) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(input).await;
            });
        }
    }
}

/// One reading of a miner, as the watchdog and the alert rules see it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub asic_temp: Option<f64>,
    pub vr_temp: Option<f64>,
    pub firmware_overheat: Option<bool>,
    pub hashrate: Option<f64>,
    pub power: Option<f64>,
    pub frequency: Option<u32>,
    pub core_voltage: Option<u32>,
    /// The index of its work mode (Avalon), lowest first.
    pub work_mode: Option<usize>,
    pub shares_accepted: Option<u64>,
    pub shares_rejected: Option<u64>,
    pub paused: Option<bool>,
    /// Seconds since the miner started.
    pub uptime: Option<u64>,
}

impl Reading {
    /// The clock it runs at (frequency, core voltage), when both are known.
    pub fn clock(&self) -> Option<(u32, u32)> {
        Some((self.frequency?, self.core_voltage?))
    }

    /// Within `safety.boot_grace` of a start: a low hashrate is a boot, not a fault.
    pub fn booting(&self, safety: &crate::config::Safety) -> bool {
        self.uptime
            .is_some_and(|u| Duration::from_secs(u) < safety.boot_grace)
    }
}

/// Where a command came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Safety,
    Benchmark,
    User,
    Strategy,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Safety => "safety",
            Origin::Benchmark => "benchmark",
            Origin::User => "user",
            Origin::Strategy => "strategy",
        }
    }
}

/// One miner's arbiter.
#[derive(Debug, Clone, Default)]
pub struct Arbiter {
    /// A user change holds the strategy off until then.
    user_hold_until: Option<DateTime<Utc>>,
    /// The watchdog's safety hold, with what a refused command is told.
    safety_hold: Option<String>,
    /// A benchmark sweep owns the miner.
    benchmark: bool,
}

/// What a change does, as far as the arbiter is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// It sets something the strategy also sets (see [`is_setting`]).
    pub setting: bool,
    /// It could make the miner hotter: a higher frequency, voltage or mode, a slower fan,
    /// resuming mining, switching it on.
    pub raises: bool,
}

/// What admitting a command changed about the miner's hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldChange {
    None,
    /// The strategy is held off until then.
    HeldUntil(DateTime<Utc>),
}

/// Whether a command sets something the strategy also sets (a restart does not).
pub fn is_setting(command: &Command) -> bool {
    !matches!(command, Command::Restart)
}

/// Whether `command` could make the miner hotter than `now` shows it: a higher frequency,
/// voltage or work mode, a slower fan, resuming mining. What is not known counts as raising.
pub fn raises(command: &Command, now: Option<&Telemetry>, limits: Option<&Limits>) -> bool {
    let above = |new: u32, current: Option<f64>| current.is_none_or(|c| new as f64 > c + 0.5);
    let t = |f: fn(&Telemetry) -> Option<f64>| now.and_then(f);
    match command {
        Command::SetFrequency(f) => above(*f, t(|t| t.frequency)),
        Command::SetCoreVoltage(v) => above(*v, t(|t| t.core_voltage)),
        Command::SetClock(c) => {
            above(c.frequency_mhz, t(|t| t.frequency))
                || above(c.core_voltage_mv, t(|t| t.core_voltage))
        }
        Command::SetWorkMode(code) => {
            let current = now
                .and_then(|t| t.work_mode.as_deref())
                .and_then(|name| limits?.level_of(name));
            current.is_none_or(|c| *code > c)
        }
        Command::SetFanSpeed(p) => t(|t| t.fan_speed).is_none_or(|f| (*p as f64) < f - 0.5),
        Command::SetMining(on) => *on,
        Command::SetAutoFan(_) | Command::SelectPool(_) | Command::Restart => false,
    }
}

impl Arbiter {
    /// Until when the strategy is held off, if it is.
    pub fn held_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.user_hold_until.filter(|u| *u > now)
    }

    /// Whether a benchmark sweep owns the miner.
    pub fn benchmarking(&self) -> bool {
        self.benchmark
    }

    /// A sweep takes the miner (user and strategy changes are refused) or lets it go.
    pub fn set_benchmark(&mut self, on: bool) {
        self.benchmark = on;
    }

    /// Whether the watchdog holds the miner.
    pub fn safety_held(&self) -> bool {
        self.safety_hold.is_some()
    }

    /// The watchdog starts (with the reason refusals give) or ends (`None`) its safety hold.
    pub fn set_safety_hold(&mut self, reason: Option<String>) {
        self.safety_hold = reason;
    }

    /// Decides on a change to the miner: a command, or switching its plug. `Ok` says it may go
    /// (and what that changed about the hold); `Err` says why not, in words for the user.
    pub fn admit(
        &mut self,
        origin: Origin,
        change: Change,
        now: DateTime<Utc>,
        manual_hold: Duration,
    ) -> Result<HoldChange, String> {
        if let Some(reason) = &self.safety_hold {
            if origin != Origin::Safety && change.raises {
                return Err(reason.clone());
            }
        }
        if self.benchmark && matches!(origin, Origin::User | Origin::Strategy) {
            return Err("a benchmark is running on this miner and owns it: stop the benchmark first (its Stop benchmark button, or set/benchmark STOP)".into());
        }
        let setting = change.setting;
        match origin {
            Origin::Safety | Origin::Benchmark => Ok(HoldChange::None),
            Origin::User => {
                if !setting || manual_hold.is_zero() {
                    return Ok(HoldChange::None);
                }
                let until = now
                    + chrono::Duration::from_std(manual_hold).unwrap_or(chrono::Duration::hours(2));
                self.user_hold_until = Some(until);
                Ok(HoldChange::HeldUntil(until))
            }
            Origin::Strategy => match self.held_until(now) {
                Some(until) => Err(format!(
                    "a change made by hand holds the strategy off this miner until {}",
                    until.format("%Y-%m-%d %H:%M UTC")
                )),
                None => Ok(HoldChange::None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(command: &Command) -> Change {
        Change {
            setting: is_setting(command),
            raises: false,
        }
    }

    #[test]
    fn what_raises_a_miner() {
        let t = Telemetry {
            frequency: Some(500.0),
            core_voltage: Some(1150.0),
            fan_speed: Some(60.0),
            ..Default::default()
        };
        let clock = |f, v| {
            Command::SetClock(crate::miner::ClockConfig {
                frequency_mhz: f,
                core_voltage_mv: v,
            })
        };
        assert!(raises(&Command::SetFrequency(525), Some(&t), None));
        assert!(!raises(&Command::SetFrequency(475), Some(&t), None));
        assert!(!raises(&Command::SetFrequency(500), Some(&t), None));
        assert!(raises(&Command::SetCoreVoltage(1200), Some(&t), None));
        assert!(!raises(&clock(400, 1060), Some(&t), None));
        assert!(raises(&clock(400, 1200), Some(&t), None));
        assert!(raises(&Command::SetFanSpeed(40), Some(&t), None));
        assert!(!raises(&Command::SetFanSpeed(100), Some(&t), None));
        assert!(raises(&Command::SetMining(true), Some(&t), None));
        assert!(!raises(&Command::Restart, Some(&t), None));
        // Unknown counts as raising.
        assert!(raises(&Command::SetFrequency(400), None, None));
    }

    #[test]
    fn a_safety_hold_refuses_raises_from_anyone_but_safety() {
        let mut a = Arbiter::default();
        let t0: DateTime<Utc> = "2024-01-08T10:00:00Z".parse().unwrap();
        let hold = Duration::from_secs(7200);
        a.set_safety_hold(Some("the thermal watchdog holds bitaxe-1".into()));
        let raise = Change {
            setting: true,
            raises: true,
        };
        let lower = Change {
            setting: true,
            raises: false,
        };
        for origin in [Origin::User, Origin::Strategy, Origin::Benchmark] {
            let e = a.admit(origin, raise, t0, hold).unwrap_err();
            assert!(e.contains("thermal watchdog"), "{e}");
        }
        assert!(a.admit(Origin::Safety, raise, t0, hold).is_ok());
        assert!(a.admit(Origin::User, lower, t0, hold).is_ok());
        a.set_safety_hold(None);
        assert!(a.admit(Origin::User, raise, t0, hold).is_ok());
        // A benchmark owns the miner: the user and the strategy wait, safety does not.
        a.set_benchmark(true);
        for origin in [Origin::User, Origin::Strategy] {
            let e = a.admit(origin, lower, t0, hold).unwrap_err();
            assert!(e.contains("benchmark is running"), "{e}");
        }
        assert!(a.admit(Origin::Benchmark, raise, t0, hold).is_ok());
        assert!(a.admit(Origin::Safety, lower, t0, hold).is_ok());
    }

    #[test]
    fn a_user_change_holds_the_strategy_off_for_manual_hold() {
        let mut a = Arbiter::default();
        let t0: DateTime<Utc> = "2024-01-08T10:00:00Z".parse().unwrap();
        let hold = Duration::from_secs(7200);
        let eco = Command::SetWorkMode(0);
        assert_eq!(
            a.admit(Origin::Strategy, change(&eco), t0, hold),
            Ok(HoldChange::None)
        );
        let until = t0 + chrono::Duration::hours(2);
        assert_eq!(
            a.admit(Origin::User, change(&Command::SetFrequency(500)), t0, hold),
            Ok(HoldChange::HeldUntil(until))
        );
        let refused = a
            .admit(
                Origin::Strategy,
                change(&eco),
                t0 + chrono::Duration::minutes(119),
                hold,
            )
            .unwrap_err();
        assert!(refused.contains("holds the strategy off"), "{refused}");
        assert!(a.admit(Origin::Strategy, change(&eco), until, hold).is_ok());
        // A restart is not a setting: no hold.
        let mut b = Arbiter::default();
        assert_eq!(
            b.admit(Origin::User, change(&Command::Restart), t0, hold),
            Ok(HoldChange::None)
        );
        assert!(b.held_until(t0).is_none());
    }
}
