//! Retention: raw samples are kept for `store.raw_for`, folded into 5-minute rollups kept for
//! `store.rollup_for`, and into per-clock-config aggregates kept forever.
//!
//! Every rollup and aggregate holds, for hashrate, power, ASIC temperature and J/TH, the count,
//! mean, sum of squared deviations, minimum and maximum: enough to merge any number of them into
//! the exact mean and standard deviation of the samples they came from. Aggregates also carry a
//! DDSketch per quantity (1 % relative error) for medians and percentiles.
//!
//! The compactor walks each miner's raw samples in order from where it last stopped: every
//! complete 5-minute bucket into rollups; once a day the samples older than `raw_for` into the
//! aggregates (written with its progress in one atomic batch, so a crash never counts a sample
//! twice), and then out of the raw tier. Each call does a bounded amount of work; it runs on a
//! blocking thread beside the polling and holds nothing the pollers wait for.

use super::{Sample, Store, StoreError};
use crate::miner::ClockConfig;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The rollup period.
pub const BUCKET_MS: u64 = 300_000;
/// Raw samples are folded into the aggregates and pruned a whole (UTC) day at a time.
const DAY_MS: u64 = 86_400_000;
/// A gap longer than this between two samples ends a session (the miner was off or offline)
/// and does not count as runtime.
pub const SESSION_GAP_MS: u64 = 600_000;
/// A bucket is rolled up this long after it ends: a poll in flight may still land in it.
const GRACE_MS: u64 = 120_000;
/// The key under a miner's aggregates that holds the compactor's progress (no clock has
/// 65535 MHz).
const PROGRESS: [u8; 4] = [0xff; 4];

/// Start of the bucket holding `ms`.
pub fn bucket_of(ms: u64) -> u64 {
    ms - ms % BUCKET_MS
}

/// The clock config a sample was taken at, as it is keyed: (0, 0) when the miner reports none
/// (Avalons, Antminers, NMMiner).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct ConfigKey {
    pub frequency_mhz: u16,
    pub core_voltage_mv: u16,
}

impl ConfigKey {
    pub fn of(clock: Option<ClockConfig>) -> ConfigKey {
        clock
            .map(|c| ConfigKey {
                frequency_mhz: c.frequency_mhz.min(65_534) as u16,
                core_voltage_mv: c.core_voltage_mv.min(65_534) as u16,
            })
            .unwrap_or_default()
    }

    /// The clock, or `None` for a miner that reports none.
    pub fn clock(self) -> Option<ClockConfig> {
        (self != ConfigKey::default()).then_some(ClockConfig {
            frequency_mhz: self.frequency_mhz.into(),
            core_voltage_mv: self.core_voltage_mv.into(),
        })
    }

    fn bytes(self) -> [u8; 4] {
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&self.frequency_mhz.to_be_bytes());
        b[2..].copy_from_slice(&self.core_voltage_mv.to_be_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<ConfigKey> {
        let b: [u8; 4] = b.try_into().ok()?;
        Some(ConfigKey {
            frequency_mhz: u16::from_be_bytes([b[0], b[1]]),
            core_voltage_mv: u16::from_be_bytes([b[2], b[3]]),
        })
    }
}

impl std::fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.clock() {
            Some(c) => write!(f, "{} MHz / {} mV", c.frequency_mhz, c.core_voltage_mv),
            None => f.write_str("stock"),
        }
    }
}

/// The quantities summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Hashrate,
    Power,
    Temperature,
    Efficiency,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::Hashrate,
        Metric::Power,
        Metric::Temperature,
        Metric::Efficiency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Hashrate => "hashrate",
            Metric::Power => "power",
            Metric::Temperature => "temperature",
            Metric::Efficiency => "efficiency",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Hashrate => "GH/s",
            Metric::Power => "W",
            Metric::Temperature => "°C",
            Metric::Efficiency => "J/TH",
        }
    }

    pub fn of(self, s: &Sample) -> Option<f64> {
        let v = match self {
            Metric::Hashrate => s.hashrate,
            Metric::Power => s.power,
            Metric::Temperature => s.asic_temp,
            Metric::Efficiency => s.efficiency(),
        }?;
        v.is_finite().then_some(v as f64)
    }
}

