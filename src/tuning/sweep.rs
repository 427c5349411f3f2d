//! A benchmark sweep of one ESP-Miner chip: the community's algorithm, made safer. Synchronous
//! and clock-free (the time of each reading is a parameter); the benchmark task runs it.
//!
//! From the lowest frequency and voltage allowed, step the frequency up (`frequency_step`) while
//! the chip passes; on a fail raise the core voltage (`voltage_step`) and step the frequency
//! back. Each step settles (`settle`; frequency and voltage apply live, no restart), is sampled
//! every `sample_every` for `window`, and passes when the trimmed mean hashrate is at least
//! `pass_ratio` of what the frequency should give. A temperature, power or input-voltage limit
//! ends the sweep at once (backing off), as does the miner going offline. Never past the limits
//! it is given (the miner's own, which never pass the ASIC's absolute ones).

use crate::miner::ClockConfig;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// How a sweep is run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    /// MHz up after a pass (and back after a fail).
    pub frequency_step: u32,
    /// mV up after a fail.
    pub voltage_step: u32,
    /// How long after a change before sampling starts.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// How long each step is sampled.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often the miner is read while sampling.
    #[serde(with = "humantime_serde")]
    pub sample_every: Duration,
    /// Share of the expected hashrate a step must reach to pass.
    pub pass_ratio: f64,
    /// The board's most watts; `None`: 25 W per chip plus 5 W.
    pub max_power: Option<f64>,
    /// The input voltage a step must stay within, V.
    pub input_voltage_min: f64,
    pub input_voltage_max: f64,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            frequency_step: 25,
            voltage_step: 20,
            settle: Duration::from_secs(90),
            window: Duration::from_secs(600),
            sample_every: Duration::from_secs(15),
            pass_ratio: 0.94,
            max_power: None,
            input_voltage_min: 4.8,
            input_voltage_max: 5.5,
        }
    }
}

/// What the sweep may do and what it judges by, for one miner.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub frequency: RangeInclusive<u32>,
    pub core_voltage: RangeInclusive<u32>,
    /// GH/s the chips should give per MHz (small cores × chips / 1000).
    pub gh_per_mhz: f64,
    pub temp_limit: f64,
    pub vr_temp_limit: f64,
    pub max_power: f64,
}

/// One reading, as the sweep sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub clock: Option<ClockConfig>,
    pub hashrate: Option<f64>,
    pub power: Option<f64>,
    pub asic_temp: Option<f64>,
    pub vr_temp: Option<f64>,
    pub input_voltage: Option<f64>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// A limit was reached; the sweep ends.
    Limit,
}

/// One tested clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub frequency: u32,
    pub core_voltage: u32,
    pub samples: u32,
    /// Trimmed mean, GH/s.
    pub hashrate: f64,
    pub expected_hashrate: f64,
    pub power: f64,
    pub j_per_th: f64,
    /// The hottest readings of the step, °C.
    pub asic_temp: f64,
    pub vr_temp: Option<f64>,
    pub outcome: Outcome,
    /// Why it failed or hit a limit.
    pub why: Option<String>,
}

impl StepResult {
    pub fn clock(&self) -> ClockConfig {
        ClockConfig {
            frequency_mhz: self.frequency,
            core_voltage_mv: self.core_voltage,
        }
    }
}

/// What the sweep found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub results: Vec<StepResult>,
    pub best_efficiency: Option<StepResult>,
    pub best_hashrate: Option<StepResult>,
    /// The passing step nearest the ideal (the best hashrate at the best efficiency), each
    /// scaled to the range found.
    pub balanced: Option<StepResult>,
    /// Why it ended.
    pub stopped: String,
}

/// What the sweep asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Put this clock on the miner.
    Apply(ClockConfig),
    /// A step ended.
    Step(Box<StepResult>),
    /// The sweep is over (put the previous clock back, or a chosen result).
    Finished(Box<Summary>),
}

/// Where the sweep is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for a reading that shows the clock under test.
    Applying {
        since: Instant,
    },
    Settling {
        until: Instant,
    },
    Sampling {
        until: Instant,
    },
    Done,
}

/// How long a clock may take to show in the readings before the step counts as failed to apply.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many steps (a guard; the walk ends long before on its own).
const MAX_STEPS: usize = 200;

