//! Prices from the config: one price all day, or time-of-use periods in UK local time.

use super::prices::{uk_day, PriceSlot, SlotKind};
use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Europe::London;

/// The 30-minute slots of the UK day containing `t`. A slot takes the price of the period its
/// start falls in (periods may wrap past midnight), else `price`; without either it has none.
pub fn day_slots(
    t: DateTime<Utc>,
    price: Option<f64>,
    periods: &[(u32, u32, f64)],
) -> Vec<PriceSlot> {
    let (from, to) = uk_day(t);
    let mut slots = Vec::new();
    let mut start = from;
    while start < to {
        let local = start.with_timezone(&London);
        let minute = local.hour() * 60 + local.minute();
        let in_period = periods.iter().find(|(a, b, _)| {
            if a < b {
                (*a..*b).contains(&minute)
            } else {
                minute >= *a || minute < *b
            }
        });
        if let Some(p) = in_period.map(|p| p.2).or(price) {
            slots.push(PriceSlot {
                start,
                end: start + Duration::minutes(30),
                p_per_kwh: p,
                kind: SlotKind::Actual,
            });
        }
        start += Duration::minutes(30);
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_uk_local_and_may_wrap_midnight() {
        // Summer: UK time is UTC+1. Cheap 23:30–05:30 local, 25 p otherwise.
        let t = "2024-07-01T12:00:00Z".parse().unwrap();
        let slots = day_slots(t, Some(25.0), &[(23 * 60 + 30, 5 * 60 + 30, 7.5)]);
        assert_eq!(slots.len(), 48);
        assert_eq!(
            slots[0].start,
            "2024-06-30T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let cheap = slots.iter().filter(|s| s.p_per_kwh == 7.5).count();
        assert_eq!(cheap, 12);
        assert_eq!(slots[10].p_per_kwh, 7.5); // 05:00 local
        assert_eq!(slots[11].p_per_kwh, 25.0); // 05:30 local
                                               // The day the clocks go back has 50 slots.
        let t = "2023-10-29T12:00:00Z".parse().unwrap();
        assert_eq!(day_slots(t, Some(20.0), &[]).len(), 50);
        assert!(day_slots(t, None, &[]).is_empty());
    }
}
