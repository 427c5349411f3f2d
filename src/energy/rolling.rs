//! Per-miner rolling efficiency over a window (6 h by default), in 5-minute buckets, so choosing
//! a champion among thousands of miners never rescans history: each sample costs O(1), each
//! query O(buckets).

use std::collections::VecDeque;

const BUCKET_MS: u64 = 5 * 60_000;
/// Samples further apart than this are not joined (the miner was off, or unreachable).
const MAX_GAP_MS: u64 = 10 * 60_000;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start_ms: u64,
    joules: f64,
    terahashes: f64,
    seconds: f64,
}

/// What one miner has done while hashing within the window.
#[derive(Debug, Clone, Default)]
pub struct Rolling {
    buckets: VecDeque<Bucket>,
    /// The previous sample: time, power W, hashrate GH/s.
    last: Option<(u64, f64, f64)>,
}

/// A miner's efficiency over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Efficiency {
    /// Joules per terahash (= W per TH/s).
    pub j_per_th: f64,
    /// Seconds of hashing samples it is based on.
    pub seconds: f64,
    /// Mean hashrate while hashing, GH/s.
    pub hashrate: f64,
}

impl Rolling {
    /// Adds a sample. Only intervals where the miner hashed at both ends count.
    pub fn add(&mut self, at_ms: u64, power_w: Option<f64>, hashrate_ghs: Option<f64>) {
        let now = match (power_w, hashrate_ghs) {
            (Some(p), Some(h)) if p > 0.0 && h > 0.0 && p.is_finite() && h.is_finite() => {
                Some((at_ms, p, h))
            }
            _ => None,
        };
        if let (Some((t0, p0, h0)), Some((t1, p1, h1))) = (self.last, now) {
            if t1 > t0 && t1 - t0 <= MAX_GAP_MS {
                let dt = (t1 - t0) as f64 / 1000.0;
                let start = t1 - t1 % BUCKET_MS;
                if self.buckets.back().is_none_or(|b| b.start_ms != start) {
                    self.buckets.push_back(Bucket {
                        start_ms: start,
                        ..Default::default()
                    });
                }
                if let Some(b) = self.buckets.back_mut() {
                    b.joules += (p0 + p1) / 2.0 * dt;
                    b.terahashes += (h0 + h1) / 2.0 * dt / 1000.0;
                    b.seconds += dt;
                }
            }
        }
        if now.is_some() || at_ms >= self.last.map_or(0, |l| l.0) {
            self.last = now;
        }
    }

    /// Efficiency over the `window_ms` before `now_ms`.
    pub fn efficiency(&mut self, now_ms: u64, window_ms: u64) -> Option<Efficiency> {
        let from = now_ms.saturating_sub(window_ms);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start_ms + BUCKET_MS <= from)
        {
            self.buckets.pop_front();
        }
        let (j, th, s) = self.buckets.iter().fold((0.0, 0.0, 0.0), |a, b| {
            (a.0 + b.joules, a.1 + b.terahashes, a.2 + b.seconds)
        });
        (th > 0.0 && s > 0.0).then(|| Efficiency {
            j_per_th: j / th,
            seconds: s,
            hashrate: th * 1000.0 / s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_is_energy_over_work_while_hashing() {
        let mut r = Rolling::default();
        // 15 W at 1000 GH/s for an hour, polled every 30 s: 15 J/TH.
        for i in 0..=120u64 {
            r.add(i * 30_000, Some(15.0), Some(1000.0));
        }
        let e = r.efficiency(3_600_000, 6 * 3_600_000).unwrap();
        assert!((e.j_per_th - 15.0).abs() < 1e-9);
        assert!((e.seconds - 3600.0).abs() < 1e-6);
        // Paused for an hour (0 GH/s): no change, and no credit for the gap after it either.
        for i in 121..=240u64 {
            r.add(i * 30_000, Some(3.0), Some(0.0));
        }
        r.add(241 * 30_000, Some(30.0), Some(1000.0));
        let e = r.efficiency(241 * 30_000, 6 * 3_600_000).unwrap();
        assert!((e.j_per_th - 15.0).abs() < 1e-9);
        // Seven hours later nothing is left in a 6 h window.
        assert!(r
            .efficiency(241 * 30_000 + 7 * 3_600_000, 6 * 3_600_000)
            .is_none());
    }
}