/// Count, mean, sum of squared deviations, min and max of one quantity; merging two gives
/// exactly what one pass over both sets of values would (Chan, Golub and LeVeque).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub mean: f64,
    m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn add(&mut self, x: f64) {
        self.merge(&Stats {
            count: 1,
            mean: x,
            m2: 0.0,
            min: x,
            max: x,
        });
    }

    pub fn merge(&mut self, o: &Stats) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let n = (self.count + o.count) as f64;
        let delta = o.mean - self.mean;
        self.mean += delta * o.count as f64 / n;
        self.m2 += o.m2 + delta * delta * self.count as f64 * o.count as f64 / n;
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// The sample standard deviation (n − 1); `None` below two values.
    pub fn stddev(&self) -> Option<f64> {
        (self.count > 1).then(|| (self.m2 / (self.count - 1) as f64).max(0.0).sqrt())
    }
}

/// `Stats` as a rollup keeps them: f32, like the samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Compact {
    n: u32,
    mean: f32,
    m2: f32,
    min: f32,
    max: f32,
}

impl From<&Stats> for Compact {
    fn from(s: &Stats) -> Compact {
        Compact {
            n: s.count.min(u32::MAX.into()) as u32,
            mean: s.mean as f32,
            m2: s.m2 as f32,
            min: s.min as f32,
            max: s.max as f32,
        }
    }
}

impl From<&Compact> for Stats {
    fn from(c: &Compact) -> Stats {
        Stats {
            count: c.n.into(),
            mean: c.mean.into(),
            m2: c.m2.into(),
            min: c.min.into(),
            max: c.max.into(),
        }
    }
}

/// One miner's 5 minutes at one clock config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// The first and last sample, in seconds from the bucket's start.
    pub first_s: u16,
    pub last_s: u16,
    pub samples: u32,
    /// Time spent at this config (gaps over `SESSION_GAP_MS` are not).
    pub runtime_ms: u32,
    /// Sessions that began in these 5 minutes.
    pub sessions: u16,
    stats: [Compact; 4],
}

impl Rollup {
    pub fn stats(&self, m: Metric) -> Stats {
        (&self.stats[m as usize]).into()
    }
}

/// Percentiles of one quantity: exact while every value is at hand, a DDSketch (values within
/// 1 % of the true percentile) once summarised history is merged in.
#[derive(Clone, Serialize, Deserialize)]
pub enum Quantiles {
    Exact(Vec<f32>),
    Sketch(DDSketch),
}

fn sketch() -> DDSketch {
    DDSketch::new(SketchConfig::new(0.01, 2048, 1e-3))
}

impl Quantiles {
    fn add(&mut self, x: f64, times: u64) {
        match self {
            Quantiles::Exact(v) if times == 1 => v.push(x as f32),
            Quantiles::Exact(_) => {
                self.make_sketch();
                self.add(x, times);
            }
            Quantiles::Sketch(s) => {
                for _ in 0..times {
                    s.add(x);
                }
            }
        }
    }

    fn make_sketch(&mut self) {
        if let Quantiles::Exact(v) = self {
            let mut s = sketch();
            for x in v.iter() {
                s.add(f64::from(*x));
            }
            *self = Quantiles::Sketch(s);
        }
    }

    fn merge(&mut self, o: &Quantiles) {
        match (&mut *self, o) {
            (Quantiles::Exact(a), Quantiles::Exact(b)) => a.extend_from_slice(b),
            (_, Quantiles::Exact(b)) => {
                for x in b {
                    self.add(f64::from(*x), 1);
                }
            }
            (_, Quantiles::Sketch(b)) => {
                self.make_sketch();
                if let Quantiles::Sketch(a) = self {
                    // Same configuration on both sides: merging cannot fail.
                    let _ = a.merge(b);
                }
            }
        }
    }