/// A sweep under way.
#[derive(Debug, Clone)]
pub struct Sweep {
    config: SweepConfig,
    bounds: Bounds,
    current: ClockConfig,
    phase: Phase,
    samples: Vec<Sample>,
    last_sample: Option<Instant>,
    results: Vec<StepResult>,
}

fn trimmed_mean(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let cut = values.len() / 10;
    let kept = &values[cut..values.len() - cut];
    kept.iter().sum::<f64>() / kept.len().max(1) as f64
}

impl Sweep {
    /// Starts a sweep at the lowest clock allowed; returns it and its first act.
    pub fn start(config: SweepConfig, bounds: Bounds, now: Instant) -> (Sweep, Act) {
        let current = ClockConfig {
            frequency_mhz: *bounds.frequency.start(),
            core_voltage_mv: *bounds.core_voltage.start(),
        };
        let sweep = Sweep {
            config,
            bounds,
            current,
            phase: Phase::Applying { since: now },
            samples: Vec::new(),
            last_sample: None,
            results: Vec::new(),
        };
        (sweep, Act::Apply(current))
    }

    /// The clock under test.
    pub fn current(&self) -> ClockConfig {
        self.current
    }

    pub fn results(&self) -> &[StepResult] {
        &self.results
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Steps the walk will still take at least, and the time they need.
    pub fn remaining(&self) -> (usize, Duration) {
        let f = self.current.frequency_mhz;
        let up =
            (self.bounds.frequency.end().saturating_sub(f)) / self.config.frequency_step.max(1);
        let steps = up as usize + 1;
        let per = self.config.settle + self.config.window;
        (steps, per * steps as u32)
    }

    /// Percent done: steps taken of steps taken and still to come (each step up is about
    /// one pass and, where the voltage runs short, one fail).
    pub fn percent(&self) -> u8 {
        let done = self.results.len();
        let (left, _) = self.remaining();
        let fails = self
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Fail)
            .count();
        let passes = done - fails;
        // Assume the rest fails as often as so far.
        let ratio = if passes == 0 {
            1.0
        } else {
            done as f64 / passes as f64
        };
        let total = done as f64 + left as f64 * ratio;
        if self.done() {
            100
        } else {
            ((done as f64 / total.max(1.0)) * 100.0).min(99.0) as u8
        }
    }

    /// One reading of the miner.
    pub fn on_sample(&mut self, s: &Sample, now: Instant) -> Vec<Act> {
        // A limit ends the sweep whatever the phase.
        if let Some(why) = self.limit(s) {
            return self.end_step(Outcome::Limit, Some(why), now);
        }
        match self.phase {
            Phase::Applying { since } => {
                if s.clock == Some(self.current) {
                    self.phase = Phase::Settling {
                        until: now + self.config.settle,
                    };
                } else if now.duration_since(since) > APPLY_TIMEOUT {
                    return self.finish(format!(
                        "the miner did not take {} MHz / {} mV within {}",
                        self.current.frequency_mhz,
                        self.current.core_voltage_mv,
                        humantime::format_duration(APPLY_TIMEOUT)
                    ));
                }
                Vec::new()
            }
            Phase::Settling { until } => {
                if now >= until {
                    self.phase = Phase::Sampling {
                        until: now + self.config.window,
                    };
                    self.samples.clear();
                    self.take(s, now);
                }
                Vec::new()
            }
            Phase::Sampling { until } => {
                if s.clock != Some(self.current) {
                    return self.finish(
                        "the miner's clock changed under the sweep (something else set it)".into(),
                    );
                }
                self.take(s, now);
                if now >= until && self.samples.len() >= 3 {
                    self.evaluate(now)
                } else {
                    Vec::new()
                }
            }
            Phase::Done => Vec::new(),
        }
    }

    /// The miner went offline: the step ends at a limit.
    pub fn on_offline(&mut self, now: Instant) -> Vec<Act> {
        if self.done() {
            return Vec::new();
        }
        self.end_step(Outcome::Limit, Some("the miner went offline".into()), now)
    }

    /// Stopped from outside (a button, a safety action, shutdown).
    pub fn stop(&mut self, why: String) -> Vec<Act> {
        if self.done() {
            return Vec::new();
        }
        self.finish(why)
    }

