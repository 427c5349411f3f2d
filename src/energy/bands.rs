//! Price bands: which band a price is in, and the tracker that moves between bands without
//! flapping. Moving to a dearer band happens at once; moving to a cheaper one needs the price to
//! be `hysteresis` below the boundary, the next slot to agree, `min_dwell` in the current band,
//! and a slot boundary. A missing price selects the safe band.

use super::prices::{slot_start, PriceBook};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

/// One band, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub name: String,
    /// Upper price bound, p/kWh (exclusive); `None` for the last band.
    pub below: Option<f64>,
    /// Target by miner name, by family (`axeos`, `avalon`, `antminer`, `nmminer`) or `default`:
    /// a mode name of that miner, or `off`.
    pub target: BTreeMap<String, String>,
    /// A pool label to select in this band.
    pub pool: Option<String>,
    pub champion: bool,
}

impl Band {
    /// The target for a miner: by its name, then its family, then `default`.
    pub fn target_for(&self, name: &str, family: &str) -> Option<&str> {
        self.target
            .get(name)
            .or_else(|| self.target.get(family))
            .or_else(|| self.target.get("default"))
            .map(String::as_str)
    }
}

/// The band index a price falls in.
pub fn band_of(bands: &[Band], price: f64) -> usize {
    bands
        .iter()
        .position(|b| b.below.is_none_or(|below| price < below))
        .unwrap_or(bands.len().saturating_sub(1))
}

/// Why the band is what it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Basis {
    /// The current slot's price.
    Price { p_per_kwh: f64 },
    /// No price for now: the safe band.
    Missing,
}

/// A band change, with what decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct BandChange {
    pub from: Option<usize>,
    pub to: usize,
    pub basis: Basis,
    pub reason: String,
}

/// Moves between bands.
#[derive(Debug, Clone)]
pub struct BandTracker {
    bands: Vec<Band>,
    safe: usize,
    hysteresis: f64,
    min_dwell: Duration,
    current: Option<usize>,
    since: Option<DateTime<Utc>>,
    /// The slot of the last evaluation: cheaper moves happen only on a slot's first evaluation.
    last_slot: Option<DateTime<Utc>>,
}

impl BandTracker {
    pub fn new(bands: Vec<Band>, safe: usize, hysteresis: f64, min_dwell: Duration) -> Self {
        BandTracker {
            bands,
            safe,
            hysteresis,
            min_dwell,
            current: None,
            since: None,
            last_slot: None,
        }
    }

    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// Evaluates at `now`; returns the change if the band changed.
    pub fn evaluate(&mut self, now: DateTime<Utc>, book: &PriceBook) -> Option<BandChange> {
        if self.bands.is_empty() {
            return None;
        }
        let slot = slot_start(now);
        let new_slot = self.last_slot != Some(slot);
        self.last_slot = Some(slot);
        let Some(price) = book.at(now).map(|s| s.p_per_kwh) else {
            return self.switch(
                now,
                self.safe,
                Basis::Missing,
                "no price is known for now, so the safe band applies".into(),
            );
        };
        let basis = Basis::Price { p_per_kwh: price };
        let raw = band_of(&self.bands, price);
        let Some(current) = self.current else {
            return self.switch(now, raw, basis, format!("{price} p/kWh now"));
        };
        if raw > current {
            return self.switch(
                now,
                raw,
                basis,
                format!("{price} p/kWh now: a dearer band applies at once"),
            );
        }
        if raw == current || !new_slot {
            return None;
        }
        // Cheaper: only with a margin, when the next slot agrees, after the dwell.
        let with_margin = band_of(&self.bands, price + self.hysteresis);
        if with_margin >= current {
            return None;
        }
        let next = book.next(now).map(|s| s.p_per_kwh)?;
        let next_band = band_of(&self.bands, next + self.hysteresis);
        if next_band >= current {
            return None;
        }
        if self.since.is_some_and(|s| now - s < self.min_dwell) {
            return None;
        }
        let to = with_margin.max(next_band);
        self.switch(
            now,
            to,
            basis,
            format!("{price} p/kWh now and {next} p/kWh next: a cheaper band"),
        )
    }

    fn switch(
        &mut self,
        now: DateTime<Utc>,
        to: usize,
        basis: Basis,
        reason: String,
    ) -> Option<BandChange> {
        if self.current == Some(to) {
            return None;
        }
        let from = self.current.replace(to);
        self.since = Some(now);
        Some(BandChange {
            from,
            to,
            basis,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::prices::{PriceSlot, SlotKind};

    pub(crate) fn bands() -> Vec<Band> {
        let b = |name: &str, below: Option<f64>, target: &str| Band {
            name: name.into(),
            below,
            target: BTreeMap::from([("default".to_string(), target.to_string())]),
            pool: None,
            champion: false,
        };
        vec![
            b("negative", Some(0.0), "turbo"),
            b("cheap", Some(12.0), "standard"),
            b("normal", Some(20.0), "eco"),
            b("expensive", Some(30.0), "off"),
            b("peak", None, "off"),
        ]
    }

    fn book(start: &str, prices: &[f64]) -> PriceBook {
        let start: DateTime<Utc> = start.parse().unwrap();
        let mut b = PriceBook::new();
        b.insert(prices.iter().enumerate().map(|(i, p)| PriceSlot {
            start: start + Duration::minutes(30 * i as i64),
            end: start + Duration::minutes(30 * (i as i64 + 1)),
            p_per_kwh: *p,
            kind: SlotKind::Actual,
        }));
        b
    }

    #[test]
    fn a_price_falls_in_the_first_band_it_is_below() {
        let b = bands();
        assert_eq!(band_of(&b, -0.1), 0);
        assert_eq!(band_of(&b, 0.0), 1);
        assert_eq!(band_of(&b, 19.99), 2);
        assert_eq!(band_of(&b, 30.0), 4);
    }

    #[test]
    fn dearer_is_immediate_cheaper_waits_for_margin_next_slot_and_boundary() {
        let prices = [15.0, 25.0, 19.8, 19.0, 10.0, 25.0];
        let book = book("2024-01-08T10:00:00Z", &prices);
        let mut tr = BandTracker::new(bands(), 3, 0.5, Duration::minutes(30));
        let at = |m: i64| {
            "2024-01-08T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(m)
        };
        assert_eq!(tr.evaluate(at(0), &book).unwrap().to, 2);
        // 25 p: expensive at once.
        assert_eq!(tr.evaluate(at(30), &book).unwrap().to, 3);
        // 19.8 p is within the 0.5 p margin of 20: stays expensive.
        assert!(tr.evaluate(at(60), &book).is_none());
        // 19.0 p now, but 10 p next: normal (the dearer of the two cheaper bands).
        assert_eq!(tr.evaluate(at(90), &book).unwrap().to, 2);
        // 10 p now, 25 p next: the next slot does not agree; no change, all slot long.
        for m in 120..150 {
            assert!(tr.evaluate(at(m), &book).is_none(), "minute {m}");
        }
        assert_eq!(tr.evaluate(at(150), &book).unwrap().to, 3);
        // Past the known prices: the safe band.
        let change = tr.evaluate(at(180), &book);
        assert!(change.is_none(), "already in the safe band (expensive)");
        let mut tr2 = BandTracker::new(bands(), 4, 0.5, Duration::minutes(30));
        tr2.evaluate(at(0), &book);
        assert_eq!(tr2.evaluate(at(180), &book).unwrap().basis, Basis::Missing);
    }
}
