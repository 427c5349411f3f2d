//! The simulators against real firmware (issue 10): for every command the project or a common
//! client (pyasic, asic-rs, the vendor's tools) sends, the simulator's reply has every key of the
//! matching real capture, with the same JSON type — and inside Avalon's `MM ID0` blob, every key
//! of the captured blob. Captures: ../shared/fixtures (see its PROVENANCE.md) and tests/fixtures.

mod common;

use miner2mqtt::miner::cgminer::{blob_get, parse_bracket_blob, CgminerClient};
use miner2mqtt::sim::axeos::{self, DeviceSpec, Firmware, BM1366, BM1370};
use miner2mqtt::sim::cgminer::{self, AvalonSpec, Model, SimAvalon};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn capture(path: &str) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/fixtures").join(path);
    let local = root.join("tests/fixtures").join(path);
    let bytes = std::fs::read(&shared)
        .or_else(|_| std::fs::read(&local))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Keys of `real` missing from `ours` or of another JSON type.
fn differences(real: &Value, ours: &Value) -> Vec<String> {
    real.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match ours.get(k) {
            None => Some(format!("{k:?} missing")),
            Some(mine) if kind(mine) != kind(v) => {
                Some(format!("{k:?} is {} not {}", kind(mine), kind(v)))
            }
            Some(_) => None,
        })
        .collect()
}