    fn take(&mut self, s: &Sample, now: Instant) {
        let due = self.last_sample.is_none_or(|t| {
            now.duration_since(t) + Duration::from_millis(100) >= self.config.sample_every
        });
        if due && s.hashrate.is_some() {
            self.samples.push(*s);
            self.last_sample = Some(now);
        }
    }

    fn limit(&self, s: &Sample) -> Option<String> {
        let b = &self.bounds;
        let c = &self.config;
        if let Some(t) = s.asic_temp.filter(|t| *t >= b.temp_limit) {
            return Some(format!("ASIC at {t:.1} °C (limit {} °C)", b.temp_limit));
        }
        if let Some(t) = s.vr_temp.filter(|t| *t >= b.vr_temp_limit) {
            return Some(format!("VR at {t:.1} °C (limit {} °C)", b.vr_temp_limit));
        }
        if let Some(p) = s.power.filter(|p| *p > b.max_power) {
            return Some(format!("{p:.1} W, above the board's {:.0} W", b.max_power));
        }
        if let Some(v) = s
            .input_voltage
            .filter(|v| *v < c.input_voltage_min || *v > c.input_voltage_max)
        {
            return Some(format!(
                "input voltage {v:.2} V outside {}–{} V (the power supply is struggling)",
                c.input_voltage_min, c.input_voltage_max
            ));
        }
        None
    }

    fn result(&mut self, outcome: Outcome, why: Option<String>) -> StepResult {
        let mut hashrates: Vec<f64> = self.samples.iter().filter_map(|s| s.hashrate).collect();
        let hashrate = if hashrates.is_empty() {
            0.0
        } else {
            trimmed_mean(&mut hashrates)
        };
        let powers: Vec<f64> = self.samples.iter().filter_map(|s| s.power).collect();
        let power = powers.iter().sum::<f64>() / powers.len().max(1) as f64;
        let max = |f: fn(&Sample) -> Option<f64>| {
            self.samples
                .iter()
                .filter_map(f)
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        };
        StepResult {
            frequency: self.current.frequency_mhz,
            core_voltage: self.current.core_voltage_mv,
            samples: self.samples.len() as u32,
            hashrate,
            expected_hashrate: self.current.frequency_mhz as f64 * self.bounds.gh_per_mhz,
            power,
            j_per_th: if hashrate > 0.0 {
                power / (hashrate / 1000.0)
            } else {
                0.0
            },
            asic_temp: max(|s| s.asic_temp).unwrap_or_default(),
            vr_temp: max(|s| s.vr_temp),
            outcome,
            why,
        }
    }

    fn evaluate(&mut self, now: Instant) -> Vec<Act> {
        let expected = self.current.frequency_mhz as f64 * self.bounds.gh_per_mhz;
        let probe = self.result(Outcome::Pass, None);
        if probe.hashrate >= self.config.pass_ratio * expected {
            self.end_step(Outcome::Pass, None, now)
        } else {
            let why = format!(
                "{:.0} GH/s is {:.1} % of the expected {:.0} GH/s (needs {:.0} %)",
                probe.hashrate,
                probe.hashrate / expected * 100.0,
                expected,
                self.config.pass_ratio * 100.0
            );
            self.end_step(Outcome::Fail, Some(why), now)
        }
    }

    /// Records the step and moves on (or ends).
    fn end_step(&mut self, outcome: Outcome, why: Option<String>, now: Instant) -> Vec<Act> {
        if self.done() {
            return Vec::new();
        }
        let result = self.result(outcome.clone(), why.clone());
        self.results.push(result.clone());
        let mut acts = vec![Act::Step(Box::new(result))];
        let (f, v) = (self.current.frequency_mhz, self.current.core_voltage_mv);
        let (fs, vs) = (self.config.frequency_step, self.config.voltage_step);
        let next = match outcome {
            Outcome::Limit => Err(format!(
                "a limit was reached at {f} MHz / {v} mV: {}",
                why.unwrap_or_default()
            )),
            Outcome::Pass if f + fs <= *self.bounds.frequency.end() => Ok((f + fs, v)),
            Outcome::Pass => Err(format!(
                "the highest frequency allowed ({f} MHz) passes at {v} mV"
            )),
            Outcome::Fail if v + vs <= *self.bounds.core_voltage.end() => Ok((
                f.saturating_sub(fs).max(*self.bounds.frequency.start()),
                v + vs,
            )),
            Outcome::Fail => Err(format!(
                "{f} MHz needs more than the highest core voltage allowed ({v} mV)"
            )),
        };
        match next {
            Ok(_) if self.results.len() >= MAX_STEPS => {
                acts.extend(self.finish(format!("{MAX_STEPS} steps taken")))
            }
            Ok((f, v)) => {
                self.current = ClockConfig {
                    frequency_mhz: f,
                    core_voltage_mv: v,
                };
                self.phase = Phase::Applying { since: now };
                self.samples.clear();
                self.last_sample = None;
                acts.push(Act::Apply(self.current));
            }
            Err(why) => acts.extend(self.finish(why)),
        }
        acts
    }

