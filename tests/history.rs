//! The history answering questions, end to end: a simulated Bitaxe Gamma over real HTTP run at
//! three clocks by the user, a real Mosquitto, the daemon — the `report` and `export` bridge
//! requests, and `miner2mqtt report` / `export` both through the running daemon (which holds
//! the store) and straight from the store once it has stopped, with the plot in SVG and PNG.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run_cli(args: &[&str], file: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_miner2mqtt"))
        .args(args)
        .arg("--config")
        .arg(file)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The data of a bridge request's response.
async fn ask(rig: &Rig, action: &str, request: Value) -> Value {
    let t = Instant::now();
    let tx = format!("t{}", rand_id());
    let mut request = request;
    request["transaction"] = tx.clone().into();
    rig.ha
        .publish(
            &format!("miner2mqtt/bridge/request/{action}"),
            &request.to_string(),
        )
        .await;
    let response = rig
        .ha
        .wait_after(
            t,
            &format!("miner2mqtt/bridge/response/{action}"),
            WAIT,
            |m| m.json()["transaction"] == tx.as_str(),
        )
        .await
        .json();
    assert_eq!(response["status"], "ok", "{response}");
    response["data"].clone()
}

fn config_of(report: &Value, frequency: u64) -> Value {
    report["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["frequency_mhz"] == frequency)
        .unwrap_or_else(|| panic!("no {frequency} MHz in {report}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_export_answer_from_the_daemon_and_from_the_store() {
    let rig = Rig::start(vec![miner2mqtt::sim::axeos::DeviceSpec::gamma(
        3,
        miner2mqtt::sim::axeos::Firmware::V2_12,
    )
    .with_silicon(5)])
    .await;
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    rig.ha
        .wait_for("miner2mqtt/gamma/availability", WAIT, |m| {
            m.text() == "online"
        })
        .await;
    // The user runs it at three clocks, about eight polls each.
    for f in ["500", "550", "600"] {
        rig.ha.publish("miner2mqtt/gamma/set/frequency", f).await;
        let t = Instant::now();
        rig.ha
            .wait_after(t, "miner2mqtt/gamma/state", WAIT, move |m| {
                m.json()["frequency"].as_f64() == f.parse().ok()
            })
            .await;
        tokio::time::sleep(Duration::from_secs(8)).await;
    }

    // The bridge request.
    let reports = ask(
        &rig,
        "report",
        json!({ "miner": "gamma", "min_samples": 3 }),
    )
    .await;
    let report = &reports[0];
    assert_eq!(report["miner"], "gamma");
    let (c500, c600) = (config_of(report, 500), config_of(report, 600));
    for c in [&c500, &c600] {
        assert_eq!(c["core_voltage_mv"], 1150);
        assert!(c["samples"].as_u64().unwrap() >= 5, "{c}");
        assert_eq!(c["sessions"], 1, "{c}");
        assert!(c["runtime_s"].as_u64().unwrap() >= 4, "{c}");
        assert_eq!(c["hashrate"]["unit"], "GH/s");
        assert!(c["exact_percentiles"].as_bool().unwrap());
        for m in ["hashrate", "power", "temperature", "efficiency"] {
            assert!(c[m]["mean"].as_f64().unwrap() > 0.0, "{m}: {c}");
            assert!(c[m]["p5"].as_f64() <= c[m]["p95"].as_f64(), "{m}: {c}");
        }
    }
    assert!(
        c600["power"]["mean"].as_f64() > c500["power"]["mean"].as_f64(),
        "{c500}\n{c600}"
    );
    // The sessions, in the order the user ran them (the default clock first).
    let order: Vec<u64> = report["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["frequency_mhz"].as_u64())
        .collect();
    assert!(order.ends_with(&[500, 550, 600]), "{order:?}");
    let rec = &report["recommendations"];
    for k in ["best_efficiency", "best_hashrate", "balanced"] {
        assert!(rec[k]["frequency_mhz"].is_u64(), "{k}: {rec}");
    }
    // A refusal says why.
    let t = Instant::now();
    rig.ha
        .publish(
            "miner2mqtt/bridge/request/report",
            r#"{"miner": "nope", "transaction": "x"}"#,
        )
        .await;
    let refused = rig
        .ha
        .wait_after(t, "miner2mqtt/bridge/response/report", WAIT, |_| true)
        .await
        .json();
    assert_eq!(refused["status"], "error");
    assert!(
        refused["error"].as_str().unwrap().contains("nope"),
        "{refused}"
    );

    // Export, a page at a time.
    let page = ask(&rig, "export", json!({ "miner": "gamma", "limit": 5 })).await;
    assert_eq!(page["samples"].as_array().unwrap().len(), 5);
    let next = page["next"].as_u64().unwrap();
    let rest = ask(&rig, "export", json!({ "miner": "gamma", "since": next })).await;
    let first_after: u64 = rest["samples"][0]["at_ms"].as_u64().unwrap();
    assert!(first_after >= next);
    assert!(rest["next"].is_null());

    // The command line while the daemon holds the store: it asks the daemon.
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_config_for(
        rig.broker.port,
        &[("gamma", &rig.devs[0])],
        &rig.history_path(),
        |_| {},
    );
    let file = config_file(dir.path(), &raw);
    let svg = dir.path().join("gamma.svg");
    let svg_arg = svg.to_str().unwrap().to_string();
    let file2 = file.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "report",
                "--miner",
                "gamma",
                "--format",
                "json",
                "--min-samples",
                "3",
                "--plot",
                &svg_arg,
            ],
            &file2,
        )
    })
    .await
    .unwrap();
    let via_daemon: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(via_daemon[0]["miner"], "gamma");
    assert!(config_of(&via_daemon[0], 600)["samples"].as_u64().unwrap() >= 5);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.starts_with("<svg"),
        "{}",
        &drawn[..80.min(drawn.len())]
    );
    for text in [
        "Pareto front",
        "best hashrate",
        "MHz / 1150 mV",
        "mean power (W)",
    ] {
        assert!(drawn.contains(text), "{text} missing from the plot");
    }
    let file2 = file.clone();
    let csv = tokio::task::spawn_blocking(move || run_cli(&["export", "--miner", "gamma"], &file2))
        .await
        .unwrap();
    let csv = stdout(&csv);
    assert!(csv.starts_with("time,frequency_mhz,core_voltage_mv,hashrate_ghs"));
    assert!(csv.lines().filter(|l| l.contains(",600,1150,")).count() >= 5);

    daemon.stop().await;

    // With the daemon stopped it reads the store itself.
    let png = dir.path().join("gamma.png");
    let png_arg = png.to_str().unwrap().to_string();
    let file2 = file.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_cli(
            &["report", "--min-samples", "3", "--plot", &png_arg],
            &file2,
        )
    })
    .await
    .unwrap();
    let table = stdout(&out);
    for text in [
        "gamma — ",
        "600 MHz / 1150 mV",
        "hashrate (GH/s)",
        "efficiency (J/TH)",
        "best efficiency",
        "sessions:",
    ] {
        assert!(table.contains(text), "{text} missing from\n{table}");
    }
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000);
    let file2 = file.clone();
    let out = tokio::task::spawn_blocking(move || run_cli(&["report", "--miner", "nope"], &file2))
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no miner is named \"nope\"") && err.contains("gamma"),
        "{err}"
    );
}