    /// The `q` quantile (0..=1): exact values interpolate linearly between the nearest ranks.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match self {
            Quantiles::Exact(v) if v.is_empty() => None,
            Quantiles::Exact(v) => {
                let mut v: Vec<f64> = v.iter().map(|x| f64::from(*x)).collect();
                v.sort_by(f64::total_cmp);
                let rank = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
                let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
                Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
            }
            Quantiles::Sketch(s) => s.quantile(q).ok().flatten(),
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, Quantiles::Exact(_))
    }
}

/// Everything known about one miner at one clock config over some span of time.
#[derive(Clone, Serialize, Deserialize)]
pub struct Aggregate {
    pub samples: u64,
    pub runtime_ms: u64,
    pub sessions: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub stats: [Stats; 4],
    pub quantiles: [Quantiles; 4],
}

impl Aggregate {
    /// Empty, with exact percentiles until summarised history is merged in.
    pub fn exact() -> Aggregate {
        Aggregate {
            samples: 0,
            runtime_ms: 0,
            sessions: 0,
            first_ms: u64::MAX,
            last_ms: 0,
            stats: Default::default(),
            quantiles: std::array::from_fn(|_| Quantiles::Exact(Vec::new())),
        }
    }

    fn sketched() -> Aggregate {
        Aggregate {
            quantiles: std::array::from_fn(|_| Quantiles::Sketch(sketch())),
            ..Aggregate::exact()
        }
    }

    fn span(&mut self, from: u64, to: u64) {
        self.first_ms = self.first_ms.min(from);
        self.last_ms = self.last_ms.max(to);
    }

    pub fn add_sample(&mut self, s: &Sample) {
        self.samples += 1;
        self.span(s.at_ms, s.at_ms);
        for m in Metric::ALL {
            if let Some(x) = m.of(s) {
                self.stats[m as usize].add(x);
                self.quantiles[m as usize].add(x, 1);
            }
        }
    }

    /// Merges a rollup: exact counts, means and spread; its mean stands for its values in the
    /// percentiles.
    pub fn add_rollup(&mut self, bucket_ms: u64, r: &Rollup) {
        self.samples += u64::from(r.samples);
        self.runtime_ms += u64::from(r.runtime_ms);
        self.sessions += u64::from(r.sessions);
        self.span(
            bucket_ms + u64::from(r.first_s) * 1000,
            bucket_ms + u64::from(r.last_s) * 1000,
        );
        for m in Metric::ALL {
            let s = r.stats(m);
            self.stats[m as usize].merge(&s);
            if s.count > 0 {
                self.quantiles[m as usize].add(s.mean, s.count);
            }
        }
    }

    pub fn merge(&mut self, o: &Aggregate) {
        self.samples += o.samples;
        self.runtime_ms += o.runtime_ms;
        self.sessions += o.sessions;
        self.span(o.first_ms, o.last_ms);
        for m in 0..4 {
            self.stats[m].merge(&o.stats[m]);
            self.quantiles[m].merge(&o.quantiles[m]);
        }
    }

    pub fn stat(&self, m: Metric) -> &Stats {
        &self.stats[m as usize]
    }

    pub fn quantile(&self, m: Metric, q: f64) -> Option<f64> {
        self.quantiles[m as usize].quantile(q)
    }

    /// Whether every percentile is exact.
    pub fn exact_quantiles(&self) -> bool {
        self.quantiles.iter().all(Quantiles::is_exact)
    }
}

/// Where sessions start and how much runtime a sample adds: the previous sample's time and
/// config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Continuity {
    pub last: Option<(u64, ConfigKey)>,
}

impl Continuity {
    /// A sample at `at` with `config`: whether it starts a session, and the runtime it adds.
    pub fn step(&mut self, at: u64, config: ConfigKey) -> (bool, u64) {
        let out = match self.last {
            Some((t, c)) if c == config && at >= t && at - t <= SESSION_GAP_MS => (false, at - t),
            _ => (true, 0),
        };
        self.last = Some((at, config));
        out
    }
}

