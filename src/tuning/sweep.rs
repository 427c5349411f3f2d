//! A benchmark sweep of one chip: the community's algorithm, made safer. Synchronous and
//! clock-free (the time of each reading is a parameter); the benchmark task runs it.
//!
//! An ESP-Miner chip ([`Walk::Clocks`]): from the lowest frequency and voltage allowed, step the
//! frequency up (`frequency_step`) while the chip passes; on a fail raise the core voltage
//! (`voltage_step`) and step the frequency back. A firmware with work modes of its own
//! ([`Walk::Modes`], the Avalons): each mode in turn, pass or fail, compared the same way. Each
//! step settles (`settle`; frequency and voltage apply live, no restart; `mode_settle` for a work
//! mode, which the firmware calibrates), is sampled every `sample_every` for `window`, and passes
//! when the trimmed mean hashrate is at least `pass_ratio` of what the step should give (the
//! frequency's rate, or the rate the firmware expects in that mode) and, where the firmware counts
//! them, the chips' errors stay within `max_error_percent`. A temperature, power or input-voltage
//! limit ends the sweep at once (backing off), as does the miner going offline. Never past the
//! limits it is given (the miner's own, which never pass the ASIC's absolute ones).

use crate::miner::ClockConfig;
use crate::safety::ModeTarget;
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
    /// How long after a work-mode change (the firmware calibrates) before sampling starts.
    #[serde(with = "humantime_serde")]
    pub mode_settle: Duration,
    /// How long each step is sampled.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often the miner is read while sampling.
    #[serde(with = "humantime_serde")]
    pub sample_every: Duration,
    /// Share of the expected hashrate a step must reach to pass.
    pub pass_ratio: f64,
    /// The most of the chips' work that may fail their check in a passing step, %.
    pub max_error_percent: f64,
    /// The board's most watts; `None`: 25 W per chip plus 5 W (ESP-Miner), no limit of its own
    /// for work modes (the maker's).
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
            mode_settle: Duration::from_secs(300),
            window: Duration::from_secs(600),
            sample_every: Duration::from_secs(15),
            pass_ratio: 0.94,
            // Healthy chips in the captures: ESP-Miner 0–0.3 %, Avalon `DH` 1.5–2.4 %.
            max_error_percent: 3.0,
            max_power: None,
            input_voltage_min: 4.8,
            input_voltage_max: 5.5,
        }
    }
}

/// What a sweep walks through.
#[derive(Debug, Clone, PartialEq)]
pub enum Walk {
    /// Frequency and core voltage (ESP-Miner).
    Clocks {
        frequency: RangeInclusive<u32>,
        core_voltage: RangeInclusive<u32>,
        /// GH/s the chips should give per MHz (small cores × chips / 1000).
        gh_per_mhz: f64,
    },
    /// The firmware's own work modes by name, in code order (Avalon).
    Modes(Vec<String>),
}

/// What the sweep may do and what it judges by, for one miner.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub walk: Walk,
    pub temp_limit: f64,
    pub vr_temp_limit: f64,
    pub max_power: f64,
}

/// One reading, as the sweep sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub clock: Option<ClockConfig>,
    /// The work mode it reports, by code.
    pub level: Option<u8>,
    pub hashrate: Option<f64>,
    /// What the firmware expects now, GH/s (an Avalon's rate for its mode).
    pub expected_hashrate: Option<f64>,
    pub error_percent: Option<f64>,
    pub power: Option<f64>,
    pub asic_temp: Option<f64>,
    pub vr_temp: Option<f64>,
    pub input_voltage: Option<f64>,
}

impl Sample {
    /// Whether the reading shows `target` on the miner.
    fn shows(&self, target: ModeTarget) -> bool {
        match target {
            ModeTarget::Clock(c) => self.clock == Some(c),
            ModeTarget::Level(l) => self.level == Some(l),
        }
    }
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

/// What one step had on the miner, as results and events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tested {
    Clock { frequency: u32, core_voltage: u32 },
    Mode { mode: String, level: u8 },
}

impl Tested {
    pub fn target(&self) -> ModeTarget {
        match self {
            Tested::Clock {
                frequency,
                core_voltage,
            } => ModeTarget::Clock(ClockConfig {
                frequency_mhz: *frequency,
                core_voltage_mv: *core_voltage,
            }),
            Tested::Mode { level, .. } => ModeTarget::Level(*level),
        }
    }

