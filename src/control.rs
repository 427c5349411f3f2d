//! Who may change a miner. Every command carries its origin, and one arbiter per miner (beside
//! its command queue, in the hub) decides the same way every time: a user change wins over the
//! strategy and holds it off that miner for `energy.manual_hold`; the strategy acts only where
//! nothing holds the miner.
//!
//! Safety holds and benchmarks (which outrank the user) arrive with the watchdog and the
//! benchmark sweeps; their origins are here already so every command path carries one.

use crate::miner::Command;
use chrono::{DateTime, Utc};
use std::time::Duration;

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

impl Arbiter {
    /// Until when the strategy is held off, if it is.
    pub fn held_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.user_hold_until.filter(|u| *u > now)
    }

    /// Decides on a change to the miner: a command, or switching its plug. `setting` says
    /// whether it sets something the strategy also sets (see [`is_setting`]). `Ok` says it may
    /// go (and what that changed about the hold); `Err` says why not, in words for the user.
    pub fn admit(
        &mut self,
        origin: Origin,
        setting: bool,
        now: DateTime<Utc>,
        manual_hold: Duration,
    ) -> Result<HoldChange, String> {
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

    #[test]
    fn a_user_change_holds_the_strategy_off_for_manual_hold() {
        let mut a = Arbiter::default();
        let t0: DateTime<Utc> = "2024-01-08T10:00:00Z".parse().unwrap();
        let hold = Duration::from_secs(7200);
        let eco = Command::SetWorkMode(0);
        assert_eq!(
            a.admit(Origin::Strategy, is_setting(&eco), t0, hold),
            Ok(HoldChange::None)
        );
        let until = t0 + chrono::Duration::hours(2);
        assert_eq!(
            a.admit(
                Origin::User,
                is_setting(&Command::SetFrequency(500)),
                t0,
                hold
            ),
            Ok(HoldChange::HeldUntil(until))
        );
        let refused = a
            .admit(
                Origin::Strategy,
                is_setting(&eco),
                t0 + chrono::Duration::minutes(119),
                hold,
            )
            .unwrap_err();
        assert!(refused.contains("holds the strategy off"), "{refused}");
        assert!(a
            .admit(Origin::Strategy, is_setting(&eco), until, hold)
            .is_ok());
        // A restart is not a setting: no hold.
        let mut b = Arbiter::default();
        assert_eq!(
            b.admit(Origin::User, is_setting(&Command::Restart), t0, hold),
            Ok(HoldChange::None)
        );
        assert!(b.held_until(t0).is_none());
    }
}
