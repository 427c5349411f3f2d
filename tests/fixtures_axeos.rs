//! The ESP-Miner parser on every real payload in ../shared/fixtures/{axeos,nerdqaxe}: units
//! normalised, generations told apart, nothing invented.

use miner2mqtt::miner::axeos::{parse_system_info, Generation};
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    std::env::var_os("MINER2MQTT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

fn load(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6 * b.abs().max(1.0))
}

#[test]
fn every_axeos_and_nerdqaxe_fixture_parses() {
    let mut count = 0;
    for family in ["axeos", "nerdqaxe"] {
        for entry in std::fs::read_dir(fixtures_dir().join(family)).unwrap() {
            let path = entry.unwrap().path();
            let info = parse_system_info(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let t = &info.reading.telemetry;
            assert!(t.hashrate.is_some(), "{}", path.display());
            assert!(t.power.is_some_and(|p| p > 0.0), "{}", path.display());
            // Input voltage is in V after the parser: a 5 V or 12 V board, never millivolts.
            let v = t.input_voltage.unwrap();
            assert!((4.0..14.0).contains(&v), "{}: {v}", path.display());
            let a = t.current.unwrap();
            assert!((0.0..25.0).contains(&a), "{}: {a}", path.display());
            assert!(info.reading.identity.asic_model.is_some());
            count += 1;
        }
    }
    assert_eq!(count, 8, "every fixture was read");
}

#[test]
fn v2_1_3_legacy_with_string_best_diff_and_colliding_fan_keys() {
    let info = parse_system_info(&load("axeos/v2.1.3_bm1366_system_info.json")).unwrap();
    let t = &info.reading.telemetry;
    assert_eq!(info.generation, Generation::Legacy);
    assert!(close(t.input_voltage, 5.28));
    assert!(close(t.current, 0.53));
    assert_eq!(t.best_difficulty, Some(13e6));
    // fanspeed (%) and fanSpeed (rpm) are different keys.
    assert_eq!(t.fan_speed, Some(100.0));
    assert_eq!(t.fan_rpm, Some(5320.0));
    assert_eq!(t.pool.as_deref(), Some("sha256-eu.unmineable.com:3333"));
    assert_eq!(
        info.reading.identity.hardware_id, None,
        "no macAddr in this firmware"
    );
    assert_eq!(t.clock().unwrap().frequency_mhz, 575);
    // expectedHashrate is absent: derived from frequency × cores (BM1366 has no smallCoreCount here).
    assert_eq!(t.expected_hashrate, None);
    assert_eq!(t.rssi, None);
}

#[test]
fn v2_10_1_string_difficulty_with_a_space_and_absent_second_sensor() {
    let info = parse_system_info(&load("axeos/v2.10.1_bm1370_gamma601_system_info.json")).unwrap();
    let t = &info.reading.telemetry;
    assert_eq!(info.generation, Generation::Legacy);
    assert_eq!(t.best_difficulty, Some(572.14e6));
    assert_eq!(t.best_session_difficulty, Some(11.90e6));
    assert_eq!(t.expected_hashrate, Some(1632.0));
    assert_eq!(t.error_percent, None, "v2.10 does not count errors");
    assert!(info
        .reading
        .capabilities
        .absent_sensors
        .contains(&"error_percent"));
    assert_eq!(t.vr_temp, Some(68.0));
    assert!(close(t.input_voltage, 4.96875));
    assert!(close(t.current, 20.03125));
    assert_eq!(
        info.reading.identity.hardware_id, None,
        "redacted MAC is not an identity"
    );
    assert_eq!(info.reading.identity.model, "Gamma 601");
    let eff = t.efficiency_j_per_th().unwrap();
    assert!((eff - 30.5875 / 1.6586653).abs() < 0.01, "{eff}");
}

#[test]
fn v2_11_numeric_difficulty_and_manual_fan_speed() {
    let info =
        parse_system_info(&load("axeos/v2.11.0b6_bm1370_gamma601_system_info.json")).unwrap();
    assert_eq!(info.generation, Generation::V2_11);
    assert_eq!(info.reading.telemetry.best_difficulty, Some(572141152.0));
    assert_eq!(info.reading.telemetry.shares_rejected, Some(5));
    // v2.11 counts the chips' errors; the benchmark's pass criterion uses them.
    assert_eq!(
        info.reading.telemetry.error_percent,
        Some(0.318_133_622_407_913_2)
    );
    assert!(!info
        .reading
        .capabilities
        .absent_sensors
        .contains(&"error_percent"));
}

#[test]
fn v2_12_2_identity_from_the_mac_and_fallback_pool() {
    let info = parse_system_info(&load("axeos/v2.12.2_bm1370_gamma601_system_info.json")).unwrap();
    let t = &info.reading.telemetry;
    assert_eq!(info.generation, Generation::V2_11);
    assert_eq!(
        info.reading.identity.hardware_id.as_deref(),
        Some("10f51233bbf0")
    );
    assert_eq!(
        info.reading.identity.mac.as_deref(),
        Some("10:F5:12:33:BB:F0")
    );
    assert!(close(t.fan_speed, 48.4200668));
    assert_eq!(t.auto_fan, Some(true));
    // isUsingFallbackStratum = 1: the pool in use is the fallback.
    assert_eq!(t.pool.as_deref(), Some("solo.ckpool.org:3333"));
    assert_eq!(t.rssi, Some(-44.0));
    assert_eq!(t.uptime, Some(18574));
    assert_eq!(t.firmware_overheat, Some(false));
}

#[test]
fn v2_4_5_zero_vr_temp_means_no_sensor() {
    let info = parse_system_info(&load("axeos/v2.4.5_bm1368_supra401_system_info.json")).unwrap();
    let t = &info.reading.telemetry;
    assert_eq!(t.vr_temp, None);
    assert_eq!(t.best_difficulty, Some(483e3));
    assert_eq!(t.best_session_difficulty, Some(0.0));
    assert_eq!(
        info.reading.identity.hardware_id.as_deref(),
        Some("aabbccddeeff")
    );
    assert_eq!(info.reading.identity.model, "Supra 401");
    // Expected hashrate from ESP-Miner's formula: 490 MHz × 1276 cores × 1 chip / 1000.
    assert!(close(t.expected_hashrate, 625.24));
}

#[test]
fn v2_7_0_tch_fork_without_v_prefix_and_six_chips() {
    let info = parse_system_info(&load(
        "axeos/v2.7.0-TCH_bm1368x6_suprahex702_system_info.json",
    ))
    .unwrap();
    let t = &info.reading.telemetry;
    assert_eq!(info.generation, Generation::Legacy);
    assert_eq!(info.reading.identity.asic_count, 6);
    assert_eq!(info.reading.identity.model, "Supra Hex 702");
    assert!(close(t.asic_temp, 37.5999984741211));
    assert_eq!(t.best_difficulty, Some(193e9));
    assert!(close(t.input_voltage, 12.0625));
    assert!(close(t.expected_hashrate, 490.0 * 1276.0 * 6.0 / 1000.0));
}

#[test]
fn v2_7_0_blank_mac_and_blank_pool_are_unknown_not_empty() {
    let info = parse_system_info(&load("axeos/v2.7.0_bm1370_gamma601_system_info.json")).unwrap();
    let t = &info.reading.telemetry;
    assert_eq!(info.reading.identity.hardware_id, None);
    assert_eq!(t.pool, None);
    assert_eq!(t.pool_user, None);
    assert_eq!(t.best_difficulty, Some(5.56e9));
    assert_eq!(t.frequency, Some(850.0));
}

#[test]
fn nerdqaxe_plus_plus() {
    let info = parse_system_info(&load(
        "nerdqaxe/v1.1.0-beta1_nerdqaxe++_bm1370x4_system_info.json",
    ))
    .unwrap();
    let t = &info.reading.telemetry;
    let id = &info.reading.identity;
    assert_eq!(info.generation, Generation::NerdQaxe);
    assert_eq!(id.manufacturer, "NerdQAxe");
    assert_eq!(id.model, "NerdQAxe++");
    assert_eq!(id.asic_count, 4);
    assert_eq!(id.hardware_id.as_deref(), Some("aca704fb77d0"));
    assert!(close(t.current, 8.4375));
    assert!(close(t.input_voltage, 12.25));
    // autofanspeed 2 is the PID loop: automatic.
    assert_eq!(t.auto_fan, Some(true));
    assert_eq!(t.paused, Some(false));
    assert_eq!(t.best_difficulty, Some(13790464144.0));
    assert_eq!(t.pool.as_deref(), Some("172.17.1.6:2018"));
    assert!(!info.reading.capabilities.pause);
}
