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

/// A simulated Avalon Nano 3 beside the rig, calibrating for `calibration` after a mode change,
/// and the daemon with it as "nano" and short comparison steps, once it has read it.
async fn nano(
    rig: &Rig,
    calibration: Duration,
    mode_settle: Duration,
) -> (miner2mqtt::sim::cgminer::SimAvalon, Daemon) {
    use miner2mqtt::sim::cgminer::{self, AvalonSpec, Model};
    let mut spec = AvalonSpec::new(7, Model::Nano3);
    spec.calibration = calibration;
    let avalon = cgminer::start(spec, "127.0.0.1:0".parse().unwrap(), rig.cancel.clone())
        .await
        .unwrap();
    let addr = avalon.addr.to_string();
    let daemon = Daemon::start(rig.config(&[], move |r| {
        r.benchmark.mode_settle = mode_settle;
        r.benchmark.window = Duration::from_secs(2);
        r.benchmark.sample_every = Duration::from_millis(400);
        r.miners.push(miner2mqtt::config::RawMiner::new(
            "nano",
            miner2mqtt::config::MinerKind::Avalon,
            &addr,
        ));
    }));
    // Read, in the mode the simulator starts in.
    rig.ha
        .wait_for("miner2mqtt/nano/state", WAIT, |m| {
            m.json()["mode"] == "medium"
        })
        .await;
    (avalon, daemon)
}

async fn avalon_in_mode(avalon: &miner2mqtt::sim::cgminer::SimAvalon, mode: u8) {
    let deadline = Instant::now() + WAIT;
    while avalon.snapshot().mode != mode {
        assert!(
            Instant::now() < deadline,
            "the Avalon is in mode {}, not {mode}",
            avalon.snapshot().mode
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Avalon's work modes compared the way clocks are: each in turn, settled past its
/// calibration, sampled, judged against the rate the firmware expects in that mode; the most
/// efficient becomes its eco, the fastest its turbo, and it ends in the mode it was in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avalons_work_modes_are_compared_and_the_best_become_its_eco_and_turbo() {
    let rig = Rig::start(vec![]).await;
    let (avalon, daemon) = nano(&rig, Duration::from_secs(1), Duration::from_millis(1500)).await;
    // A Nano 3 is known by its hash board's serial (it reports no MAC): find its discovery by
    // the device's name.
    let deadline = Instant::now() + WAIT;
    let d = loop {
        let found = rig.ha.messages().into_iter().find_map(|m| {
            let v = (m.topic.starts_with("homeassistant/device/miner2mqtt/")
                && !m.payload.is_empty())
            .then(|| m.json())?;
            (v["dev"]["name"] == "nano").then_some(v)
        });
        if let Some(d) = found {
            break d;
        }
        assert!(Instant::now() < deadline, "no discovery for the Nano");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d["cmps"]["benchmark_start"]["p"], "button");
    assert_eq!(d["cmps"]["apply_efficiency"]["p"], "button");

    let t0 = Instant::now();
    rig.ha
        .publish("miner2mqtt/nano/set/benchmark", "START")
        .await;
    let started = event_after(&rig, t0, "benchmark_started", WAIT).await;
    assert_eq!(started["from"]["mode"], "low", "{started}");
    assert_eq!(started["previous"]["mode"], "medium", "{started}");
    let running = rig
        .ha
        .wait_after(t0, "miner2mqtt/nano/benchmark", WAIT, |m| {
            m.json()["status"] == "running"
        })
        .await
        .json();
    assert_eq!(running["mode"], "low", "{running}");
    let done = event_after(&rig, t0, "benchmark_finished", Duration::from_secs(60)).await;
    assert_eq!(done["reason"], "all 3 work modes compared", "{done}");
    assert_eq!(done["steps"], 3);
    // The simulated Nano 3: 2.0 TH/s at 50 W (25 J/TH), 3.3 at 90 W, 4.0 at 140 W (35 J/TH).
    assert_eq!(done["best_efficiency"]["mode"], "low", "{done}");
    assert_eq!(done["best_hashrate"]["mode"], "high", "{done}");
    let j = done["best_efficiency"]["j_per_th"].as_f64().unwrap();
    assert!((j - 25.0).abs() < 1.5, "{done}");
    assert_eq!(done["restored"]["mode"], "medium");
    // Every step measured the full rate, not the calibration's 40 %, and passed on errors too.
    let steps: Vec<Value> = rig
        .ha
        .messages()
        .into_iter()
        .filter(|m| m.at >= t0 && m.topic == "miner2mqtt/bridge/event")
        .map(|m| m.json())
        .filter(|e| e["type"] == "benchmark_step")
        .collect();
    assert_eq!(steps.len(), 3);
    for s in &steps {
        assert_eq!(s["outcome"], "pass", "{s}");
        assert!(s["error_percent"].as_f64().is_some(), "{s}");
        let (h, e) = (
            s["hashrate"].as_f64().unwrap(),
            s["expected_hashrate"].as_f64().unwrap(),
        );
        assert!(h >= 0.94 * e, "{s}");
    }
    avalon_in_mode(&avalon, 1).await;

    // Its eco and turbo are the modes found; the profile buttons put them on.
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the restore's calibration
    rig.ha
        .publish("miner2mqtt/nano/set/profile", "efficiency")
        .await;
    avalon_in_mode(&avalon, 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rig.ha.publish("miner2mqtt/nano/set/mode", "turbo").await;
    avalon_in_mode(&avalon, 2).await;
    daemon.stop().await;
}

/// Stopped while the Avalon calibrates, the restore is refused for now ("caling"): it is tried
/// again until the Avalon is back in the mode it was in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comparison_stopped_during_calibration_still_ends_in_the_previous_mode() {
    let rig = Rig::start(vec![]).await;
    let (avalon, daemon) = nano(&rig, Duration::from_secs(6), Duration::from_secs(8)).await;
    let t0 = Instant::now();
    rig.ha
        .publish("miner2mqtt/nano/set/benchmark", "START")
        .await;
    avalon_in_mode(&avalon, 0).await;
    rig.ha
        .publish("miner2mqtt/nano/set/benchmark", "STOP")
        .await;
    let done = event_after(&rig, t0, "benchmark_finished", WAIT).await;
    assert!(
        done["reason"].as_str().unwrap().contains("stopped"),
        "{done}"
    );
    let refused = event_after(&rig, t0, "command_failed", WAIT).await;
    assert_eq!(refused["origin"], "benchmark");
    assert!(
        refused["reason"].as_str().unwrap().contains("calibrating"),
        "{refused}"
    );
    assert_eq!(
        avalon.snapshot().mode,
        0,
        "still calibrating in the test mode"
    );
    // The retry lands once the calibration is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    while avalon.snapshot().mode != 1 {
        assert!(
            Instant::now() < deadline,
            "the previous mode never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.ha
        .wait_for("miner2mqtt/nano/state", WAIT, |m| {
            m.json()["mode"] == "medium"
        })
        .await;
    daemon.stop().await;
}