/// The bracket blob of a stats element, whichever key the model files it under.
fn blob_keys(element: &Value) -> Vec<String> {
    let text = element
        .get("MM ID0")
        .or_else(|| element.get("MM ID0:Summary"))
        .and_then(Value::as_str)
        .unwrap_or("");
    parse_bracket_blob(text)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

async fn start(n: u32, model: Model, cancel: &CancellationToken) -> SimAvalon {
    cgminer::start(
        AvalonSpec::new(n, model),
        "127.0.0.1:0".parse().unwrap(),
        cancel.clone(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn cgminer_simulators_answer_every_command_as_the_real_firmware_does() {
    let cancel = CancellationToken::new();
    let nano3 = start(71, Model::Nano3, &cancel).await;
    let nano3s = start(72, Model::Nano3s, &cancel).await;
    let q = start(73, Model::Q, &cancel).await;
    let mini3 = start(74, Model::Mini3, &cancel).await;
    let s19 = start(75, Model::S19pro, &cancel).await;
    // (simulator, command, capture, list key): every element of the capture's list is checked
    // against the simulator's element at the same position (stats: the device, then POOL0..2).
    let cases: Vec<(&SimAvalon, &str, &str, &str)> = vec![
        (
            &nano3,
            "version",
            "cgminer-avalon/nano3_24071801_version.json",
            "VERSION",
        ),
        (
            &nano3,
            "summary",
            "cgminer-avalon/nano3_24071801_summary.json",
            "SUMMARY",
        ),
        (
            &nano3,
            "stats",
            "cgminer-avalon/nano3_24071801_stats.json",
            "STATS",
        ),
        (
            &nano3,
            "estats",
            "cgminer-avalon/nano3_24071801_stats.json",
            "STATS",
        ),
        (
            &nano3,
            "pools",
            "cgminer-avalon/avalonq_25052801_pools.json",
            "POOLS",
        ),
        (
            &nano3,
            "devs",
            "cgminer-avalon/avalonq_25052801_devs.json",
            "DEVS",
        ),
        (
            &nano3s,
            "version",
            "cgminer-avalon/nano3s_25021401_version.json",
            "VERSION",
        ),
        (
            &nano3s,
            "summary",
            "cgminer-avalon/nano3_24071801_summary.json",
            "SUMMARY",
        ),
        (
            &nano3s,
            "stats",
            "cgminer-avalon/nano3_24071801_stats.json",
            "STATS",
        ),
        (
            &nano3s,
            "pools",
            "cgminer-avalon/avalonq_25052801_pools.json",
            "POOLS",
        ),
        (
            &nano3s,
            "devs",
            "cgminer-avalon/avalonq_25052801_devs.json",
            "DEVS",
        ),
        (
            &q,
            "version",
            "cgminer-avalon/avalonq_25052801_version.json",
            "VERSION",
        ),
        (
            &q,
            "summary",
            "cgminer-avalon/avalonq_25052801_summary.json",
            "SUMMARY",
        ),
        (
            &q,
            "stats",
            "cgminer-avalon/avalonq_25052801_stats.json",
            "STATS",
        ),
        (
            &q,
            "estats",
            "cgminer-avalon/avalonq_25052801_stats.json",
            "STATS",
        ),
        (
            &q,
            "pools",
            "cgminer-avalon/avalonq_25052801_pools.json",
            "POOLS",
        ),
        (
            &q,
            "devs",
            "cgminer-avalon/avalonq_25052801_devs.json",
            "DEVS",
        ),
        // No public Mini 3 capture exists; its firmware is the Q's family (SWTYPE MM319).
        (
            &mini3,
            "version",
            "cgminer-avalon/avalonq_25052801_version.json",
            "VERSION",
        ),
        (
            &mini3,
            "stats",
            "cgminer-avalon/avalonq_25052801_stats.json",
            "STATS",
        ),
        (
            &mini3,
            "devs",
            "cgminer-avalon/avalonq_25052801_devs.json",
            "DEVS",
        ),
        (
            &s19,
            "version",
            "cgminer-antminer/s19pro_49.0.1.3_version.json",
            "VERSION",
        ),
        (
            &s19,
            "summary",
            "cgminer-antminer/s19pro_49.0.1.3_summary.json",
            "SUMMARY",
        ),
        (
            &s19,
            "stats",
            "cgminer-antminer/s19pro_49.0.1.3_stats.json",
            "STATS",
        ),
        (
            &s19,
            "pools",
            "cgminer-antminer/s19pro_49.0.1.3_pools.json",
            "POOLS",
        ),
    ];
    let mut wrong = Vec::new();
    for (sim, command, fixture, list) in cases {
        let real = capture(fixture);
        let api = CgminerClient::new(&sim.addr.to_string(), Duration::from_secs(2));
        let ours = api
            .request(command, None)
            .await
            .unwrap_or_else(|e| panic!("{:?} {command}: {e}", sim.spec.model));
        assert_eq!(
            ours["STATUS"][0]["STATUS"], "S",
            "{:?} {command}",
            sim.spec.model
        );
        let real_list = real[list].as_array().unwrap();
        for (i, element) in real_list.iter().enumerate() {
            // Pools beyond the simulator's configured slots are the device's own choice.
            if list == "POOLS" && i > 0 {
                continue;
            }
            let Some(mine) = ours[list].get(i) else {
                wrong.push(format!("{:?} {command}: no {list}[{i}]", sim.spec.model));
                continue;
            };
            for d in differences(element, mine) {
                wrong.push(format!(
                    "{:?} {command} {list}[{i}] ({fixture}): {d}",
                    sim.spec.model
                ));
            }
            // A blob is compared only with the same model's capture.
            let same_model = fixture.contains(match sim.spec.model {
                Model::Nano3 => "/nano3_",
                Model::Nano3s => "/nano3s_",
                Model::Q | Model::Mini3 => "/avalonq_",
                Model::S19pro => "/s19pro_",
            });
            for key in blob_keys(element).into_iter().filter(|_| same_model) {
                if !blob_keys(mine).contains(&key) {
                    wrong.push(format!(
                        "{:?} {command}: the MM ID0 blob lacks {key}",
                        sim.spec.model
                    ));
                }
            }
        }
    }
    // The Nano 3S capture of the blob alone (no surrounding JSON).
    let blob = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/cgminer-avalon/nano3s_25021401_estats_mm_id0_value.txt"),
    )
    .unwrap();
    let ours = CgminerClient::new(&nano3s.addr.to_string(), Duration::from_secs(2))
        .request("estats", None)
        .await
        .unwrap();
    let mine = blob_keys(&ours["STATS"][0]);
    for (key, _) in parse_bracket_blob(&blob) {
        if !mine.contains(&key) {
            wrong.push(format!("Nano3s estats: the MM ID0 blob lacks {key}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differences:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Regression (issue 10.4): GHSmm is the rate the firmware expects, not the live one.
    let nano = CgminerClient::new(&nano3.addr.to_string(), Duration::from_secs(2))
        .request("estats", None)
        .await
        .unwrap();
    let pairs = parse_bracket_blob(nano["STATS"][0]["MM ID0"].as_str().unwrap());
    assert_ne!(blob_get(&pairs, "GHSmm"), blob_get(&pairs, "GHSspd"));
    cancel.cancel();
}

/// Regression (issue 10.1): the daemon identifies a real Nano 3 — which reports no MAC or DNA in
/// `version` — by its hash board's serial, not by its configured name.
#[tokio::test]
async fn a_nano3_is_identified_by_a_stable_hardware_id() {
    use miner2mqtt::miner::avalon::AvalonClient;
    let cancel = CancellationToken::new();
    let nano3 = start(76, Model::Nano3, &cancel).await;
    let mut client = AvalonClient::new(&nano3.addr.to_string(), Duration::from_secs(2), None);
    let r = client.poll().await.unwrap();
    let id = r.identity.hardware_id.expect("a hardware id");
    assert!(id.starts_with("dna0201"), "{id}");
    assert_eq!(r.identity.model, "Avalon Nano 3");
    assert_eq!(r.identity.firmware.as_deref(), Some("24071801_42c628d"));
    // The same on the next poll, and on a new client (a daemon restart).
    let again = AvalonClient::new(&nano3.addr.to_string(), Duration::from_secs(2), None)
        .poll()
        .await
        .unwrap();
    assert_eq!(again.identity.hardware_id.as_deref(), Some(id.as_str()));
    cancel.cancel();
}

#[tokio::test]
async fn esp_miner_simulators_serve_the_web_page_and_the_right_board() {
    let cancel = CancellationToken::new();
    let gamma = axeos::start(
        DeviceSpec::new(77, Firmware::V2_12, BM1370, 1),
        "127.0.0.1:0".parse().unwrap(),
        cancel.clone(),
    )
    .await
    .unwrap();
    // Regression (issue 10.5): real AxeOS serves its web page at `/`, titled "AxeOS".
    let page = reqwest::get(format!("http://{}/", gamma.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<title>AxeOS</title>"), "{page}");

    // Regression (issue 10.6): a BM1366 board is an Ultra (2xx) or, with six chips, a Hex
    // (302/303) — never a Supra 401.
    for (chips, board, family, model) in [
        (1, "204", "Ultra", "Ultra 204"),
        (6, "302", "UltraHex", "Ultra Hex 302"),
    ] {
        let dev = axeos::start(
            DeviceSpec::new(78, Firmware::V2_12, BM1366, chips),
            "127.0.0.1:0".parse().unwrap(),
            cancel.clone(),
        )
        .await
        .unwrap();
        let body = reqwest::get(format!("http://{}/api/system/info", dev.addr))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let info: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(info["boardVersion"], board);
        let asic: Value = reqwest::get(format!("http://{}/api/system/asic", dev.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(asic["deviceModel"], family);
        let parsed = miner2mqtt::miner::axeos::parse_system_info(&body).unwrap();
        assert_eq!(parsed.reading.identity.model, model);
        assert_eq!(parsed.reading.identity.asic_count, chips);
    }
    cancel.cancel();
}
