//! Price slots and the book that holds them: 30-minute UTC slots, looked up by instant, by UK
//! day (Europe/London, so 46- and 50-slot days exist) and by cheapest window.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::London;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a price was published by the supplier or estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Actual,
    Estimated,
}

/// One price slot, in pence per kWh including VAT. Negative prices are real (Agile pays you).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceSlot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub p_per_kwh: f64,
    pub kind: SlotKind,
}

impl PriceSlot {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// Why a slot was refused; the whole update it came in is refused with it.
pub fn check_slot(s: &PriceSlot) -> Result<(), String> {
    if !s.p_per_kwh.is_finite() {
        return Err(format!("the price for {} is not a number", s.start));
    }
    if s.p_per_kwh.abs() > 10_000.0 {
        return Err(format!(
            "the price for {} is {} p/kWh, which no tariff charges (prices are pence per kWh)",
            s.start, s.p_per_kwh
        ));
    }
    if s.end <= s.start {
        return Err(format!("the slot starting {} ends at {}", s.start, s.end));
    }
    if s.end - s.start > Duration::days(1) {
        return Err(format!(
            "the slot starting {} lasts longer than a day",
            s.start
        ));
    }
    Ok(())
}

/// Known prices, by slot start. Newer information for a slot replaces older.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    slots: BTreeMap<DateTime<Utc>, PriceSlot>,
}

/// Summary of a UK day's prices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayStats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub slots: usize,
}

impl PriceBook {
    pub fn new() -> PriceBook {
        PriceBook::default()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds slots; a slot overlapping known ones replaces them (a schedule pushed over MQTT may
    /// cut the day differently from what was known).
    pub fn insert(&mut self, slots: impl IntoIterator<Item = PriceSlot>) {
        for s in slots {
            let overlapping: Vec<DateTime<Utc>> = self
                .slots
                .range(..s.end)
                .rev()
                .take_while(|(_, o)| o.end > s.start)
                .map(|(k, _)| *k)
                .collect();
            for k in overlapping {
                self.slots.remove(&k);
            }
            self.slots.insert(s.start, s);
        }
    }

    /// Forgets slots that ended before `t`.
    pub fn prune_before(&mut self, t: DateTime<Utc>) {
        self.slots.retain(|_, s| s.end > t);
    }

    /// The slot `t` falls in.
    pub fn at(&self, t: DateTime<Utc>) -> Option<&PriceSlot> {
        self.slots
            .range(..=t)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| s.contains(t))
    }

    /// The slot that follows the one `t` falls in (starting exactly where it ends).
    pub fn next(&self, t: DateTime<Utc>) -> Option<&PriceSlot> {
        let current = self.at(t)?;
        self.slots.get(&current.end)
    }

    /// Slots overlapping `[from, to)`, in order.
    pub fn range(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Iterator<Item = &PriceSlot> + '_ {
        let first = self.at(from).map(|s| s.start).unwrap_or(from);
        self.slots.range(first..to).map(|(_, s)| s)
    }

    /// The end of the run of gap-free slots that covers `t` (`None` when `t` has no price).
    pub fn known_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut end = self.at(t)?.end;
        while let Some(s) = self.slots.get(&end) {
            end = s.end;
        }
        Some(end)
    }

    /// Min, max and mean over the UK day containing `t`.
    pub fn day_stats(&self, t: DateTime<Utc>) -> Option<DayStats> {
        let (from, to) = uk_day(t);
        let prices: Vec<f64> = self.range(from, to).map(|s| s.p_per_kwh).collect();
        if prices.is_empty() {
            return None;
        }
        Some(DayStats {
            min: prices.iter().copied().fold(f64::INFINITY, f64::min),
            max: prices.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean: prices.iter().sum::<f64>() / prices.len() as f64,
            slots: prices.len(),
        })
    }

    /// The cheapest gap-free window of `len` starting at a slot boundary at or after the slot
    /// `from` falls in, within the known prices: its start and its mean price (weighted by time).
    pub fn cheapest_window(
        &self,
        from: DateTime<Utc>,
        len: Duration,
    ) -> Option<(DateTime<Utc>, f64)> {
        let first = self.at(from).map(|s| s.start).unwrap_or(from);
        let starts: Vec<&PriceSlot> = self.slots.range(first..).map(|(_, s)| s).collect();
        let mut best: Option<(DateTime<Utc>, f64)> = None;
        for (i, s) in starts.iter().enumerate() {
            let end = s.start + len;
            let mut covered = s.start;
            let mut cost = 0.0;
            for o in &starts[i..] {
                if o.start != covered || covered >= end {
                    break;
                }
                let until = o.end.min(end);
                cost += o.p_per_kwh * (until - o.start).num_seconds() as f64;
                covered = until;
            }
            if covered < end {
                // Not enough known prices from here on; later starts have fewer.
                break;
            }
            let mean = cost / len.num_seconds() as f64;
            if best.is_none_or(|(_, b)| mean < b) {
                best = Some((s.start, mean));
            }
        }
        best
    }
}