/// What the compactor has done for one miner.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// Samples before this are in rollups.
    rolled_to_ms: u64,
    rolling: Continuity,
    /// Samples before this are in the aggregates (and pruned from the raw tier).
    folded_to_ms: u64,
    folding: Continuity,
}

/// How long each tier is kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retention {
    pub raw_for: Duration,
    pub rollup_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_for: Duration::from_secs(7 * 86_400),
            rollup_for: Duration::from_secs(365 * 86_400),
        }
    }
}

/// A miner's aggregates, and the time up to which they reach (raw samples from there on are
/// not in them yet).
#[derive(Default)]
pub struct Aggregates {
    pub configs: Vec<(ConfigKey, Aggregate)>,
    pub done_to_ms: u64,
}

/// What one compaction call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub samples: usize,
    pub rollups: usize,
    pub raw_pruned: usize,
    pub rollups_pruned: usize,
    /// The budget ran out: call again.
    pub more: bool,
}

impl std::ops::AddAssign for Compacted {
    fn add_assign(&mut self, o: Compacted) {
        self.samples += o.samples;
        self.rollups += o.rollups;
        self.raw_pruned += o.raw_pruned;
        self.rollups_pruned += o.rollups_pruned;
        self.more |= o.more;
    }
}

fn rollup_key(miner: u32, bucket: u64, config: ConfigKey) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&miner.to_be_bytes());
    k[4..12].copy_from_slice(&bucket.to_be_bytes());
    k[12..].copy_from_slice(&config.bytes());
    k
}

fn aggregate_key(miner: u32, config: [u8; 4]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&miner.to_be_bytes());
    k[4..].copy_from_slice(&config);
    k
}

/// A rollup being built.
struct Building {
    first: u64,
    last: u64,
    samples: u32,
    runtime_ms: u64,
    sessions: u16,
    stats: [Stats; 4],
}

impl Store {
    fn progress(&self, miner: u32) -> Result<Option<Progress>, StoreError> {
        let v = self
            .aggregates
            .get(aggregate_key(miner, PROGRESS))
            .map_err(|e| self.io(e))?;
        Ok(v.and_then(|v| postcard::from_bytes(&v).ok()))
    }

