//! Energy accounting: each miner's energy (kWh) integrated from its power samples, and today's
//! cost at the price of the slot each bit of energy was drawn in. Totals are kept in the store
//! by the caller, so they never go backwards across restarts.

use super::prices::{uk_day, PriceBook};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Samples further apart than this are not joined: the energy in between is unknown, and a
/// meter that guesses could only guess wrong.
const MAX_GAP_SECONDS: i64 = 10 * 60;

/// What is kept per miner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterRecord {
    /// Energy since the meter was first seen, kWh.
    pub kwh: f64,
    /// The UK day `cost_today` is for (its start, ms).
    pub day_ms: i64,
    /// £ spent today.
    pub cost_today: f64,
    /// kWh drawn today with no known price (not in `cost_today`).
    pub unpriced_kwh_today: f64,
}

/// One miner's meter.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    pub record: MeterRecord,
    last: Option<(DateTime<Utc>, f64)>,
    /// Changed since last saved.
    pub dirty: bool,
}

impl Meter {
    pub fn from_record(record: MeterRecord) -> Meter {
        Meter {
            record,
            last: None,
            dirty: false,
        }
    }

    /// Adds a power sample (W) at `at`. A missing power reading breaks the chain: nothing is
    /// counted across it.
    pub fn add(&mut self, at: DateTime<Utc>, power_w: Option<f64>, book: &PriceBook) {
        self.roll_day(at);
        let power = power_w.filter(|p| p.is_finite() && *p >= 0.0);
        if let (Some((t0, p0)), Some(p1)) = (self.last, power) {
            let dt = (at - t0).num_milliseconds() as f64 / 1000.0;
            if dt > 0.0 && dt <= MAX_GAP_SECONDS as f64 {
                let kwh = (p0 + p1) / 2.0 * dt / 3.6e6;
                self.record.kwh += kwh;
                let mid = t0 + (at - t0) / 2;
                match book.at(mid) {
                    Some(slot) => self.record.cost_today += kwh * slot.p_per_kwh / 100.0,
                    None => self.record.unpriced_kwh_today += kwh,
                }
                self.dirty = true;
            }
        }
        match power {
            Some(p) if self.last.is_none_or(|(t0, _)| at > t0) => self.last = Some((at, p)),
            None => self.last = None,
            _ => {}
        }
    }

    /// A new UK day starts cost at zero.
    pub fn roll_day(&mut self, at: DateTime<Utc>) {
        let day = uk_day(at).0.timestamp_millis();
        if day != self.record.day_ms {
            self.record.day_ms = day;
            self.record.cost_today = 0.0;
            self.record.unpriced_kwh_today = 0.0;
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::prices::{PriceSlot, SlotKind};
    use chrono::Duration;

    #[test]
    fn energy_integrates_power_and_cost_uses_each_slots_price() {
        let start: DateTime<Utc> = "2024-01-08T10:00:00Z".parse().unwrap();
        let mut book = PriceBook::new();
        book.insert([10.0, -5.0].iter().enumerate().map(|(i, p)| PriceSlot {
            start: start + Duration::minutes(30 * i as i64),
            end: start + Duration::minutes(30 * (i as i64 + 1)),
            p_per_kwh: *p,
            kind: SlotKind::Actual,
        }));
        let mut m = Meter::default();
        // 1000 W for an hour, every 30 s: 1 kWh; half at 10 p, half at -5 p.
        for i in 0..=120 {
            m.add(start + Duration::seconds(30 * i), Some(1000.0), &book);
        }
        assert!((m.record.kwh - 1.0).abs() < 1e-9);
        assert!((m.record.cost_today - 0.025).abs() < 1e-9);
        // An hour's silence adds nothing; the next sample starts a new chain.
        let later = start + Duration::hours(3);
        m.add(later, Some(1000.0), &book);
        assert!((m.record.kwh - 1.0).abs() < 1e-9);
        m.add(later + Duration::seconds(36), Some(1000.0), &book);
        assert!((m.record.kwh - 1.01).abs() < 1e-9);
        assert!(m.record.unpriced_kwh_today > 0.0);
        // Midnight (UK) starts today's cost again; the energy total carries on.
        let tomorrow = "2024-01-09T00:00:10Z".parse().unwrap();
        m.add(tomorrow, Some(1000.0), &book);
        assert_eq!(m.record.cost_today, 0.0);
        assert!((m.record.kwh - 1.01).abs() < 1e-9);
    }
}
