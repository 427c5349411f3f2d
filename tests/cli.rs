//! The binary as a user runs it: signals, exit codes, config errors, restart over MQTT, and the
//! demo with its own broker.

mod common;

use common::*;
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_miner2mqtt");

fn terminate(child: &Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_publishes_offline_flushes_and_exits_zero_and_restart_comes_back() {
    let broker = Mosquitto::start();
    let cancel = CancellationToken::new();
    let dev = miner2mqtt::sim::start_axeos_fleet(
        vec![DeviceSpec::gamma(30, Firmware::V2_12)],
        None,
        &cancel,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt: {{ host: 127.0.0.1, port: {}, client_id: cli-test }}\npoll_interval: 1s\nstore: {{ path: {} }}\nminers:\n  - {{ name: gamma, kind: axeos, host: '{}' }}\n",
            broker.port,
            dir.path().join("history").display(),
            dev[0].addr
        ),
    )
    .unwrap();
    let ha = Observer::connect(broker.port, &["miner2mqtt/#"]).await;
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ha.wait_for("miner2mqtt/gamma/state", WAIT, |_| true).await;

    // A restart asked over MQTT: answered, then the daemon goes away and comes back in-process.
    let asked = Instant::now();
    ha.publish(
        "miner2mqtt/bridge/request/restart",
        r#"{"transaction": "t1"}"#,
    )
    .await;
    let r = ha
        .wait_after(asked, "miner2mqtt/bridge/response/restart", WAIT, |_| true)
        .await
        .json();
    assert_eq!(r["status"], "ok");
    assert_eq!(r["transaction"], "t1");
    ha.wait_after(asked, "miner2mqtt/bridge/state", WAIT, |m| {
        m.text() == "offline"
    })
    .await;
    let back = ha
        .wait_after(asked, "miner2mqtt/bridge/state", WAIT, |m| {
            m.text() == "online"
        })
        .await;
    ha.wait_after(back.at, "miner2mqtt/gamma/state", WAIT, |_| true)
        .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "a restart does not end the process"
    );

    let stopped = Instant::now();
    terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status}");
    ha.wait_after(stopped, "miner2mqtt/bridge/state", WAIT, |m| {
        m.text() == "offline"
    })
    .await;
    // The history was flushed and can be opened again.
    let store = miner2mqtt::store::Store::open(&dir.path().join("history"), 1 << 20).unwrap();
    let hwid = dev[0]
        .spec
        .mac_string()
        .replace(':', "")
        .to_ascii_lowercase();
    assert!(!store
        .window(store.miner_number(&hwid).unwrap(), 0, u64::MAX)
        .unwrap()
        .is_empty());
    cancel.cancel();
}

#[test]
fn a_bad_config_names_the_key_and_the_file_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "poll_interval: soon\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("poll_interval") && err.contains("config.yaml"),
        "{err}"
    );

    let missing = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/m2m.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/m2m.yaml does not exist")
    );

    let env = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("MINER2MQTT_POLL_INTERVAL", "20s")
        .env("MINER2MQTT_MQTT__PORT", "99999")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&env.stderr);
    assert!(err.contains("MINER2MQTT_MQTT__PORT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_brings_its_own_broker_when_none_answers() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--no-table",
            "--poll-interval",
            "1s",
            "--broker",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no embedded broker on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ha = Observer::connect(port, &["miner2mqtt/#", "homeassistant/#"]).await;
    for name in [
        "bitaxe-gamma",
        "bitaxe-supra",
        "bitaxe-gamma-215",
        "nerdqaxe",
        "avalon-nano3s",
        "antminer-s19",
    ] {
        ha.wait_for(&format!("miner2mqtt/{name}/state"), WAIT, |m| {
            m.json()["hashrate"].is_number()
        })
        .await;
    }
    ha.wait_for("miner2mqtt/nmminer-lotto/state", WAIT, |m| {
        m.json()["hashrate_khs"].is_number()
    })
    .await;
    let discovered = ha
        .messages()
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/device/miner2mqtt/"))
        .count();
    assert!(
        discovered >= 8,
        "{discovered} discovery payloads (7 miners + bridge)"
    );
    terminate(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("embedded") && out.contains(&port.to_string()),
        "{out}"
    );
}

/// `miner2mqtt replay` over the real Agile days in ../shared/fixtures/octopus/days: every
/// strategy costs at least the limit for its terahashes (the limit is a true lower bound), the
/// strategies save against always-on, and the demo fleet's bands + champion lands within 10 %
/// of the limit. A file that is not prices is refused by name.
#[test]
fn replay_reports_each_strategy_against_the_limit() {
    let days: Vec<std::path::PathBuf> = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/octopus/days"
    ))
    .unwrap()
    .map(|e| e.unwrap().path())
    .collect();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("replay")
            .arg("--prices")
            .args(&days)
            .args(["--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = run(&[]);
    assert_eq!(
        report["days"].as_array().unwrap().len(),
        6,
        "{}",
        report["days"]
    );
    assert!(
        report["days"]
            .as_array()
            .unwrap()
            .contains(&"2023-10-29".into()),
        "the 50-slot day"
    );
    let rows = report["rows"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["strategy"] == name).unwrap();
    for r in rows {
        let gap = r["gap_percent"].as_f64().unwrap();
        assert!(gap > -0.01, "nothing beats the limit: {r}");
    }
    let (always, bands, champion) = (row("always_on"), row("bands"), row("bands_champion"));
    assert!(bands["gbp_per_th"].as_f64() < always["gbp_per_th"].as_f64());
    assert_eq!(always["changes"], 0);
    assert!(
        champion["gap_percent"].as_f64().unwrap() < 10.0,
        "{champion}"
    );

    // The issue's plain rule for one Gamma on a plug: eco below 20 p/kWh, off above.
    let gamma = run(&[
        "--config",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/replay/gamma-eco-below-20.yaml"
        ),
    ]);
    let rows = gamma["rows"].as_array().unwrap();
    let per_th = |i: usize| rows[i]["gbp_per_th"].as_f64().unwrap();
    let saving = 1.0 - per_th(1) / per_th(0);
    assert!((0.45..0.65).contains(&saving), "{saving}");

    let bad = std::process::Command::new(BIN)
        .args([
            "replay",
            "--prices",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("Cargo.toml") && err.contains("neither an Octopus rates page"),
        "{err}"
    );
}