    /// "525 MHz / 1150 mV", or the mode's name.
    pub fn label(&self) -> String {
        match self {
            Tested::Clock {
                frequency,
                core_voltage,
            } => format!("{frequency} MHz / {core_voltage} mV"),
            Tested::Mode { mode, .. } => format!("work mode {mode}"),
        }
    }
}

/// One tested clock or work mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    #[serde(flatten)]
    pub setting: Tested,
    pub samples: u32,
    /// Trimmed mean, GH/s.
    pub hashrate: f64,
    /// What the step should give, GH/s, where known.
    pub expected_hashrate: Option<f64>,
    pub power: f64,
    pub j_per_th: f64,
    /// The hottest readings of the step, °C.
    pub asic_temp: f64,
    pub vr_temp: Option<f64>,
    /// Trimmed mean of the chips' error rate, %, where the firmware counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_percent: Option<f64>,
    pub outcome: Outcome,
    /// Why it failed or hit a limit.
    pub why: Option<String>,
}

impl StepResult {
    /// The clock it tested, if it tested one.
    pub fn clock(&self) -> Option<ClockConfig> {
        match self.setting.target() {
            ModeTarget::Clock(c) => Some(c),
            ModeTarget::Level(_) => None,
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
    /// Put this clock or work mode on the miner.
    Apply(ModeTarget),
    /// A step ended.
    Step(Box<StepResult>),
    /// The sweep is over (put the previous settings back, or a chosen result).
    Finished(Box<Summary>),
}

/// Where the sweep is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for a reading that shows the setting under test.
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

/// How long a setting may take to show in the readings before the sweep ends (the miner did not
/// take it).
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many steps (a guard; the walk ends long before on its own).
const MAX_STEPS: usize = 200;

/// A sweep under way.
#[derive(Debug, Clone)]
pub struct Sweep {
    config: SweepConfig,
    bounds: Bounds,
    current: ModeTarget,
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
    /// Starts a sweep at the lowest clock allowed, or the first work mode; returns it and its
    /// first act. `None` when there is nothing to walk (no work modes).
    pub fn start(config: SweepConfig, bounds: Bounds, now: Instant) -> Option<(Sweep, Act)> {
        let current = match &bounds.walk {
            Walk::Clocks {
                frequency,
                core_voltage,
                ..
            } => ModeTarget::Clock(ClockConfig {
                frequency_mhz: *frequency.start(),
                core_voltage_mv: *core_voltage.start(),
            }),
            Walk::Modes(names) if names.is_empty() => return None,
            Walk::Modes(_) => ModeTarget::Level(0),
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
        Some((sweep, Act::Apply(current)))
    }

    /// The setting under test.
    pub fn current(&self) -> ModeTarget {
        self.current
    }

    /// The setting under test as results show it.
    pub fn tested(&self) -> Tested {
        self.describe(self.current)
    }

    /// A setting of this walk as results show it (work modes by name).
    pub fn describe(&self, target: ModeTarget) -> Tested {
        match (target, &self.bounds.walk) {
            (ModeTarget::Clock(c), _) => Tested::Clock {
                frequency: c.frequency_mhz,
                core_voltage: c.core_voltage_mv,
            },
            (ModeTarget::Level(l), Walk::Modes(names)) => Tested::Mode {
                mode: names.get(l as usize).cloned().unwrap_or_default(),
                level: l,
            },
            (ModeTarget::Level(l), Walk::Clocks { .. }) => Tested::Mode {
                mode: l.to_string(),
                level: l,
            },
        }
    }

    pub fn results(&self) -> &[StepResult] {
        &self.results
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn settle(&self) -> Duration {
        match self.bounds.walk {
            Walk::Clocks { .. } => self.config.settle,
            Walk::Modes(_) => self.config.mode_settle,
        }
    }

    /// Steps the walk will still take at least (the one under test included), and the time
    /// they need.
    pub fn remaining(&self) -> (usize, Duration) {
        let steps = match (&self.bounds.walk, self.current) {
            (Walk::Clocks { frequency, .. }, ModeTarget::Clock(c)) => {
                let up = frequency.end().saturating_sub(c.frequency_mhz)
                    / self.config.frequency_step.max(1);
                up as usize + 1
            }
            (Walk::Modes(names), _) => names.len().saturating_sub(self.results.len()),
            (Walk::Clocks { .. }, ModeTarget::Level(_)) => 1,
        };
        let per = self.settle() + self.config.window;
        (steps, per * steps as u32)
    }

    /// Percent done: steps taken of steps taken and still to come (each step up is about
    /// one pass and, where the voltage runs short, one fail).
    pub fn percent(&self) -> u8 {
        if self.done() {
            return 100;
        }
        let done = self.results.len();
        let (left, _) = self.remaining();
        let ratio = match self.bounds.walk {
            // Every work mode is one step.
            Walk::Modes(_) => 1.0,
            Walk::Clocks { .. } => {
                let fails = self
                    .results
                    .iter()
                    .filter(|r| r.outcome == Outcome::Fail)
                    .count();
                let passes = done - fails;
                // Assume the rest fails as often as so far.
                if passes == 0 {
                    1.0
                } else {
                    done as f64 / passes as f64
                }
            }
        };
        let total = done as f64 + left as f64 * ratio;
        ((done as f64 / total.max(1.0)) * 100.0).min(99.0) as u8
    }

    /// One reading of the miner.
    pub fn on_sample(&mut self, s: &Sample, now: Instant) -> Vec<Act> {
        // A limit ends the sweep whatever the phase.
        if let Some(why) = self.limit(s) {
            return self.end_step(Outcome::Limit, Some(why), now);
        }
        match self.phase {
            Phase::Applying { since } => {
                if s.shows(self.current) {
                    self.phase = Phase::Settling {
                        until: now + self.settle(),
                    };
                } else if now.duration_since(since) > APPLY_TIMEOUT {
                    return self.finish(format!(
                        "the miner did not take {} within {}",
                        self.tested().label(),
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
                if !s.shows(self.current) {
                    return self.finish(
                        "the miner's settings changed under the sweep (something else set them)"
                            .into(),
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

    /// Stopped from outside (a button, a safety action, a refused setting, shutdown).
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

    /// What the step should give: the frequency's rate, or the mean of what the firmware
    /// expects in its mode.
    fn expected(&self) -> Option<f64> {
        match (&self.bounds.walk, self.current) {
            (Walk::Clocks { gh_per_mhz, .. }, ModeTarget::Clock(c)) => {
                Some(c.frequency_mhz as f64 * gh_per_mhz)
            }
            _ => {
                let e: Vec<f64> = self
                    .samples
                    .iter()
                    .filter_map(|s| s.expected_hashrate)
                    .collect();
                (!e.is_empty()).then(|| e.iter().sum::<f64>() / e.len() as f64)
            }
        }
    }

    fn result(&mut self, outcome: Outcome, why: Option<String>) -> StepResult {
        let trimmed = |f: fn(&Sample) -> Option<f64>, samples: &[Sample]| {
            let mut v: Vec<f64> = samples.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| trimmed_mean(&mut v))
        };
        let hashrate = trimmed(|s| s.hashrate, &self.samples).unwrap_or(0.0);
        let error_percent = trimmed(|s| s.error_percent, &self.samples);
        let powers: Vec<f64> = self.samples.iter().filter_map(|s| s.power).collect();
        let power = powers.iter().sum::<f64>() / powers.len().max(1) as f64;
        let max = |f: fn(&Sample) -> Option<f64>| {
            self.samples
                .iter()
                .filter_map(f)
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        };
        StepResult {
            setting: self.tested(),
            samples: self.samples.len() as u32,
            hashrate,
            expected_hashrate: self.expected(),
            power,
            j_per_th: if hashrate > 0.0 {
                power / (hashrate / 1000.0)
            } else {
                0.0
            },
            asic_temp: max(|s| s.asic_temp).unwrap_or_default(),
            vr_temp: max(|s| s.vr_temp),
            error_percent,
            outcome,
            why,
        }
    }

    fn evaluate(&mut self, now: Instant) -> Vec<Act> {
        let probe = self.result(Outcome::Pass, None);
        let mut why = Vec::new();
        match probe.expected_hashrate {
            Some(expected) if probe.hashrate < self.config.pass_ratio * expected => {
                why.push(format!(
                    "{:.0} GH/s is {:.1} % of the expected {:.0} GH/s (needs {:.0} %)",
                    probe.hashrate,
                    probe.hashrate / expected * 100.0,
                    expected,
                    self.config.pass_ratio * 100.0
                ))
            }
            None if probe.hashrate <= 0.0 => why.push("it did not hash".into()),
            _ => {}
        }
        if let Some(e) = probe
            .error_percent
            .filter(|e| *e > self.config.max_error_percent)
        {
            why.push(format!(
                "{e:.2} % of the chips' work failed (at most {} %)",
                self.config.max_error_percent
            ));
        }
        if why.is_empty() {
            self.end_step(Outcome::Pass, None, now)
        } else {
            self.end_step(Outcome::Fail, Some(why.join("; ")), now)
        }
    }

    /// The setting after a step, or why the walk ends.
    fn next(&self, outcome: &Outcome, why: Option<String>) -> Result<ModeTarget, String> {
        let label = self.tested().label();
        if *outcome == Outcome::Limit {
            return Err(format!(
                "a limit was reached at {label}: {}",
                why.unwrap_or_default()
            ));
        }
        match (&self.bounds.walk, self.current) {
            (
                Walk::Clocks {
                    frequency,
                    core_voltage,
                    ..
                },
                ModeTarget::Clock(c),
            ) => {
                let (f, v) = (c.frequency_mhz, c.core_voltage_mv);
                let (fs, vs) = (self.config.frequency_step, self.config.voltage_step);
                let clock = |f, v| {
                    ModeTarget::Clock(ClockConfig {
                        frequency_mhz: f,
                        core_voltage_mv: v,
                    })
                };
                match outcome {
                    Outcome::Pass if f + fs <= *frequency.end() => Ok(clock(f + fs, v)),
                    Outcome::Pass => Err(format!(
                        "the highest frequency allowed ({f} MHz) passes at {v} mV"
                    )),
                    _ if v + vs <= *core_voltage.end() => {
                        Ok(clock(f.saturating_sub(fs).max(*frequency.start()), v + vs))
                    }
                    _ => Err(format!(
                        "{f} MHz needs more than the highest core voltage allowed ({v} mV)"
                    )),
                }
            }
            (Walk::Modes(names), ModeTarget::Level(l)) if (l as usize) + 1 < names.len() => {
                Ok(ModeTarget::Level(l + 1))
            }
            (Walk::Modes(names), _) => Err(format!("all {} work modes compared", names.len())),
            (Walk::Clocks { .. }, ModeTarget::Level(_)) => Err("nothing more to test".into()),
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
        match self.next(&outcome, why) {
            Ok(_) if self.results.len() >= MAX_STEPS => {
                acts.extend(self.finish(format!("{MAX_STEPS} steps taken")))
            }
            Ok(next) => {
                self.current = next;
                self.phase = Phase::Applying { since: now };
                self.samples.clear();
                self.last_sample = None;
                acts.push(Act::Apply(next));
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
            walk: Walk::Clocks {
                frequency: 400..=625,
                core_voltage: 1000..=1250,
                gh_per_mhz: 2.04,
            },
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
        let (mut sweep, first) = Sweep::start(quick(), bounds(), now).unwrap();
        let clock_of = |act| match act {
            Act::Apply(ModeTarget::Clock(c)) => c,
            other => panic!("{other:?}"),
        };
        let mut clock = clock_of(first);
        loop {
            now += Duration::from_secs(5);
            let (f, v) = (clock.frequency_mhz, clock.core_voltage_mv);
            let (w, h) = chip.steady(1, f, v);
            let s = Sample {
                clock: Some(clock),
                hashrate: Some(h),
                error_percent: Some(chip.error_rate(f as f64, v as f64) * 100.0),
                power: Some(w),
                asic_temp: Some(temp(w)),
                vr_temp: Some(50.0),
                input_voltage: Some(5.1),
                ..Sample::default()
            };
            for act in sweep.on_sample(&s, now) {
                match act {
                    a @ Act::Apply(_) => clock = clock_of(a),
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
        let (bc, fc) = (best.clock().unwrap(), fastest.clock().unwrap());
        // The truth, over every clock the sweep could have tried (25 MHz × 20 mV grid) that
        // passes 94 %.
        let mut truth_eff: Option<(f64, u32, u32)> = None;
        let mut truth_hash: Option<(f64, u32, u32)> = None;
        for f in (400..=625).step_by(25) {
            for v in (1000..=1250).step_by(20) {
                let (w, h) = chip.steady(1, f, v);
                let errors = chip.error_rate(f as f64, v as f64) * 100.0;
                if h < 0.94 * f as f64 * 2.04 || errors > 3.0 {
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
            bc.frequency_mhz.abs_diff(tf) <= 25 && bc.core_voltage_mv.abs_diff(tv) <= 20,
            "best efficiency {}/{} ({:.2} J/TH), truth {tf}/{tv} ({te:.2}): {:#?}",
            bc.frequency_mhz,
            bc.core_voltage_mv,
            best.j_per_th,
            summary.results
        );
        let (_, hf, hv) = truth_hash.unwrap();
        assert!(
            fc.frequency_mhz.abs_diff(hf) <= 25 && fc.core_voltage_mv.abs_diff(hv) <= 20,
            "best hashrate {}/{}, truth {hf}/{hv}",
            fc.frequency_mhz,
            fc.core_voltage_mv
        );
        assert!(
            summary.stopped.contains("highest frequency"),
            "{}",
            summary.stopped
        );
        // Every step stayed within the bounds, and each fail was followed by more voltage.
        for w in summary.results.windows(2) {
            if w[0].outcome == Outcome::Fail {
                let (a, b) = (w[0].clock().unwrap(), w[1].clock().unwrap());
                assert_eq!(b.core_voltage_mv, a.core_voltage_mv + 20);
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
        assert!(
            b.clock().unwrap().core_voltage_mv > a.clock().unwrap().core_voltage_mv,
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn simulated_chips_of_one_model_have_optima_of_their_own() {
        use crate::sim::axeos::{DeviceSpec, Firmware};
        let optima: std::collections::BTreeSet<(u32, u32)> = (1..=6)
            .map(|n| {
                let chip = DeviceSpec::gamma(n, Firmware::V2_12)
                    .with_silicon(n as u64)
                    .chip;
                let best = run(chip, |_| 55.0)
                    .best_efficiency
                    .unwrap()
                    .clock()
                    .unwrap();
                (best.frequency_mhz, best.core_voltage_mv)
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
        let (mut sweep, _) = Sweep::start(quick(), bounds(), now).unwrap();
        let acts = sweep.on_offline(now);
        assert!(matches!(acts.last(), Some(Act::Finished(s)) if s.stopped.contains("offline")));
        assert!(sweep.done());
        assert!(sweep.stop("again".into()).is_empty());
    }

    /// A chip whose hashrate holds up but whose errors do not: the error rate fails the step.
    #[test]
    fn a_step_with_too_many_errors_fails_even_at_full_hashrate() {
        let mut now = Instant::now();
        let (mut sweep, _) = Sweep::start(quick(), bounds(), now).unwrap();
        let clock = ClockConfig {
            frequency_mhz: 400,
            core_voltage_mv: 1000,
        };
        let mut step = None;
        while step.is_none() {
            now += Duration::from_secs(5);
            let s = Sample {
                clock: Some(clock),
                hashrate: Some(400.0 * 2.04),
                error_percent: Some(4.5),
                power: Some(12.0),
                ..Sample::default()
            };
            step = sweep.on_sample(&s, now).into_iter().find_map(|a| match a {
                Act::Step(r) => Some(r),
                _ => None,
            });
        }
        let step = step.unwrap();
        assert_eq!(step.outcome, Outcome::Fail);
        assert_eq!(step.error_percent, Some(4.5));
        let why = step.why.unwrap();
        assert!(
            why.contains("4.50 % of the chips' work failed (at most 3 %)"),
            "{why}"
        );
        // A fail raises the voltage.
        assert_eq!(
            sweep.current(),
            ModeTarget::Clock(ClockConfig {
                frequency_mhz: 400,
                core_voltage_mv: 1020
            })
        );
    }

    /// (TH/s, W, error %) per work mode, as an Avalon reports them.
    fn run_modes(modes: &[(f64, f64, f64)], hot_from: Option<u8>) -> Summary {
        let names: Vec<String> = ["low", "medium", "high"][..modes.len()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bounds = Bounds {
            walk: Walk::Modes(names),
            temp_limit: 90.0,
            vr_temp_limit: 90.0,
            max_power: f64::INFINITY,
        };
        let mut now = Instant::now();
        let config = SweepConfig {
            mode_settle: Duration::from_secs(60),
            ..quick()
        };
        let (mut sweep, first) = Sweep::start(config, bounds, now).unwrap();
        let level_of = |act| match act {
            Act::Apply(ModeTarget::Level(l)) => l,
            other => panic!("{other:?}"),
        };
        let mut level = level_of(first);
        let mut since = now;
        loop {
            now += Duration::from_secs(5);
            let (ths, w, e) = modes[level as usize];
            // Calibrating for the first 30 s after a change: 40 % of the rate.
            let ramp = if now.duration_since(since) < Duration::from_secs(30) {
                0.4
            } else {
                1.0
            };
            let s = Sample {
                level: Some(level),
                hashrate: Some(ths * 1000.0 * ramp),
                expected_hashrate: Some(ths * 1000.0),
                error_percent: Some(e),
                power: Some(w),
                asic_temp: Some(if hot_from.is_some_and(|h| level >= h) {
                    95.0
                } else {
                    70.0
                }),
                ..Sample::default()
            };
            for act in sweep.on_sample(&s, now) {
                match act {
                    a @ Act::Apply(_) => {
                        level = level_of(a);
                        since = now;
                    }
                    Act::Step(_) => {}
                    Act::Finished(summary) => return *summary,
                }
            }
        }
    }

    #[test]
    fn work_modes_are_compared_one_by_one_and_the_best_of_each_kind_found() {
        // The Nano 3's modes: 25, 27.3 and 35 J/TH.
        let summary = run_modes(
            &[(2.0, 50.0, 1.5), (3.3, 90.0, 1.5), (4.0, 140.0, 1.5)],
            None,
        );
        assert_eq!(summary.results.len(), 3);
        assert!(
            summary.results.iter().all(|r| r.outcome == Outcome::Pass),
            "{summary:#?}"
        );
        let mode = |r: &Option<StepResult>| match &r.as_ref().unwrap().setting {
            Tested::Mode { mode, .. } => mode.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(mode(&summary.best_efficiency), "low");
        assert_eq!(mode(&summary.best_hashrate), "high");
        assert_eq!(summary.stopped, "all 3 work modes compared");
        // The calibration went by in the settle time: the full rate was measured.
        let low = &summary.results[0];
        assert!((low.hashrate - 2000.0).abs() < 1.0, "{low:?}");
        assert!((low.j_per_th - 25.0).abs() < 0.1);
    }

    #[test]
    fn a_work_mode_with_too_many_errors_is_not_chosen() {
        let summary = run_modes(
            &[(2.0, 50.0, 1.5), (3.3, 70.0, 6.0), (4.0, 140.0, 1.5)],
            None,
        );
        let medium = &summary.results[1];
        assert_eq!(medium.outcome, Outcome::Fail);
        // It would have been the most efficient (21 J/TH).
        let best = summary.best_efficiency.unwrap();
        assert_eq!(
            best.setting,
            Tested::Mode {
                mode: "low".into(),
                level: 0
            }
        );
        // A fail does not end a comparison.
        assert_eq!(summary.results[2].outcome, Outcome::Pass);
    }

    #[test]
    fn a_hot_work_mode_ends_the_comparison_at_a_limit() {
        let summary = run_modes(
            &[(2.0, 50.0, 1.5), (3.3, 90.0, 1.5), (4.0, 140.0, 1.5)],
            Some(1),
        );
        assert_eq!(summary.results.len(), 2);
        assert_eq!(summary.results[1].outcome, Outcome::Limit);
        assert!(
            summary.stopped.contains("work mode medium"),
            "{}",
            summary.stopped
        );
        assert_eq!(
            summary.best_hashrate.unwrap().setting,
            Tested::Mode {
                mode: "low".into(),
                level: 0
            }
        );
    }

    #[test]
    fn results_keep_their_shape_in_json() {
        let clock = Tested::Clock {
            frequency: 525,
            core_voltage: 1150,
        };
        let mode = Tested::Mode {
            mode: "high".into(),
            level: 2,
        };
        for t in [clock, mode] {
            let r = StepResult {
                setting: t.clone(),
                samples: 3,
                hashrate: 1.0,
                expected_hashrate: None,
                power: 1.0,
                j_per_th: 1.0,
                asic_temp: 50.0,
                vr_temp: None,
                error_percent: None,
                outcome: Outcome::Pass,
                why: None,
            };
            let v = serde_json::to_value(&r).unwrap();
            match &t {
                Tested::Clock { .. } => assert_eq!(v["frequency"], 525),
                Tested::Mode { .. } => assert_eq!(v["mode"], "high"),
            }
            let back: StepResult = serde_json::from_value(v).unwrap();
            assert_eq!(back, r);
        }
    }
}