    fn finish(&mut self, stopped: String) -> Vec<Act> {
        self.phase = Phase::Done;
        vec![Act::Finished(Box::new(summarise(&self.results, stopped)))]
    }
}

/// The best efficiency, best hashrate and balanced points of a sweep's passing steps.
pub fn summarise(results: &[StepResult], stopped: String) -> Summary {
    let passing: Vec<&StepResult> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Pass && r.hashrate > 0.0)
        .collect();
    let best_efficiency = passing
        .iter()
        .min_by(|a, b| a.j_per_th.total_cmp(&b.j_per_th))
        .map(|r| (*r).clone());
    let best_hashrate = passing
        .iter()
        .max_by(|a, b| a.hashrate.total_cmp(&b.hashrate))
        .map(|r| (*r).clone());
    let balanced = match (&best_efficiency, &best_hashrate) {
        (Some(e), Some(h)) => {
            let (e_lo, e_hi) = (
                e.j_per_th,
                passing.iter().map(|r| r.j_per_th).fold(0.0, f64::max),
            );
            let (h_lo, h_hi) = (
                passing.iter().map(|r| r.hashrate).fold(f64::MAX, f64::min),
                h.hashrate,
            );
            let scaled =
                |x: f64, lo: f64, hi: f64| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
            passing
                .iter()
                .min_by(|a, b| {
                    let d = |r: &StepResult| {
                        let ex = scaled(r.j_per_th, e_lo, e_hi);
                        let hx = 1.0 - scaled(r.hashrate, h_lo, h_hi);
                        ex * ex + hx * hx
                    };
                    d(a).total_cmp(&d(b))
                })
                .map(|r| (*r).clone())
        }
        _ => None,
    };
    Summary {
        results: results.to_vec(),
        best_efficiency,
        best_hashrate,
        balanced,
        stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::axeos::{Chip, BM1370};

    fn bounds() -> Bounds {
        Bounds {
            frequency: 400..=625,
            core_voltage: 1000..=1250,
            gh_per_mhz: 2.04,
            temp_limit: 65.0,
            vr_temp_limit: 85.0,
            max_power: 30.0,
        }
    }

    fn quick() -> SweepConfig {
        SweepConfig {
            settle: Duration::from_secs(10),
            window: Duration::from_secs(60),
            sample_every: Duration::from_secs(15),
            ..SweepConfig::default()
        }
    }

    /// Runs a sweep against the simulator's steady-state physics (without noise), reading every
    /// 5 s; returns the summary.
    fn run(chip: Chip, temp: impl Fn(f64) -> f64) -> Summary {
        let mut now = Instant::now();
        let (mut sweep, first) = Sweep::start(quick(), bounds(), now);
        let mut clock = match first {
            Act::Apply(c) => c,
            other => panic!("{other:?}"),
        };
        loop {
            now += Duration::from_secs(5);
            let (w, h) = chip.steady(1, clock.frequency_mhz, clock.core_voltage_mv);
            let s = Sample {
                clock: Some(clock),
                hashrate: Some(h),
                power: Some(w),
                asic_temp: Some(temp(w)),
                vr_temp: Some(50.0),
                input_voltage: Some(5.1),
            };
            for act in sweep.on_sample(&s, now) {
                match act {
                    Act::Apply(c) => clock = c,
                    Act::Step(_) => {}
                    Act::Finished(summary) => return *summary,
                }
            }
        }
    }

    #[test]
    fn the_sweep_finds_the_chips_best_efficiency_and_hashrate_within_one_step() {
        use crate::sim::axeos::{DeviceSpec, Firmware};
        let mut chips = vec![BM1370];
        chips.extend((1..=4).map(|n| {
            DeviceSpec::gamma(n, Firmware::V2_12)
                .with_silicon(n as u64)
                .chip
        }));
        for chip in chips {
            check_sweep(chip);
        }
    }

    fn check_sweep(chip: Chip) {
        let summary = run(chip, |_| 55.0);
        let best = summary.best_efficiency.clone().unwrap();
        let fastest = summary.best_hashrate.clone().unwrap();
        // The truth, over every clock the sweep could have tried (25 MHz × 20 mV grid) that
        // passes 94 %.
        let mut truth_eff: Option<(f64, u32, u32)> = None;
        let mut truth_hash: Option<(f64, u32, u32)> = None;
        for f in (400..=625).step_by(25) {
            for v in (1000..=1250).step_by(20) {
                let (w, h) = chip.steady(1, f, v);
                if h < 0.94 * f as f64 * 2.04 {
                    continue;
                }
                let j = w / (h / 1000.0);
                if truth_eff.is_none_or(|t| j < t.0) {
                    truth_eff = Some((j, f, v));
                }
                if truth_hash.is_none_or(|t| h > t.0) {
                    truth_hash = Some((h, f, v));
                }
            }
        }
        let (te, tf, tv) = truth_eff.unwrap();
        assert!(
            best.frequency.abs_diff(tf) <= 25 && best.core_voltage.abs_diff(tv) <= 20,
            "best efficiency {}/{} ({:.2} J/TH), truth {tf}/{tv} ({te:.2}): {:#?}",
            best.frequency,
            best.core_voltage,
            best.j_per_th,
            summary.results
        );
        let (_, hf, hv) = truth_hash.unwrap();
        assert!(
            fastest.frequency.abs_diff(hf) <= 25 && fastest.core_voltage.abs_diff(hv) <= 20,
            "best hashrate {}/{}, truth {hf}/{hv}",
            fastest.frequency,
            fastest.core_voltage
        );
        assert!(
            summary.stopped.contains("highest frequency"),
            "{}",
            summary.stopped
        );
        // Every step stayed within the bounds, and each fail was followed by more voltage.
        for w in summary.results.windows(2) {
            if w[0].outcome == Outcome::Fail {
                assert_eq!(w[1].core_voltage, w[0].core_voltage + 20);
            }
        }
        let balanced = summary.balanced.unwrap();
        assert!(balanced.j_per_th >= best.j_per_th && balanced.hashrate <= fastest.hashrate);
    }

    #[test]
    fn a_chip_that_needs_more_voltage_has_another_optimum() {
        let mut hungry = BM1370;
        hungry.v0 += 40.0;
        let a = run(BM1370, |_| 55.0).best_efficiency.unwrap();
        let b = run(hungry, |_| 55.0).best_efficiency.unwrap();
        assert!(b.core_voltage > a.core_voltage, "{a:?} {b:?}");
    }

    #[test]
    fn simulated_chips_of_one_model_have_optima_of_their_own() {
        use crate::sim::axeos::{DeviceSpec, Firmware};
        let optima: std::collections::BTreeSet<(u32, u32)> = (1..=6)
            .map(|n| {
                let chip = DeviceSpec::gamma(n, Firmware::V2_12)
                    .with_silicon(n as u64)
                    .chip;
                let best = run(chip, |_| 55.0).best_efficiency.unwrap();
                (best.frequency, best.core_voltage)
            })
            .collect();
        assert!(optima.len() >= 3, "{optima:?}");
    }

    #[test]
    fn a_temperature_limit_ends_the_sweep_and_backs_off() {
        // Hot above 18 W: the sweep stops at the first step that reaches it.
        let summary = run(BM1370, |w| if w > 18.0 { 66.0 } else { 58.0 });
        let last = summary.results.last().unwrap();
        assert_eq!(last.outcome, Outcome::Limit);
        assert!(
            summary.stopped.contains("ASIC at 66.0 °C"),
            "{}",
            summary.stopped
        );
        assert!(summary.best_hashrate.unwrap().power.lt(&18.0));
    }

    #[test]
    fn offline_ends_the_step_at_a_limit() {
        let now = Instant::now();
        let (mut sweep, _) = Sweep::start(quick(), bounds(), now);
        let acts = sweep.on_offline(now);
        assert!(matches!(acts.last(), Some(Act::Finished(s)) if s.stopped.contains("offline")));
        assert!(sweep.done());
        assert!(sweep.stop("again".into()).is_empty());
    }
}