    /// Every miner the history has a number for.
    pub fn miner_numbers(&self) -> Vec<(String, u32)> {
        self.miners
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let n = u32::from_be_bytes(<[u8; 4]>::try_from(v.as_ref()).ok()?);
                Some((String::from_utf8_lossy(&k).into_owned(), n))
            })
            .collect()
    }

    /// The time of a miner's oldest raw sample.
    pub fn first_raw_ms(&self, miner: u32) -> Option<u64> {
        let (k, _) = self
            .samples
            .range(super::key(miner, 0)..super::key(miner, u64::MAX))
            .next()?
            .ok()?;
        Some(u64::from_be_bytes(k[4..12].try_into().ok()?))
    }

    /// Rolls up a miner's raw samples from where it last stopped to the last complete bucket
    /// (at most about `budget` samples); then, once a day, folds the raw samples older than
    /// `raw_for` into the aggregates and prunes them (at most `budget`), and prunes rollups
    /// older than `rollup_for` (at most `budget`).
    ///
    /// The aggregates are rewritten once a day per miner, not with every bucket: sled keeps
    /// every rewrite in its log until it reclaims the segment, so a record rewritten every five
    /// minutes costs far more disk than its size.
    pub fn compact(
        &self,
        miner: u32,
        now_ms: u64,
        retention: &Retention,
        budget: usize,
    ) -> Result<Compacted, StoreError> {
        let mut out = Compacted::default();
        let progress = match self.progress(miner)? {
            Some(p) => Some(p),
            None => self.first_raw_ms(miner).map(|first| Progress {
                rolled_to_ms: bucket_of(first),
                folded_to_ms: bucket_of(first),
                ..Progress::default()
            }),
        };
        let Some(mut progress) = progress else {
            return Ok(out);
        };
        let target = bucket_of(now_ms.saturating_sub(GRACE_MS));
        if progress.rolled_to_ms < target {
            self.roll_up(miner, &mut progress, target, budget, &mut out)?;
        }
        // Raw samples go a whole day at a time, once rolled up.
        let cut = (now_ms.saturating_sub(millis(retention.raw_for)) / DAY_MS * DAY_MS)
            .min(progress.rolled_to_ms);
        if progress.folded_to_ms < cut {
            self.fold(miner, &mut progress, cut, budget, &mut out)?;
        }
        out.raw_pruned = self.remove_range(
            &self.samples,
            &super::key(miner, 0),
            &super::key(miner, progress.folded_to_ms),
            budget,
        )?;
        let rollup_cut = bucket_of(now_ms.saturating_sub(millis(retention.rollup_for)));
        out.rollups_pruned = self.remove_range(
            &self.rollups,
            &rollup_key(miner, 0, ConfigKey::default()),
            &rollup_key(miner, rollup_cut, ConfigKey::default()),
            budget,
        )?;
        out.more |= out.raw_pruned >= budget || out.rollups_pruned >= budget;
        Ok(out)
    }

    fn save_progress(
        &self,
        batch: &mut sled::Batch,
        miner: u32,
        p: &Progress,
    ) -> Result<(), StoreError> {
        batch.insert(
            &aggregate_key(miner, PROGRESS),
            postcard::to_stdvec(p).map_err(|e| self.io(e))?,
        );
        Ok(())
    }

    /// Samples from `rolled_to_ms` up to `target` (whole buckets, about `budget` samples) into
    /// rollups.
    fn roll_up(
        &self,
        miner: u32,
        progress: &mut Progress,
        target: u64,
        budget: usize,
        out: &mut Compacted,
    ) -> Result<(), StoreError> {
        let mut building: BTreeMap<(u64, ConfigKey), Building> = BTreeMap::new();
        let mut done_to = target;
        let mut current_bucket = None;
        let range = super::key(miner, progress.rolled_to_ms)..super::key(miner, target);
        for item in self.samples.range(range) {
            let (_, v) = item.map_err(|e| self.io(e))?;
            let Ok(s) = postcard::from_bytes::<Sample>(&v) else {
                continue;
            };
            let bucket = bucket_of(s.at_ms);
            if out.samples >= budget && current_bucket != Some(bucket) {
                done_to = bucket;
                out.more = true;
                break;
            }
            current_bucket = Some(bucket);
            out.samples += 1;
            let config = ConfigKey::of(s.clock);
            let (new_session, runtime) = progress.rolling.step(s.at_ms, config);
            let b = building.entry((bucket, config)).or_insert(Building {
                first: s.at_ms,
                last: s.at_ms,
                samples: 0,
                runtime_ms: 0,
                sessions: 0,
                stats: Default::default(),
            });
            b.last = s.at_ms;
            b.samples += 1;
            b.runtime_ms += runtime;
            b.sessions += u16::from(new_session);
            for m in Metric::ALL {
                if let Some(x) = m.of(&s) {
                    b.stats[m as usize].add(x);
                }
            }
        }
        // Rollups first: written again after a crash, they come out the same.
        let mut rollups = sled::Batch::default();
        for ((bucket, config), b) in &building {
            let r = Rollup {
                first_s: ((b.first - bucket) / 1000) as u16,
                last_s: ((b.last - bucket) / 1000) as u16,
                samples: b.samples,
                runtime_ms: b.runtime_ms.min(u32::MAX.into()) as u32,
                sessions: b.sessions,
                stats: std::array::from_fn(|m| (&b.stats[m]).into()),
            };
            let bytes = postcard::to_stdvec(&r).map_err(|e| self.io(e))?;
            rollups.insert(&rollup_key(miner, *bucket, *config), bytes);
        }
        self.rollups.apply_batch(rollups).map_err(|e| self.io(e))?;
        out.rollups += building.len();
        progress.rolled_to_ms = done_to;
        let mut batch = sled::Batch::default();
        self.save_progress(&mut batch, miner, progress)?;
        self.aggregates.apply_batch(batch).map_err(|e| self.io(e))
    }

    /// Samples from `folded_to_ms` up to `cut` (at most `budget`) into the aggregates, which
    /// are written with the progress in one atomic batch: a crash never counts one twice.
    fn fold(
        &self,
        miner: u32,
        progress: &mut Progress,
        cut: u64,
        budget: usize,
        out: &mut Compacted,
    ) -> Result<(), StoreError> {
        let mut deltas: BTreeMap<ConfigKey, Aggregate> = BTreeMap::new();
        let mut done_to = cut;
        let mut folded = 0usize;
        let range = super::key(miner, progress.folded_to_ms)..super::key(miner, cut);
        for item in self.samples.range(range) {
            let (_, v) = item.map_err(|e| self.io(e))?;
            let Ok(s) = postcard::from_bytes::<Sample>(&v) else {
                continue;
            };
            if folded >= budget {
                done_to = s.at_ms;
                out.more = true;
                break;
            }
            folded += 1;
            let config = ConfigKey::of(s.clock);
            let (new_session, runtime) = progress.folding.step(s.at_ms, config);
            let d = deltas.entry(config).or_insert_with(Aggregate::sketched);
            d.add_sample(&s);
            d.runtime_ms += runtime;
            d.sessions += u64::from(new_session);
        }
        let mut batch = sled::Batch::default();
        for (config, delta) in deltas {
            let key = aggregate_key(miner, config.bytes());
            let mut agg = match self.aggregates.get(key).map_err(|e| self.io(e))? {
                Some(v) => postcard::from_bytes(&v).unwrap_or_else(|_| Aggregate::sketched()),
                None => Aggregate::sketched(),
            };
            agg.merge(&delta);
            batch.insert(&key, postcard::to_stdvec(&agg).map_err(|e| self.io(e))?);
        }
        progress.folded_to_ms = done_to;
        self.save_progress(&mut batch, miner, progress)?;
        self.aggregates.apply_batch(batch).map_err(|e| self.io(e))
    }

    fn remove_range(
        &self,
        tree: &sled::Tree,
        from: &[u8],
        to: &[u8],
        budget: usize,
    ) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in tree.range(from..to).keys().take(budget) {
            batch.remove(k.map_err(|e| self.io(e))?);
            n += 1;
        }
        if n > 0 {
            tree.apply_batch(batch).map_err(|e| self.io(e))?;
        }
        Ok(n)
    }

    /// A miner's rollups with `from_ms <= bucket < to_ms`, in time order.
    pub fn rollups(
        &self,
        miner: u32,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(u64, ConfigKey, Rollup)>, StoreError> {
        let from = rollup_key(miner, bucket_of(from_ms), ConfigKey::default());
        let to = rollup_key(miner, to_ms, ConfigKey::default());
        let mut out = Vec::new();
        for item in self.rollups.range(from..to) {
            let (k, v) = item.map_err(|e| self.io(e))?;
            let Ok(r) = postcard::from_bytes::<Rollup>(&v) else {
                continue;
            };
            let bucket = u64::from_be_bytes(k[4..12].try_into().unwrap_or_default());
            if let Some(config) = ConfigKey::from_bytes(&k[12..]) {
                out.push((bucket, config, r));
            }
        }
        // Two configs in one bucket: the one that ran first comes first.
        out.sort_by_key(|(b, _, r)| (*b, r.first_s));
        Ok(out)
    }

    /// A miner's per-config aggregates: everything rolled up so far.
    pub fn aggregates(&self, miner: u32) -> Result<Aggregates, StoreError> {
        let mut out = Aggregates::default();
        let prefix = miner.to_be_bytes();
        for item in self.aggregates.scan_prefix(prefix) {
            let (k, v) = item.map_err(|e| self.io(e))?;
            if k[4..] == PROGRESS {
                let progress: Progress = postcard::from_bytes(&v).unwrap_or_default();
                out.done_to_ms = progress.folded_to_ms;
            } else if let (Some(config), Ok(agg)) = (
                ConfigKey::from_bytes(&k[4..]),
                postcard::from_bytes::<Aggregate>(&v),
            ) {
                out.configs.push((config, agg));
            }
        }
        Ok(out)
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX.into()) as u64
}

