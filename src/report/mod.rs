//! "Which settings are best for this chip?" from its history: per clock config the runtime,
//! samples, sessions, and mean / median / stddev / p5 / p95 of hashrate, power, ASIC
//! temperature and J/TH; the sessions (contiguous runs at one config); and recommendations on
//! the Pareto front of hashrate against power. Also the raw-sample export.
//!
//! A report over a span reads the raw samples where they are still kept (exact percentiles)
//! and the 5-minute rollups before that (exact means and spread; percentiles from the rollups'
//! means, within about 1 %). A report over all time starts from the per-config aggregates,
//! which are kept forever. [`plot`] draws it; [`cli`] is `miner2mqtt report` and `export`.

pub mod cli;
pub mod plot;

use crate::store::history::{bucket_of, Aggregate, ConfigKey, Continuity, Metric, Rollup};
use crate::store::{Sample, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sessions listed at most (the newest).
const MAX_SESSIONS: usize = 100;

/// What to report on.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// From this time (ms); all of history when `None`.
    pub since_ms: Option<u64>,
    pub now_ms: u64,
    /// Configs with fewer samples are listed but not recommended.
    pub min_samples: u64,
}

/// One quantity at one config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    pub unit: String,
    pub count: u64,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub stddev: Option<f64>,
    pub p5: Option<f64>,
    pub p95: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// One clock config of one miner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// `None` for a miner that reports no clock (the config is its stock one).
    pub frequency_mhz: Option<u32>,
    pub core_voltage_mv: Option<u32>,
    pub runtime_s: u64,
    pub samples: u64,
    pub sessions: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub hashrate: MetricReport,
    pub power: MetricReport,
    pub temperature: MetricReport,
    pub efficiency: MetricReport,
    /// No other config has at least its hashrate for at most its power (one strictly better).
    pub pareto: bool,
    /// Percentiles are exact (from raw samples only) rather than within about 1 %.
    pub exact_percentiles: bool,
}

/// `525 MHz / 1150 mV`, or `stock` for a miner that reports no clock.
pub fn config_label(frequency_mhz: Option<u32>, core_voltage_mv: Option<u32>) -> String {
    let clock = frequency_mhz
        .zip(core_voltage_mv)
        .map(
            |(frequency_mhz, core_voltage_mv)| crate::miner::ClockConfig {
                frequency_mhz,
                core_voltage_mv,
            },
        );
    ConfigKey::of(clock).to_string()
}

impl ConfigReport {
    pub fn label(&self) -> String {
        config_label(self.frequency_mhz, self.core_voltage_mv)
    }

    pub fn metric(&self, m: Metric) -> &MetricReport {
        match m {
            Metric::Hashrate => &self.hashrate,
            Metric::Power => &self.power,
            Metric::Temperature => &self.temperature,
            Metric::Efficiency => &self.efficiency,
        }
    }
}

/// A contiguous run at one clock config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub start_ms: u64,
    pub end_ms: u64,
    pub frequency_mhz: Option<u32>,
    pub core_voltage_mv: Option<u32>,
    pub samples: u64,
    pub hashrate: Option<f64>,
    pub power: Option<f64>,
}

/// A recommended config with its means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub frequency_mhz: Option<u32>,
    pub core_voltage_mv: Option<u32>,
    pub hashrate: f64,
    pub power: f64,
    pub j_per_th: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recommendations {
    pub best_efficiency: Option<Pick>,
    pub best_hashrate: Option<Pick>,
    /// The point of the Pareto front nearest the ideal (the best J/TH at the best hashrate),
    /// each scaled to the front's range.
    pub balanced: Option<Pick>,
}

/// One miner's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub miner: String,
    /// The span it covers (ms); `since_ms` is the oldest sample for an all-time report.
    pub since_ms: Option<u64>,
    pub until_ms: u64,
    pub configs: Vec<ConfigReport>,
    /// The newest sessions, oldest first.
    pub sessions: Vec<Session>,
    pub recommendations: Recommendations,
}

