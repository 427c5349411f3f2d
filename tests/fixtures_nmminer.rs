//! The NMMiner parser on the real datagrams in ../shared/fixtures/nmminer.

use miner2mqtt::miner::nmminer::{parse_status, pool_datagram};
use std::path::PathBuf;

fn load(rel: &str) -> Vec<u8> {
    let dir = std::env::var_os("MINER2MQTT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    std::fs::read(dir.join(rel)).unwrap()
}

#[test]
fn the_nmlotto_status_datagram() {
    let raw = load("nmminer/v0.3.01_nmlotto_status_datagram_udp12345.json");
    // The README kept it pretty-printed; the wire datagram is compact. Both parse.
    let compact =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&raw).unwrap()).unwrap();
    for bytes in [&raw, &compact] {
        let s = parse_status(bytes, &["solo.ckpool.org:3333".into()]).unwrap();
        let t = &s.reading.telemetry;
        assert_eq!(s.ip, "192.168.1.101");
        assert_eq!(s.board, "NMLotto");
        assert_eq!(
            s.reading.identity.hardware_id.as_deref(),
            Some("nm_192_168_1_101_nmlotto")
        );
        assert_eq!(s.reading.identity.firmware.as_deref(), Some("v0.3.01"));
        assert_eq!(t.extra["hashrate_khs"], Some(113.13));
        assert!(
            (t.hashrate.unwrap() - 113.13e3 / 1e9).abs() < 1e-12,
            "GH/s for fleet totals"
        );
        assert_eq!((t.shares_accepted, t.shares_rejected), (Some(138), Some(1)));
        assert_eq!(t.uptime, Some(5026));
        assert_eq!(t.asic_temp, Some(48.5));
        assert_eq!(t.rssi, Some(-62.0));
        assert_eq!(t.best_difficulty, Some(4.021e6));
        assert_eq!(t.pool.as_deref(), Some("public-pool.io:21496"));
        assert_eq!(
            s.reading.capabilities.pools[0].label,
            "solo.ckpool.org:3333"
        );
        assert!(!s.reading.capabilities.restart && !s.reading.capabilities.fan_speed);
    }
}

#[test]
fn the_pool_datagram_carries_only_pool_fields_in_the_captured_names() {
    let captured: serde_json::Value =
        serde_json::from_slice(&load("nmminer/config_broadcast_datagram_udp12347.json")).unwrap();
    let ours: serde_json::Value = serde_json::from_slice(&pool_datagram(
        "192.168.1.101",
        "stratum+tcp://solo.ckpool.org:3333",
        "bc1q.x",
        "x",
    ))
    .unwrap();
    for (key, value) in ours.as_object().unwrap() {
        assert!(
            captured.get(key).is_some(),
            "{key} is not a field the controller sends"
        );
        assert_eq!(value.is_string(), captured[key].is_string(), "{key}");
    }
    assert!(
        ours.get("WiFiSSID").is_none() && ours.get("WiFiPWD").is_none(),
        "Wi-Fi is never touched"
    );
}