/// The background compactor: every `every`, each miner's new samples rolled up and old ones
/// pruned, in batches of `budget`, on a blocking thread, until `stop`.
pub async fn run_compactor(
    store: Store,
    retention: Retention,
    every: Duration,
    budget: usize,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let store = store.clone();
        let pass = stop.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut total = Compacted::default();
            for (_, miner) in store.miner_numbers() {
                loop {
                    if pass.is_cancelled() {
                        return Ok(total);
                    }
                    let now = super::now_ms();
                    let done = store.compact(miner, now, &retention, budget)?;
                    total += done;
                    if !done.more {
                        break;
                    }
                }
            }
            Ok::<_, StoreError>(total)
        })
        .await;
        match result {
            Ok(Ok(total)) => {
                if failing {
                    tracing::info!("history compaction works again");
                    failing = false;
                }
                tracing::debug!(
                    samples = total.samples,
                    rollups = total.rollups,
                    raw_pruned = total.raw_pruned,
                    rollups_pruned = total.rollups_pruned,
                    "history compacted"
                );
            }
            Ok(Err(e)) if !failing => {
                tracing::error!(error = %e, "history compaction failed; raw samples are kept until it works");
                failing = true;
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::error!(error = %e, "history compaction stopped unexpectedly"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, freq: u32, h: f32, p: f32, t: f32) -> Sample {
        let clock = ClockConfig {
            frequency_mhz: freq,
            core_voltage_mv: 1150,
        };
        Sample::basic(at_ms, Some(clock), h, p, t)
    }

    #[test]
    fn merged_stats_equal_one_pass() {
        let xs = [3.0, 9.5, 1.25, 7.0, 7.0, 100.0, -2.0];
        let mut all = Stats::default();
        xs.iter().for_each(|x| all.add(*x));
        let (mut a, mut b) = (Stats::default(), Stats::default());
        xs[..3].iter().for_each(|x| a.add(*x));
        xs[3..].iter().for_each(|x| b.add(*x));
        a.merge(&b);
        assert_eq!(a.count, 7);
        assert!((a.mean - all.mean).abs() < 1e-12);
        assert!((a.stddev().unwrap() - all.stddev().unwrap()).abs() < 1e-9);
        assert_eq!((a.min, a.max), (-2.0, 100.0));
        // By hand: mean 125.75 / 7, sample variance from the deviations.
        let mean = 125.75 / 7.0;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 6.0;
        assert!((all.stddev().unwrap() - var.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn exact_quantiles_interpolate_between_ranks() {
        let q = Quantiles::Exact(vec![4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!(q.quantile(0.5), Some(3.0));
        assert_eq!(q.quantile(0.05), Some(1.2));
        assert_eq!(q.quantile(0.95), Some(4.8));
    }

    /// Retention prunes raw samples into rollups whose means, counts and extremes are the raw
    /// samples'; the aggregates hold them all, and nothing is counted twice across calls.
    #[test]
    fn rollups_keep_the_raw_means_and_raw_samples_go_after_raw_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h"), 1 << 20).unwrap();
        let m = store.miner_number("aa").unwrap();
        let day = 86_400_000u64;
        let t0 = 10 * day;
        // Two days at 30 s; the clock changes at noon of the first day, and two hours are lost
        // (the miner was off) on the second.
        let mut raw = Vec::new();
        let mut t = t0;
        while t < t0 + 2 * day {
            let off = t >= t0 + day + 3_600_000 && t < t0 + day + 3 * 3_600_000;
            if !off {
                let freq = if t < t0 + day / 2 { 500 } else { 600 };
                let i = (t - t0) / 30_000;
                let s = sample(
                    t,
                    freq,
                    freq as f32 * 2.0 + (i % 7) as f32,
                    15.0 + (i % 5) as f32 * 0.5,
                    50.0 + (i % 11) as f32,
                );
                store.record(m, &s).unwrap();
                raw.push(s);
            }
            t += 30_000;
        }
        let retention = Retention {
            raw_for: Duration::from_millis(day),
            rollup_for: Duration::from_secs(365 * 86_400),
        };
        let now = t0 + 2 * day + 10 * 60_000;
        let mut total = Compacted::default();
        loop {
            let c = store.compact(m, now, &retention, 500).unwrap();
            total += c;
            if !c.more {
                break;
            }
        }
        assert_eq!(total.samples, raw.len());
        // Raw samples go a whole day at a time: the first day's are gone, the second's kept.
        let cut = (now - day) / day * day;
        assert_eq!(cut, t0 + day);
        assert_eq!(store.first_raw_ms(m), Some(t0 + day));
        let first_day = raw.iter().filter(|s| s.at_ms < cut).count();
        assert_eq!(total.raw_pruned, first_day);

        let rollups = store.rollups(m, 0, u64::MAX).unwrap();
        for (bucket, config, r) in &rollups {
            let inside: Vec<&Sample> = raw
                .iter()
                .filter(|s| bucket_of(s.at_ms) == *bucket && ConfigKey::of(s.clock) == *config)
                .collect();
            assert_eq!(r.samples as usize, inside.len());
            for metric in Metric::ALL {
                let values: Vec<f64> = inside.iter().filter_map(|s| metric.of(s)).collect();
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let st = r.stats(metric);
                assert_eq!(st.count as usize, values.len());
                assert!(
                    (st.mean - mean).abs() <= mean.abs() * 1e-6,
                    "{metric:?} {bucket}"
                );
                assert_eq!(st.min, values.iter().cloned().fold(f64::MAX, f64::min));
                assert_eq!(st.max, values.iter().cloned().fold(f64::MIN, f64::max));
            }
        }
        assert_eq!(
            rollups.iter().map(|r| r.2.samples as usize).sum::<usize>(),
            raw.len()
        );

        // The aggregates hold the pruned samples: all of the first day.
        let aggs = store.aggregates(m).unwrap();
        assert_eq!(aggs.done_to_ms, cut);
        let held: u64 = aggs.configs.iter().map(|(_, a)| a.samples).sum();
        assert_eq!(held as usize, first_day);

        // Nothing new: calling again changes nothing.
        let again = store.compact(m, now, &retention, 500).unwrap();
        assert_eq!(again, Compacted::default());
        // A year on, the rollups go too; the aggregates stay.
        let later = now + 366 * day;
        let mut pruned = 0;
        loop {
            let c = store.compact(m, later, &retention, 500).unwrap();
            pruned += c.rollups_pruned;
            if !c.more {
                break;
            }
        }
        assert_eq!(pruned, rollups.len());
        // ...and everything is in the aggregates: exact counts and means, percentiles close.
        assert_eq!(store.first_raw_ms(m), None);
        let aggs = store.aggregates(m).unwrap().configs;
        assert_eq!(aggs.len(), 2);
        for (config, agg) in &aggs {
            let at: Vec<&Sample> = raw
                .iter()
                .filter(|s| ConfigKey::of(s.clock) == *config)
                .collect();
            assert_eq!(agg.samples as usize, at.len());
            let mean = at.iter().map(|s| s.hashrate.unwrap() as f64).sum::<f64>() / at.len() as f64;
            assert!((agg.stat(Metric::Hashrate).mean - mean).abs() < 1e-9);
            let median = agg.quantile(Metric::Hashrate, 0.5).unwrap();
            assert!((median - mean).abs() / mean < 0.02, "{median} vs {mean}");
        }
        let at600 = &aggs.iter().find(|(c, _)| c.frequency_mhz == 600).unwrap().1;
        // 600 MHz ran from noon to the end but for two hours: two sessions, and runtime
        // counts 30 s per sample after the first of each.
        assert_eq!(at600.sessions, 2);
        assert_eq!(at600.runtime_ms, (at600.samples - 2) * 30_000);
    }
}