fn metric_report(agg: &Aggregate, m: Metric) -> MetricReport {
    let st = agg.stat(m);
    MetricReport {
        unit: m.unit().into(),
        count: st.count,
        mean: st.mean(),
        median: agg.quantile(m, 0.5),
        stddev: st.stddev(),
        p5: agg.quantile(m, 0.05),
        p95: agg.quantile(m, 0.95),
        min: (st.count > 0).then_some(st.min),
        max: (st.count > 0).then_some(st.max),
    }
}

/// Walks points in time order: per-config figures and the list of sessions.
struct Walk {
    configs: BTreeMap<ConfigKey, Aggregate>,
    continuity: Continuity,
    sessions: Vec<(
        Session,
        ConfigKey,
        crate::store::history::Stats,
        crate::store::history::Stats,
    )>,
}

impl Walk {
    fn new(configs: BTreeMap<ConfigKey, Aggregate>, continuity: Continuity) -> Walk {
        Walk {
            configs,
            continuity,
            sessions: Vec::new(),
        }
    }

    fn session(&mut self, new: bool, at_first: u64, at_last: u64, config: ConfigKey) -> usize {
        let current = self.sessions.last().map(|(_, c, _, _)| *c);
        if new || current != Some(config) {
            let clock = config.clock();
            self.sessions.push((
                Session {
                    start_ms: at_first,
                    end_ms: at_last,
                    frequency_mhz: clock.map(|c| c.frequency_mhz),
                    core_voltage_mv: clock.map(|c| c.core_voltage_mv),
                    samples: 0,
                    hashrate: None,
                    power: None,
                },
                config,
                Default::default(),
                Default::default(),
            ));
            if self.sessions.len() > 2 * MAX_SESSIONS {
                self.sessions.drain(..MAX_SESSIONS);
            }
        }
        let i = self.sessions.len() - 1;
        self.sessions[i].0.end_ms = at_last;
        i
    }

    /// A raw sample; its figures count when `count` (an all-time report has them in the
    /// aggregates already up to where they reach).
    fn raw(&mut self, s: &Sample, count: bool) {
        let config = ConfigKey::of(s.clock);
        let (new, runtime) = self.continuity.step(s.at_ms, config);
        let i = self.session(new, s.at_ms, s.at_ms, config);
        let entry = &mut self.sessions[i];
        entry.0.samples += 1;
        if let Some(h) = Metric::Hashrate.of(s) {
            entry.2.add(h);
        }
        if let Some(p) = Metric::Power.of(s) {
            entry.3.add(p);
        }
        if count {
            let agg = self.configs.entry(config).or_insert_with(Aggregate::exact);
            agg.add_sample(s);
            agg.runtime_ms += runtime;
            agg.sessions += u64::from(new);
        }
    }

    fn rollup(&mut self, bucket: u64, config: ConfigKey, r: &Rollup, count: bool) {
        let first = bucket + u64::from(r.first_s) * 1000;
        let last = bucket + u64::from(r.last_s) * 1000;
        let gap = matches!(self.continuity.last, Some((t, _)) if first.saturating_sub(t) > crate::store::history::SESSION_GAP_MS);
        let i = self.session(r.sessions > 0 || gap, first, last, config);
        self.continuity.last = Some((last, config));
        let entry = &mut self.sessions[i];
        entry.0.samples += u64::from(r.samples);
        entry.2.merge(&r.stats(Metric::Hashrate));
        entry.3.merge(&r.stats(Metric::Power));
        if count {
            self.configs
                .entry(config)
                .or_insert_with(Aggregate::exact)
                .add_rollup(bucket, r);
        }
    }
}

