//! `miner2mqtt bench --kind history`: the history's disk and query costs, in fast time.
//!
//! Writes `--miners` miners' samples every `--interval` over a simulated `--duration` (30d
//! for the figures in docs/BENCHMARKS.md) into a fresh store, running the compactor every
//! simulated minute as the daemon does, each miner changing clock config every six hours
//! among four. Prints the bytes per raw sample, the disk after a simulated week and at the
//! end (and both scaled to 10,000 miners: the store is per-miner ranges, so it grows in
//! proportion), the compactor's cost per miner, and the medians of a 24 h window query, a
//! 30-day per-config report and an all-time report for one miner.

use crate::miner::ClockConfig;
use crate::report::{self, Query};
use crate::store::history::Retention;
use crate::store::{Sample, Store};
use std::path::Path;
use std::time::{Duration, Instant};

const DAY_MS: u64 = 86_400_000;
const CONFIGS: [(u32, u32, f32, f32); 4] = [
    (500, 1100, 1020.0, 15.2),
    (525, 1150, 1070.0, 17.0),
    (575, 1175, 1170.0, 19.4),
    (625, 1200, 1270.0, 21.9),
];

/// The store's two databases (the main one and the raw samples').
fn store_bytes(path: &Path) -> u64 {
    dir_bytes(path) + dir_bytes(&Store::raw_path(path))
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A plausible sample of miner `i` at `t`: its config of the moment, with some noise.
fn sample(i: u32, t: u64, t0: u64) -> Sample {
    let period = (t - t0) / (6 * 3_600_000) + u64::from(i);
    let (f, mv, h, p) = CONFIGS[(period % 4) as usize];
    let noise = ((t / 30_000)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(u64::from(i))
        % 1000) as f32
        / 1000.0
        - 0.5;
    let clock = ClockConfig {
        frequency_mhz: f,
        core_voltage_mv: mv,
    };
    let mut s = Sample::basic(
        t,
        Some(clock),
        h * (1.0 + 0.04 * noise),
        p,
        55.0 + 4.0 * noise,
    );
    s.fan_speed = Some(60.0);
    s.fan_rpm = Some(4200.0 + 100.0 * noise);
    s.vr_temp = Some(50.0 + 3.0 * noise);
    s.input_voltage = Some(5.1);
    s.current = Some(p / 5.1);
    s.core_voltage_actual = Some(mv as f32 - 8.0);
    s.shares_accepted = Some((t - t0) / 60_000);
    s.shares_rejected = Some((t - t0) / 6_000_000);
    s
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs the history bench; prints its figures.
pub fn run(miners: u32, interval: Duration, span: Duration) -> anyhow::Result<()> {
    let interval_ms = interval.as_millis().max(1000) as u64;
    let span_ms = span.as_millis() as u64;
    anyhow::ensure!(
        span_ms >= DAY_MS,
        "--duration: at least 1d of simulated history"
    );
    let work =
        std::env::temp_dir().join(format!("miner2mqtt-history-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let t0: u64 = 1_767_225_600_000; // 2026-01-01
    let per_day = DAY_MS / interval_ms;
    eprintln!(
        "bench: {miners} miners, a sample every {}, {} simulated",
        humantime::format_duration(interval),
        humantime::format_duration(span)
    );

    // Raw samples alone, one day, to read the bytes a sample takes.
    let raw_only = Store::open(&work.join("raw-only"), 64 << 20)?;
    let numbers: Vec<u32> = (0..miners)
        .map(|i| raw_only.miner_number(&format!("bench-{i}")))
        .collect::<Result<_, _>>()?;
    let mut t = t0;
    while t < t0 + DAY_MS {
        for (i, n) in numbers.iter().enumerate() {
            raw_only.record(*n, &sample(i as u32, t, t0))?;
        }
        t += interval_ms;
    }
    raw_only.flush()?;
    let raw_samples = per_day * u64::from(miners);
    let raw_bytes = store_bytes(&work.join("raw-only"));
    drop(raw_only);
    println!(
        "raw samples only: {raw_samples} samples, {:.1} MiB on disk, {:.1} bytes per sample",
        mib(raw_bytes),
        raw_bytes as f64 / raw_samples as f64
    );

    // The history as the daemon keeps it, with the compactor every simulated minute.
    let path = work.join("history");
    let store = Store::open(&path, 64 << 20)?;
    let numbers: Vec<u32> = (0..miners)
        .map(|i| store.miner_number(&format!("bench-{i}")))
        .collect::<Result<_, _>>()?;
    let retention = Retention::default();
    let wall = Instant::now();
    let mut compact_time = Duration::ZERO;
    let mut compact_calls = 0u64;
    let mut written = 0u64;
    let mut next_compact = t0 + 60_000;
    let mut week_reported = false;
    let mut by_day = Vec::new();
    let mut t = t0;
    let end = t0 + span_ms;
    while t < end {
        for (i, n) in numbers.iter().enumerate() {
            store.record(*n, &sample(i as u32, t, t0))?;
        }
        written += u64::from(miners);
        t += interval_ms;
        if t >= next_compact {
            next_compact += 60_000;
            for n in &numbers {
                let started = Instant::now();
                while store.compact(*n, t, &retention, 2000)?.more {}
                compact_time += started.elapsed();
                compact_calls += 1;
            }
        }
        if (t - t0) % DAY_MS < interval_ms {
            store.flush()?;
            by_day.push(format!(
                "{:.0}+{:.0}",
                mib(dir_bytes(&Store::raw_path(&path))),
                mib(dir_bytes(&path))
            ));
        }
        if !week_reported && t >= t0 + 7 * DAY_MS {
            week_reported = true;
            store.flush()?;
            let bytes = store_bytes(&path);
            println!(
                "after a simulated week: {:.1} MiB on disk ({:.2} MiB per miner; 10,000 miners: {:.1} GiB)",
                mib(bytes),
                mib(bytes) / f64::from(miners),
                mib(bytes) / f64::from(miners) * 10_000.0 / 1024.0
            );
        }
    }
    store.flush()?;
    let bytes = store_bytes(&path);
    println!(
        "disk at the end of each simulated day, MiB (raw samples + the rest): {}",
        by_day.join(" ")
    );
    let secs = wall.elapsed().as_secs_f64();
    println!(
        "after {}: {:.1} MiB on disk ({:.2} MiB per miner; 10,000 miners: {:.1} GiB); {written} samples written in {secs:.1} s ({:.0} per second, compaction included)",
        humantime::format_duration(span),
        mib(bytes),
        mib(bytes) / f64::from(miners),
        mib(bytes) / f64::from(miners) * 10_000.0 / 1024.0,
        written as f64 / secs
    );
    let per_call = compact_time.as_secs_f64() / compact_calls.max(1) as f64;
    println!(
        "compaction: {:.0} µs per miner per simulated minute (mean); at 10,000 miners {:.2} s of one core per minute",
        per_call * 1e6,
        per_call * 10_000.0
    );

    // Queries on one miner at a time, several miners, medians.
    let now = t;
    let pick: Vec<u32> = numbers
        .iter()
        .step_by((numbers.len() / 20).max(1))
        .copied()
        .collect();
    let mut window_ms = Vec::new();
    let mut window_len = 0;
    for _ in 0..3 {
        for n in &pick {
            let started = Instant::now();
            let w = store.window(*n, now - DAY_MS, now)?;
            window_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            window_len = w.len();
        }
    }
    println!(
        "24 h window of one miner ({window_len} samples): median {:.2} ms over {} queries",
        median(window_ms.clone()),
        window_ms.len()
    );
    for (label, since) in [
        (
            "30-day per-config report",
            Some(now.saturating_sub(30 * DAY_MS)),
        ),
        ("all-time per-config report (aggregates)", None),
    ] {
        let mut times = Vec::new();
        let mut configs = 0;
        for n in &pick {
            let started = Instant::now();
            let r = report::build(
                &store,
                "bench",
                *n,
                &Query {
                    since_ms: since,
                    now_ms: now,
                    min_samples: 20,
                },
            )?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            configs = r.configs.len();
        }
        println!(
            "{label} of one miner ({configs} configs): median {:.2} ms over {} miners",
            median(times),
            pick.len()
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
