//! Benchmark sweeps end to end: a simulated Bitaxe Gamma over real HTTP, a real Mosquitto, the
//! daemon — Start benchmark, its progress, the user refused while it runs, the result applied,
//! and the miner back on its own settings whatever happens: finished, a shutdown, a kill.

mod common;

use common::*;
use miner2mqtt::config::{Bounds, RawConfig};
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Short steps over a narrow range (500–600 MHz, 1040–1200 mV), so a sweep takes seconds.
fn quick(raw: &mut RawConfig) {
    raw.benchmark.settle = Duration::from_millis(500);
    raw.benchmark.window = Duration::from_secs(2);
    raw.benchmark.sample_every = Duration::from_millis(400);
    raw.miners[0].limits.frequency = Some(Bounds { min: 500, max: 600 });
    raw.miners[0].limits.core_voltage = Some(Bounds {
        min: 1040,
        max: 1200,
    });
}

/// The first `kind` event on `bridge/event` after `since`.
async fn event_after(rig: &Rig, since: Instant, kind: &'static str, timeout: Duration) -> Value {
    rig.ha
        .wait_after(since, "miner2mqtt/bridge/event", timeout, move |m| {
            m.json()["type"] == kind
        })
        .await
        .json()
}

/// Presses Start benchmark until the daemon (whose first poll may still be on its way) has
/// started a sweep and finished its first step.
async fn start_until_first_step(rig: &Rig, since: Instant) {
    loop {
        rig.ha
            .publish("miner2mqtt/gamma/set/benchmark", "START")
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if rig.ha.count_after(since, "miner2mqtt/bridge/event", |m| {
            m.json()["type"] == "benchmark_started"
        }) > 0
        {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the benchmark did not start"
        );
    }
    event_after(rig, since, "benchmark_step", WAIT).await;
}