/// The Pareto front (by mean hashrate up, mean power down) and the recommendations among the
/// configs with at least `min_samples`.
fn recommend(configs: &mut [ConfigReport], min_samples: u64) -> Recommendations {
    let point = |c: &ConfigReport| match (c.hashrate.mean, c.power.mean, c.efficiency.mean) {
        (Some(h), Some(p), Some(e)) if h > 0.0 && c.samples >= min_samples => Some((h, p, e)),
        _ => None,
    };
    let points: Vec<Option<(f64, f64, f64)>> = configs.iter().map(point).collect();
    let dominated = |(h, p, _): (f64, f64, f64)| {
        points
            .iter()
            .flatten()
            .any(|&(h2, p2, _)| h2 >= h && p2 <= p && (h2 > h || p2 < p))
    };
    for (c, pt) in configs.iter_mut().zip(&points) {
        c.pareto = pt.is_some_and(|pt| !dominated(pt));
    }
    let front: Vec<(&ConfigReport, (f64, f64, f64))> = configs
        .iter()
        .zip(&points)
        .filter(|(c, _)| c.pareto)
        .filter_map(|(c, pt)| Some((c, (*pt)?)))
        .collect();
    let pick = |c: &ConfigReport, (h, p, e): (f64, f64, f64)| Pick {
        frequency_mhz: c.frequency_mhz,
        core_voltage_mv: c.core_voltage_mv,
        hashrate: h,
        power: p,
        j_per_th: e,
    };
    let best_efficiency = front
        .iter()
        .min_by(|a, b| a.1 .2.total_cmp(&b.1 .2))
        .map(|(c, pt)| pick(c, *pt));
    let best_hashrate = front
        .iter()
        .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
        .map(|(c, pt)| pick(c, *pt));
    let range = |f: fn(&(f64, f64, f64)) -> f64| {
        front
            .iter()
            .map(|(_, pt)| f(pt))
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)))
    };
    let (e_lo, e_hi) = range(|pt| pt.2);
    let (h_lo, h_hi) = range(|pt| pt.0);
    let scaled = |x: f64, lo: f64, hi: f64| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
    let balanced = front
        .iter()
        .min_by(|a, b| {
            let d = |pt: &(f64, f64, f64)| {
                let e = scaled(pt.2, e_lo, e_hi);
                let h = 1.0 - scaled(pt.0, h_lo, h_hi);
                e * e + h * h
            };
            d(&a.1).total_cmp(&d(&b.1))
        })
        .map(|(c, pt)| pick(c, *pt));
    Recommendations {
        best_efficiency,
        best_hashrate,
        balanced,
    }
}

/// The report on one miner (its store number `n`).
pub fn build(store: &Store, name: &str, n: u32, q: &Query) -> Result<Report, StoreError> {
    let now = q.now_ms;
    // Raw samples are whole buckets from here on.
    let raw_from = store.first_raw_ms(n).map(bucket_of).unwrap_or(now);
    let mut walk;
    match q.since_ms {
        None => {
            let aggs = store.aggregates(n)?;
            let done_to = aggs.done_to_ms;
            walk = Walk::new(aggs.configs.into_iter().collect(), Continuity::default());
            for (bucket, config, r) in store.rollups(n, 0, raw_from)? {
                walk.rollup(bucket, config, &r, false);
            }
            for s in store.window(n, raw_from, now.saturating_add(1))? {
                let count = s.at_ms >= done_to;
                walk.raw(&s, count);
            }
        }
        Some(since) => {
            walk = Walk::new(BTreeMap::new(), Continuity::default());
            if since < raw_from {
                for (bucket, config, r) in store.rollups(n, since, raw_from)? {
                    walk.rollup(bucket, config, &r, true);
                }
            }
            for s in store.window(n, since.max(raw_from), now.saturating_add(1))? {
                walk.raw(&s, true);
            }
        }
    }
    let mut configs: Vec<ConfigReport> = walk
        .configs
        .iter()
        .filter(|(_, a)| a.samples > 0)
        .map(|(config, agg)| {
            let clock = config.clock();
            ConfigReport {
                frequency_mhz: clock.map(|c| c.frequency_mhz),
                core_voltage_mv: clock.map(|c| c.core_voltage_mv),
                runtime_s: agg.runtime_ms / 1000,
                samples: agg.samples,
                sessions: agg.sessions,
                first_ms: agg.first_ms,
                last_ms: agg.last_ms,
                hashrate: metric_report(agg, Metric::Hashrate),
                power: metric_report(agg, Metric::Power),
                temperature: metric_report(agg, Metric::Temperature),
                efficiency: metric_report(agg, Metric::Efficiency),
                pareto: false,
                exact_percentiles: agg.exact_quantiles(),
            }
        })
        .collect();
    let recommendations = recommend(&mut configs, q.min_samples);
    let skip = walk.sessions.len().saturating_sub(MAX_SESSIONS);
    let sessions = walk
        .sessions
        .into_iter()
        .skip(skip)
        .map(|(mut s, _, h, p)| {
            s.hashrate = h.mean();
            s.power = p.mean();
            s
        })
        .collect();
    Ok(Report {
        miner: name.to_string(),
        since_ms: q
            .since_ms
            .or_else(|| configs.iter().map(|c| c.first_ms).min()),
        until_ms: now,
        configs,
        sessions,
        recommendations,
    })
}