/// The UK day (Europe/London midnight to midnight) containing `t`, in UTC.
pub fn uk_day(t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let date = t.with_timezone(&London).date_naive();
    let start = uk_local(date, 0);
    let end = uk_local(date.succ_opt().unwrap_or(date), 0);
    (start, end)
}

/// `t` at UK wall-clock `hour`:00 on the UK day containing it.
pub fn uk_time_on_day(t: DateTime<Utc>, hour: u32) -> DateTime<Utc> {
    uk_local(t.with_timezone(&London).date_naive(), hour)
}

/// UK wall-clock `hour`:00 on `date`, in UTC; the earlier instant when the clocks go back.
/// (UK clocks change at 01:00 or 02:00, so midnight always exists exactly once.)
fn uk_local(date: chrono::NaiveDate, hour: u32) -> DateTime<Utc> {
    let naive = date.and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or(NaiveTime::MIN));
    London
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
}

/// The start of the 30-minute UTC slot `t` falls in.
pub fn slot_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    let start = secs - secs.rem_euclid(1800);
    Utc.timestamp_opt(start, 0).single().unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(start: &str, minutes: i64, p: f64) -> PriceSlot {
        let start: DateTime<Utc> = start.parse().unwrap();
        PriceSlot {
            start,
            end: start + Duration::minutes(minutes),
            p_per_kwh: p,
            kind: SlotKind::Actual,
        }
    }

    #[test]
    fn lookups_by_instant_next_slot_and_known_until() {
        let mut b = PriceBook::new();
        b.insert([
            slot("2024-01-08T10:00:00Z", 30, 10.0),
            slot("2024-01-08T10:30:00Z", 30, 12.0),
            slot("2024-01-08T11:30:00Z", 30, 5.0),
        ]);
        let t: DateTime<Utc> = "2024-01-08T10:29:59Z".parse().unwrap();
        assert_eq!(b.at(t).unwrap().p_per_kwh, 10.0);
        assert_eq!(b.next(t).unwrap().p_per_kwh, 12.0);
        // A gap: 11:00–11:30 is unknown.
        let gap: DateTime<Utc> = "2024-01-08T11:10:00Z".parse().unwrap();
        assert!(b.at(gap).is_none());
        assert_eq!(
            b.known_until(t).unwrap(),
            "2024-01-08T11:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(b.next("2024-01-08T10:45:00Z".parse().unwrap()).is_none());
    }

    #[test]
    fn an_overlapping_slot_replaces_what_it_covers() {
        let mut b = PriceBook::new();
        b.insert([
            slot("2024-01-08T10:00:00Z", 30, 10.0),
            slot("2024-01-08T10:30:00Z", 30, 12.0),
        ]);
        b.insert([slot("2024-01-08T10:00:00Z", 60, 7.0)]);
        assert_eq!(b.len(), 1);
        assert_eq!(
            b.at("2024-01-08T10:45:00Z".parse().unwrap())
                .unwrap()
                .p_per_kwh,
            7.0
        );
    }

    #[test]
    fn cheapest_window_is_gap_free_and_time_weighted() {
        let mut b = PriceBook::new();
        b.insert([
            slot("2024-01-08T10:00:00Z", 30, 10.0),
            slot("2024-01-08T10:30:00Z", 30, 2.0),
            slot("2024-01-08T11:00:00Z", 30, 4.0),
            slot("2024-01-08T11:30:00Z", 30, 1.0),
            slot("2024-01-08T12:00:00Z", 30, 9.0),
        ]);
        let from = "2024-01-08T10:10:00Z".parse().unwrap();
        let (start, mean) = b.cheapest_window(from, Duration::hours(1)).unwrap();
        // 11:00–12:00 (4 and 1) beats 10:30–11:30 (2 and 4).
        assert_eq!(
            start,
            "2024-01-08T11:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(mean, 2.5);
        assert!(b.cheapest_window(from, Duration::hours(3)).is_none());
    }

    #[test]
    fn uk_days_are_london_midnights() {
        // Clocks went forward on 2023-03-26: the UK day is 23 hours long.
        let (s, e) = uk_day("2023-03-26T12:00:00Z".parse().unwrap());
        assert_eq!(s, "2023-03-26T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(e, "2023-03-26T23:00:00Z".parse::<DateTime<Utc>>().unwrap());
        // In summer the UK day starts at 23:00 UTC the evening before.
        let (s, _) = uk_day("2023-07-01T23:30:00Z".parse().unwrap());
        assert_eq!(s, "2023-07-01T23:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(
            slot_start("2023-07-01T23:59:59Z".parse().unwrap()),
            "2023-07-01T23:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