async fn at_clock(rig: &Rig, frequency: u32, core_voltage: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = rig.devs[0].snapshot();
        if (s.frequency, s.core_voltage) == (frequency, core_voltage) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the device is at {}/{}, not {frequency}/{core_voltage}",
            s.frequency,
            s.core_voltage
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_shows_its_progress_finds_the_chips_best_and_puts_its_settings_back() {
    let rig = Rig::start(vec![DeviceSpec::gamma(1, Firmware::V2_12).with_silicon(1)]).await;
    let daemon = Daemon::start(rig.config(&["gamma"], quick));
    let state = "miner2mqtt/gamma/state";
    rig.ha
        .wait_for(state, WAIT, |m| m.json()["frequency"] == 525.0)
        .await;
    let cmps = rig.discovery(0).await["cmps"].clone();
    assert_eq!(cmps["benchmark_start"]["p"], "button");
    assert_eq!(cmps["benchmark_start"]["payload_press"], "START");
    assert_eq!(
        cmps["apply_efficiency"]["command_topic"],
        "miner2mqtt/gamma/set/profile"
    );
    assert_eq!(cmps["benchmark_progress"]["unit_of_measurement"], "%");
    assert_eq!(
        cmps["benchmark_progress"]["state_topic"],
        "miner2mqtt/gamma/benchmark"
    );

    // Nothing to apply before a benchmark has run.
    let t0 = Instant::now();
    rig.ha
        .publish("miner2mqtt/gamma/set/profile", "efficiency")
        .await;
    let refused = event_after(&rig, t0, "command_rejected", WAIT).await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("no benchmark results"),
        "{refused}"
    );

    let t1 = Instant::now();
    rig.ha
        .publish("miner2mqtt/gamma/set/benchmark", "START")
        .await;
    event_after(&rig, t1, "benchmark_started", WAIT).await;
    // The sweep owns the miner: a slider moved by hand is refused, and says why.
    let step = event_after(&rig, t1, "benchmark_step", WAIT).await;
    assert_eq!(
        (step["frequency"].as_u64(), step["core_voltage"].as_u64()),
        (Some(500), Some(1040))
    );
    rig.ha
        .publish("miner2mqtt/gamma/set/frequency", "550")
        .await;
    let refused = event_after(&rig, t1, "command_rejected", WAIT).await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("benchmark is running"),
        "{refused}"
    );

    let done = event_after(&rig, t1, "benchmark_finished", Duration::from_secs(90)).await;
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("highest frequency"),
        "{done}"
    );
    let best = &done["best_efficiency"];
    let fastest = &done["best_hashrate"];
    assert!(best["j_per_th"].as_f64().unwrap() > 10.0, "{done}");
    assert!(fastest["hashrate"].as_f64().unwrap() >= best["hashrate"].as_f64().unwrap());
    // The finished state may reach the broker after the finished event: wait for it first.
    let last = rig
        .ha
        .wait_for("miner2mqtt/gamma/benchmark", WAIT, |m| {
            m.json()["status"] == "finished"
        })
        .await;
    // The progress went up step by step, retained, to 100 with the results as attributes.
    let progress: Vec<u64> = rig
        .ha
        .messages()
        .iter()
        .filter(|m| m.at >= t1 && m.topic == "miner2mqtt/gamma/benchmark")
        .filter_map(|m| m.json()["progress"].as_u64())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&100));
    assert!(last.retain || last.json()["best_efficiency"].is_object());
    // Back on its own settings; every step tried was within the miner's limits.
    at_clock(&rig, 525, 1150).await;
    for p in &rig.devs[0].snapshot().patches {
        if let (Some(f), Some(v)) = (p["frequency"].as_u64(), p["coreVoltage"].as_u64()) {
            assert!(
                (500..=600).contains(&f) || (f, v) == (525, 1150),
                "{p} outside the sweep's range"
            );
            assert!((1040..=1200).contains(&v), "{p}");
        }
    }
    // The user takes the miner back; Apply best efficiency puts that clock on.
    let f = best["frequency"].as_u64().unwrap() as u32;
    let v = best["core_voltage"].as_u64().unwrap() as u32;
    rig.ha
        .publish("miner2mqtt/gamma/set/profile", "efficiency")
        .await;
    at_clock(&rig, f, v).await;
    // And the chip's own results are its eco and turbo modes now.
    rig.ha
        .wait_for(state, WAIT, |m| m.json()["mode"] == "eco")
        .await;
    let (tf, tv) = (
        fastest["frequency"].as_u64().unwrap() as u32,
        fastest["core_voltage"].as_u64().unwrap() as u32,
    );
    rig.ha.publish("miner2mqtt/gamma/set/mode", "turbo").await;
    at_clock(&rig, tf, tv).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_or_a_kill_mid_sweep_ends_on_the_settings_from_before_it() {
    let rig = Rig::start(vec![DeviceSpec::gamma(2, Firmware::V2_12)]).await;
    let start_sweep = || async {
        let daemon = Daemon::start(rig.config(&["gamma"], quick));
        rig.ha
            .wait_for("miner2mqtt/gamma/availability", WAIT, |m| {
                m.text() == "online"
            })
            .await;
        start_until_first_step(&rig, Instant::now()).await;
        let s = rig.devs[0].snapshot();
        assert_ne!(
            (s.frequency, s.core_voltage),
            (525, 1150),
            "on a test clock"
        );
        daemon
    };

    // Stopped: it puts the settings back before it goes.
    let daemon = start_sweep().await;
    daemon.stop().await;
    let s = rig.devs[0].snapshot();
    assert_eq!(
        (s.frequency, s.core_voltage),
        (525, 1150),
        "restored on shutdown"
    );

    // Killed (SIGKILL, the binary in a process of its own): nothing runs at the end, but the
    // next start puts the settings back.
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_config_for(
        rig.broker.port,
        &[("gamma", &rig.devs[0])],
        &rig.history_path(),
        quick,
    );
    let file = config_file(dir.path(), &raw);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_miner2mqtt"))
        .args(["run", "--config"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    rig.ha
        .wait_after(t, "miner2mqtt/gamma/availability", WAIT, |m| {
            m.text() == "online"
        })
        .await;
    start_until_first_step(&rig, t).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let s = rig.devs[0].snapshot();
    assert_ne!(
        (s.frequency, s.core_voltage),
        (525, 1150),
        "left on a test clock"
    );
    let t = Instant::now();
    let daemon = Daemon::start(rig.config(&["gamma"], quick));
    let back: Value = event_after(&rig, t, "benchmark_rolled_back", WAIT).await;
    assert_eq!(back["restored"]["frequency"], 525);
    at_clock(&rig, 525, 1150).await;
    rig.ha
        .wait_after(t, "miner2mqtt/gamma/benchmark", WAIT, |m| {
            m.json()["status"] == "interrupted"
        })
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_command_runs_a_sweep_and_prints_the_result_table() {
    let rig = Rig::start(vec![DeviceSpec::gamma(3, Firmware::V2_12).with_silicon(3)]).await;
    let daemon = Daemon::start(rig.config(&["gamma"], quick));
    rig.ha
        .wait_for("miner2mqtt/gamma/availability", WAIT, |m| {
            m.text() == "online"
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_config_for(
        rig.broker.port,
        &[("gamma", &rig.devs[0])],
        &dir.path().join("unused"),
        quick,
    );
    let file = config_file(dir.path(), &raw);
    let bin = env!("CARGO_BIN_EXE_miner2mqtt");
    // An unknown miner is refused before anything is sent.
    let wrong = std::process::Command::new(bin)
        .args(["benchmark", "--miner", "nope", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("no miner is named \"nope\"") && err.contains("gamma"),
        "{err}"
    );

    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["benchmark", "--miner", "gamma", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("J/TH") && stdout.contains("best efficiency: "),
        "{stdout}"
    );
    assert!(stdout.contains("pass"), "{stdout}");
    assert!(stdout.contains("restored: 525 MHz / 1150 mV"), "{stdout}");
    at_clock(&rig, 525, 1150).await;
    daemon.stop().await;
}