/// `7d`, `24h`, an RFC 3339 time or a date (`2026-11-01`, UTC) → ms since the epoch.
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis().max(0) as u64);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis().max(0) as u64);
        }
    }
    Err(format!(
        "since {text:?} is neither a duration back from now (7d, 24h, 90m) nor a time (2026-11-01 or 2026-11-01T18:00:00Z)"
    ))
}

/// How a report or an export is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `3d 4h`, `2h 5m`, `4m 30s`, `12s`: the two largest units.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match () {
        _ if d > 0 => format!("{d}d {h}h"),
        _ if h > 0 => format!("{h}h {m}m"),
        _ if m > 0 => format!("{m}m {s}s"),
        _ => format!("{s}s"),
    }
}

fn num(x: Option<f64>, d: usize) -> String {
    x.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into())
}

fn pick_line(label: &str, p: &Option<Pick>) -> String {
    match p {
        Some(p) => {
            let config = config_label(p.frequency_mhz, p.core_voltage_mv);
            format!(
                "  {label:<16} {config}: {:.1} GH/s, {:.2} W, {:.2} J/TH\n",
                p.hashrate, p.power, p.j_per_th
            )
        }
        None => format!("  {label:<16} not enough data\n"),
    }
}

/// The report as a human reads it.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "{} — {} to {} UTC: {} config(s), {} session(s) listed\n",
        r.miner,
        r.since_ms.map(time).unwrap_or_else(|| "-".into()),
        time(r.until_ms),
        r.configs.len(),
        r.sessions.len()
    );
    if r.configs.is_empty() {
        out.push_str("  no samples in this span\n");
        return out;
    }
    out.push_str(&format!(
        "\n{:<20} {:>10} {:>8} {:>8}  pareto\n",
        "config", "runtime", "samples", "sessions"
    ));
    for c in &r.configs {
        out.push_str(&format!(
            "{:<20} {:>10} {:>8} {:>8}  {}\n",
            c.label(),
            span(c.runtime_s),
            c.samples,
            c.sessions,
            if c.pareto { "*" } else { "" }
        ));
    }
    for m in Metric::ALL {
        out.push_str(&format!(
            "\n{:<20} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            format!("{} ({})", m.name(), m.unit()),
            "mean",
            "median",
            "stddev",
            "p5",
            "p95"
        ));
        let d = if m == Metric::Hashrate { 1 } else { 2 };
        for c in &r.configs {
            let x = c.metric(m);
            out.push_str(&format!(
                "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                c.label(),
                num(x.mean, d),
                num(x.median, d),
                num(x.stddev, d),
                num(x.p5, d),
                num(x.p95, d)
            ));
        }
    }
    if r.configs.iter().any(|c| !c.exact_percentiles) {
        out.push_str("(percentiles of older history come from 5-minute means, within about 1 %)\n");
    }
    out.push_str("\nrecommendations:\n");
    out.push_str(&pick_line(
        "best efficiency",
        &r.recommendations.best_efficiency,
    ));
    out.push_str(&pick_line(
        "best hashrate",
        &r.recommendations.best_hashrate,
    ));
    out.push_str(&pick_line("balanced", &r.recommendations.balanced));
    if !r.sessions.is_empty() {
        out.push_str("\nsessions:\n");
        for s in &r.sessions {
            let config = config_label(s.frequency_mhz, s.core_voltage_mv);
            out.push_str(&format!(
                "  {} → {}  {:<20} {:>6} samples  {:>9} GH/s {:>7} W\n",
                time(s.start_ms),
                time(s.end_ms),
                config,
                s.samples,
                num(s.hashrate, 1),
                num(s.power, 2)
            ));
        }
    }
    out
}

/// One row per miner and config.
pub fn csv(reports: &[Report]) -> String {
    let mut out = String::from(
        "miner,frequency_mhz,core_voltage_mv,runtime_s,samples,sessions,pareto,exact_percentiles",
    );
    for m in Metric::ALL {
        for stat in ["mean", "median", "stddev", "p5", "p95", "min", "max"] {
            out.push_str(&format!(",{}_{stat}", m.name()));
        }
    }
    out.push('\n');
    let opt = |x: Option<f64>| x.map(|x| format!("{x}")).unwrap_or_default();
    for r in reports {
        for c in &r.configs {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}",
                r.miner,
                c.frequency_mhz.map(|f| f.to_string()).unwrap_or_default(),
                c.core_voltage_mv.map(|f| f.to_string()).unwrap_or_default(),
                c.runtime_s,
                c.samples,
                c.sessions,
                c.pareto,
                c.exact_percentiles
            ));
            for m in Metric::ALL {
                let x = c.metric(m);
                for v in [x.mean, x.median, x.stddev, x.p5, x.p95, x.min, x.max] {
                    out.push(',');
                    out.push_str(&opt(v));
                }
            }
            out.push('\n');
        }
    }
    out
}

/// Raw samples as CSV, one row each.
pub fn samples_csv(samples: &[Sample]) -> String {
    let mut out = String::from("time,frequency_mhz,core_voltage_mv,hashrate_ghs,power_w,asic_temp_c,vr_temp_c,fan_percent,fan_rpm,input_voltage_v,current_a,core_voltage_actual_mv,shares_accepted,shares_rejected,j_per_th\n");
    let f = |x: Option<f32>| x.map(|x| x.to_string()).unwrap_or_default();
    let u = |x: Option<u64>| x.map(|x| x.to_string()).unwrap_or_default();
    for s in samples {
        let t = chrono::DateTime::from_timestamp_millis(s.at_ms as i64)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        out.push_str(&format!(
            "{t},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            s.clock
                .map(|c| c.frequency_mhz.to_string())
                .unwrap_or_default(),
            s.clock
                .map(|c| c.core_voltage_mv.to_string())
                .unwrap_or_default(),
            f(s.hashrate),
            f(s.power),
            f(s.asic_temp),
            f(s.vr_temp),
            f(s.fan_speed),
            f(s.fan_rpm),
            f(s.input_voltage),
            f(s.current),
            f(s.core_voltage_actual),
            u(s.shares_accepted),
            u(s.shares_rejected),
            f(s.efficiency()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miner::ClockConfig;

    fn sample(at_ms: u64, f: u32, h: f32, p: f32, t: f32) -> Sample {
        let clock = ClockConfig {
            frequency_mhz: f,
            core_voltage_mv: 1100 + f / 5,
        };
        Sample::basic(at_ms, Some(clock), h, p, t)
    }

    /// The example worked by hand: three configs, a handful of samples each, 30 s apart.
    ///
    /// 500 MHz (1200 mV), 5 samples from t=0: hashrate 1000, 1010, 990, 1020, 980 → mean 1000,
    /// median 1000, sample stddev √(1000/4) = 15.811, p5 = 980 + 0.2·10 = 982 (rank 0.2),
    /// p95 = 1010 + 0.8·10 = 1018 (rank 3.8); power all 15 W → J/TH 15/1.0 = 15 at 1000 GH/s,
    /// mean J/TH (15/1.00 + 15/1.01 + 15/0.99 + 15/1.02 + 15/0.98)/5 = 15.0030; runtime 4 × 30 s.
    /// 600 MHz (1220 mV), 4 samples: 1200 GH/s each at 20 W → 16.667 J/TH; runtime 90 s.
    /// 550 MHz (1210 mV), 3 samples: 1050 GH/s at 19 W → 18.095 J/TH: on the front (only
    /// 600 MHz has more hashrate, and it draws more power). 525 MHz (1205 mV), 3 samples:
    /// 900 GH/s at 16 W is dominated by 500 MHz (1000 GH/s at 15 W).
    #[test]
    fn report_figures_match_the_hand_computed_example() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h"), 1 << 20).unwrap();
        let n = store.miner_number("aa").unwrap();
        let t0 = 1_000_000_000u64;
        let mut t = t0;
        let mut put = |f: u32, h: f32, p: f32, temp: f32| {
            store.record(n, &sample(t, f, h, p, temp)).unwrap();
            t += 30_000;
        };
        for (h, temp) in [
            (1000.0, 50.0),
            (1010.0, 51.0),
            (990.0, 52.0),
            (1020.0, 53.0),
            (980.0, 54.0),
        ] {
            put(500, h, 15.0, temp);
        }
        for _ in 0..4 {
            put(600, 1200.0, 20.0, 60.0);
        }
        for _ in 0..3 {
            put(550, 1050.0, 19.0, 58.0);
        }
        for _ in 0..3 {
            put(525, 900.0, 16.0, 55.0);
        }
        let now = t + 60_000;
        let report = build(
            &store,
            "bitaxe",
            n,
            &Query {
                since_ms: Some(t0),
                now_ms: now,
                min_samples: 3,
            },
        )
        .unwrap();
        assert_eq!(report.configs.len(), 4);
        let at = |f: u32| {
            report
                .configs
                .iter()
                .find(|c| c.frequency_mhz == Some(f))
                .unwrap()
        };
        let c500 = at(500);
        assert_eq!((c500.samples, c500.sessions, c500.runtime_s), (5, 1, 120));
        assert_eq!(c500.core_voltage_mv, Some(1200));
        let h = &c500.hashrate;
        assert_eq!(h.mean, Some(1000.0));
        assert_eq!(h.median, Some(1000.0));
        assert!((h.stddev.unwrap() - 250f64.sqrt()).abs() < 1e-9);
        assert!((h.p5.unwrap() - 982.0).abs() < 1e-9);
        assert!((h.p95.unwrap() - 1018.0).abs() < 1e-9);
        assert_eq!((h.min, h.max), (Some(980.0), Some(1020.0)));
        let e = (15.0 / 1.0 + 15.0 / 1.01 + 15.0 / 0.99 + 15.0 / 1.02 + 15.0 / 0.98) / 5.0;
        assert!((c500.efficiency.mean.unwrap() - e).abs() < 1e-4);
        assert_eq!(c500.temperature.mean, Some(52.0));
        assert_eq!(c500.power.stddev, Some(0.0));
        assert!(c500.exact_percentiles);
        assert_eq!(at(600).runtime_s, 90);
        assert!((at(600).efficiency.mean.unwrap() - 20.0 / 1.2).abs() < 1e-4);

        // The front: 500 (1000 GH/s, 15 W), 550 (1050, 19), 600 (1200, 20); 525 is dominated.
        let front: Vec<u32> = report
            .configs
            .iter()
            .filter(|c| c.pareto)
            .filter_map(|c| c.frequency_mhz)
            .collect();
        assert_eq!(front, [500, 550, 600]);
        let rec = &report.recommendations;
        assert_eq!(
            rec.best_efficiency.as_ref().unwrap().frequency_mhz,
            Some(500)
        );
        assert_eq!(rec.best_hashrate.as_ref().unwrap().frequency_mhz, Some(600));
        // Scaled to the front: 500 is (J/TH 0, hashrate 1 short) → distance² 1; 600 is
        // (J/TH (16.667−15.003)/(18.095−15.003) = 0.538, hashrate 0) → 0.29; 550 is (1, 0.75) → 1.56.
        assert_eq!(rec.balanced.as_ref().unwrap().frequency_mhz, Some(600));

        // Sessions: one per config, in order.
        let runs: Vec<(Option<u32>, u64)> = report
            .sessions
            .iter()
            .map(|s| (s.frequency_mhz, s.samples))
            .collect();
        assert_eq!(
            runs,
            [
                (Some(500), 5),
                (Some(600), 4),
                (Some(550), 3),
                (Some(525), 3)
            ]
        );
        assert_eq!(report.sessions[0].hashrate, Some(1000.0));

        // Too few samples: listed, not recommended.
        let strict = build(
            &store,
            "bitaxe",
            n,
            &Query {
                since_ms: Some(t0),
                now_ms: now,
                min_samples: 5,
            },
        )
        .unwrap();
        assert_eq!(strict.configs.len(), 4);
        assert_eq!(
            strict.recommendations.best_hashrate.unwrap().frequency_mhz,
            Some(500)
        );
        let text = table(&report);
        assert!(text.contains("500 MHz / 1200 mV"), "{text}");
        assert!(csv(&[report]).lines().count() == 5);
    }

    #[test]
    fn since_takes_a_duration_a_date_or_a_time_and_says_what_it_wanted() {
        let now = 1_764_633_600_000; // 2025-12-02T00:00:00Z
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_since("2025-12-01", now), Ok(now - 86_400_000));
        assert_eq!(
            parse_since("2025-12-01T12:00:00Z", now),
            Ok(now - 43_200_000)
        );
        let e = parse_since("last tuesday", now).unwrap_err();
        assert!(e.contains("\"last tuesday\"") && e.contains("7d"), "{e}");
    }

    /// Once compacted and pruned, the all-time report (aggregates) and a span report (rollups)
    /// give the raw means.
    #[test]
    fn rolled_up_history_reports_the_raw_means() {
        use crate::store::history::Retention;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h"), 1 << 20).unwrap();
        let n = store.miner_number("aa").unwrap();
        let day = 86_400_000u64;
        let t0 = 100 * day;
        let mut raw = Vec::new();
        for i in 0..(3 * 2880u64) {
            let f = if i < 4000 { 500 } else { 575 };
            let s = sample(
                t0 + i * 30_000,
                f,
                f as f32 * 2.0 + (i % 13) as f32,
                15.0 + (i % 3) as f32,
                55.0,
            );
            store.record(n, &s).unwrap();
            raw.push(s);
        }
        let now = t0 + 3 * day + 600_000;
        let retention = Retention {
            raw_for: std::time::Duration::from_millis(day),
            ..Default::default()
        };
        while store.compact(n, now, &retention, 1000).unwrap().more {}
        assert!(store.first_raw_ms(n).unwrap() > t0 + day);
        for since in [None, Some(t0)] {
            let r = build(
                &store,
                "m",
                n,
                &Query {
                    since_ms: since,
                    now_ms: now,
                    min_samples: 10,
                },
            )
            .unwrap();
            for c in &r.configs {
                let at: Vec<f64> = raw
                    .iter()
                    .filter(|s| s.clock.map(|k| k.frequency_mhz) == c.frequency_mhz)
                    .map(|s| s.hashrate.unwrap() as f64)
                    .collect();
                let mean = at.iter().sum::<f64>() / at.len() as f64;
                assert_eq!(c.samples as usize, at.len(), "{since:?}");
                assert!(
                    (c.hashrate.mean.unwrap() - mean).abs() < 1e-3,
                    "{since:?}: {:?} vs {mean}",
                    c.hashrate.mean
                );
                assert!((c.hashrate.median.unwrap() - mean).abs() / mean < 0.02);
                assert_eq!(c.sessions, 1);
                assert!(!c.exact_percentiles);
            }
            assert_eq!(r.sessions.len(), 2, "{since:?}");
            assert_eq!(r.sessions[0].samples, 4000);
        }
    }
}
