//! The cgminer parsers on every real payload in ../shared/fixtures/cgminer-{avalon,antminer}.

use miner2mqtt::miner::cgminer::{
    blob_get, blob_numbers, parse_bracket_blob, parse_json_reply, parse_plain_reply,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    std::env::var_os("MINER2MQTT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

fn load(rel: &str) -> Vec<u8> {
    std::fs::read(dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_cgminer_fixture_parses() {
    let mut n = 0;
    for family in ["cgminer-avalon", "cgminer-antminer"] {
        for entry in std::fs::read_dir(dir().join(family)).unwrap() {
            let path = entry.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with("_plaintext.txt") {
                let sections = parse_plain_reply(&raw);
                assert!(sections[0].contains_key("STATUS"), "{name}");
            } else if name.ends_with(".txt") {
                assert!(
                    parse_bracket_blob(&String::from_utf8_lossy(&raw)).len() > 20,
                    "{name}"
                );
            } else {
                // As on the wire: with the trailing NUL the sources did not keep.
                let mut wire = raw.clone();
                wire.push(0);
                let v = parse_json_reply(&wire).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(v.get("STATUS").is_some(), "{name}");
            }
            n += 1;
        }
    }
    assert_eq!(n, 24);
}

fn mm_id0(stats: &Value) -> String {
    let s = &stats["STATS"][0];
    s.get("MM ID0")
        .or_else(|| s.get("MM ID0:Summary"))
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

#[test]
fn nano3_summary_is_in_mh_and_its_power_is_ps_slot_5() {
    let summary = parse_json_reply(&load("cgminer-avalon/nano3_24071801_summary.json")).unwrap();
    assert_eq!(summary["SUMMARY"][0]["MHS 5s"].as_f64(), Some(6614801.03));
    let stats = parse_json_reply(&load("cgminer-avalon/nano3_24071801_stats.json")).unwrap();
    let blob = parse_bracket_blob(&mm_id0(&stats));
    assert_eq!(blob_get(&blob, "GHSspd"), Some("3332.40"));
    assert_eq!(blob_get(&blob, "OTemp"), Some("45"));
    assert_eq!(blob_get(&blob, "TAvg"), Some("85"));
    assert_eq!(blob_get(&blob, "Fan1"), Some("3360"));
    assert_eq!(blob_numbers(blob_get(&blob, "FanR").unwrap()), [43.0]);
    // Nano 3: PS[0 0 0 3 2780 92 314] — slot 5 is the wall power, agreeing with MPO[90].
    let ps = blob_numbers(blob_get(&blob, "PS").unwrap());
    assert_eq!(ps[5], 92.0);
    assert_eq!(blob_get(&blob, "MPO"), Some("90"));
    assert_eq!(blob_get(&blob, "WORKLEVEL"), Some("1"));
}

#[test]
fn nano3s_estats_power_is_ps_slot_6_and_itemp_minus_273_is_no_reading() {
    let blob = parse_bracket_blob(&String::from_utf8_lossy(&load(
        "cgminer-avalon/nano3s_25021401_estats_mm_id0_value.txt",
    )));
    let ps = blob_numbers(blob_get(&blob, "PS").unwrap());
    assert_eq!(ps[6], 133.0);
    assert_eq!(blob_get(&blob, "MPO"), Some("133"));
    assert_eq!(blob_get(&blob, "ITemp"), Some("-273"));
    assert_eq!(blob_get(&blob, "WORKMODE"), Some("2"));
    assert_eq!(blob_get(&blob, "GHSspd"), Some("6598.84"));
    assert_eq!(
        blob_get(&blob, "SYSTEMSTATU"),
        Some("Work: In Work, Hash Board: 1")
    );
}

#[test]
fn nano3s_version_identifies_the_device() {
    let v = parse_json_reply(&load("cgminer-avalon/nano3s_25021401_version.json")).unwrap();
    let version = &v["VERSION"][0];
    assert_eq!(version["MODEL"], "Nano3s");
    assert_eq!(version["PROD"], "Avalon Nano3s");
    assert_eq!(version["MAC"], "e0e1a93f3053");
    assert_eq!(version["DNA"], "020100003cbe4d15");
}

#[test]
fn avalon_q_blob_behind_its_stats_prefix() {
    let stats = parse_json_reply(&load("cgminer-avalon/avalonq_25052801_stats.json")).unwrap();
    let blob = parse_bracket_blob(&mm_id0(&stats));
    assert_eq!(blob_get(&blob, "Ver"), Some("Q-25052801_14a19a2"));
    assert_eq!(blob_get(&blob, "WORKMODE"), Some("0"));
}

#[test]
fn ascset_replies_plain_and_json() {
    let plain = parse_plain_reply(&load(
        "cgminer-avalon/a10xx_ascset_workmode_info_plaintext.txt",
    ));
    assert_eq!(plain[0]["STATUS"], "I");
    assert_eq!(plain[0]["Code"], "118");
    let msg = parse_bracket_blob(&plain[0]["Msg"]);
    assert_eq!(blob_get(&msg, "WORKMODE"), Some("1"));
    let ok = parse_json_reply(&load(
        "cgminer-avalon/avalonq_25052801_ascset_workmode.json",
    ))
    .unwrap();
    assert_eq!(ok["STATUS"][0]["Code"], 119);
    let help = parse_json_reply(&load("cgminer-avalon/avalonq_25052801_ascset_help.json")).unwrap();
    assert_eq!(help["STATUS"][0]["Code"], 118);
}

#[test]
fn plain_pools_keep_their_fields() {
    let pools = parse_plain_reply(&load("cgminer-avalon/a10xx_pools_plaintext.txt"));
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[1]["POOL"], "0");
    assert_eq!(pools[1]["URL"], "stratum+tcp://btc.ss.poolin.com:443");
    assert_eq!(pools[1]["User"], "cctrix.001");
    assert_eq!(pools[1]["Stratum Active"], "true");
}

#[test]
fn antminer_rates_are_gh_and_chains_are_strings() {
    let summary = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_summary.json")).unwrap();
    assert!(summary["SUMMARY"][0]["GHS 5s"].as_f64().unwrap() > 100_000.0);
    let stats = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_stats.json")).unwrap();
    assert_eq!(stats["STATS"][0]["Type"], "Antminer S19 Pro");
    assert!(stats["STATS"][1].get("total rate").is_some());
    let pools = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_pools.json")).unwrap();
    assert!(pools["POOLS"][0].get("Pool Stale%%").is_some());
}

#[test]
fn avalon_readings_from_the_captured_nano3_and_nano3s() {
    use miner2mqtt::miner::avalon::parse_reading;
    // Nano 3: summary + stats captured together, and the same firmware's real version reply.
    let summary = parse_json_reply(&load("cgminer-avalon/nano3_24071801_summary.json")).unwrap();
    let stats = parse_json_reply(&load("cgminer-avalon/nano3_24071801_stats.json")).unwrap();
    let version = parse_json_reply(&local("cgminer-avalon/nano3_24071801_version.json")).unwrap();
    let r = parse_reading(
        &version["VERSION"][0],
        &summary,
        &stats,
        &Value::Null,
        None,
        false,
    );
    // Regression (issue 10.1): version has no MAC or DNA and the blob's DNA is zero; the hash
    // board's HDNA is a stable id, so HA entities keep their identity if the name changes.
    assert_eq!(
        r.identity.hardware_id.as_deref(),
        Some("dna02010000d89ada98")
    );
    assert_eq!(r.identity.model, "Avalon Nano 3");
    assert_eq!(r.identity.firmware.as_deref(), Some("24071801_42c628d"));
    let t = &r.telemetry;
    assert_eq!(t.hashrate, Some(3332.40));
    assert_eq!(t.power, Some(92.0), "Nano 3 power is PS slot 5");
    assert_eq!(t.asic_temp, Some(85.0));
    assert_eq!(t.fan_rpm, Some(3360.0));
    assert_eq!(t.fan_speed, Some(43.0));
    assert_eq!(t.frequency, None, "Freq[0.00] is no reading");
    assert_eq!(t.work_mode.as_deref(), Some("medium"), "WORKLEVEL[1]");
    assert_eq!(t.shares_accepted, Some(21853));
    assert_eq!(t.best_difficulty, Some(138508908.0));
    assert_eq!(t.auto_fan, None, "the firmware does not say");
    // What the benchmark's work-mode comparison judges by: the rate the firmware expects in
    // its mode (`GHSmm`) and the chips' error share (`DH[1.474%]`).
    assert_eq!(t.expected_hashrate, Some(3381.96));
    assert_eq!(t.error_percent, Some(1.474));
    assert!(!r.capabilities.absent_sensors.contains(&"expected_hashrate"));
    assert!(!r.capabilities.absent_sensors.contains(&"error_percent"));
    assert_eq!(r.capabilities.work_modes, ["low", "medium", "high"]);
    assert!(
        r.capabilities.pools.is_empty(),
        "no admin password, no pool selection"
    );

    // Nano 3S: the version capture and the estats MM ID0 value.
    let version = parse_json_reply(&load("cgminer-avalon/nano3s_25021401_version.json")).unwrap();
    let blob = String::from_utf8_lossy(&load(
        "cgminer-avalon/nano3s_25021401_estats_mm_id0_value.txt",
    ))
    .into_owned();
    let estats = serde_json::json!({ "STATS": [{ "MM ID0": blob }] });
    let r = parse_reading(
        &version["VERSION"][0],
        &Value::Null,
        &estats,
        &Value::Null,
        None,
        true,
    );
    assert_eq!(r.identity.hardware_id.as_deref(), Some("e0e1a93f3053"));
    assert_eq!(r.identity.model, "Avalon Nano 3S");
    assert_eq!(r.identity.asic_model.as_deref(), Some("A3197S"));
    assert_eq!(r.telemetry.power, Some(133.0), "Nano 3S power is PS slot 6");
    assert_eq!(r.telemetry.work_mode.as_deref(), Some("high"));
    assert_eq!(r.telemetry.frequency, Some(464.89));
    assert_eq!(r.telemetry.hashrate, Some(6598.84));
    assert_eq!(r.telemetry.asic_temp, Some(90.0));
    assert_eq!(r.telemetry.expected_hashrate, Some(6783.65));
    assert_eq!(r.telemetry.error_percent, Some(2.374));
}

#[test]
fn antminer_reading_from_the_captured_s19pro() {
    use miner2mqtt::miner::antminer::parse_reading;
    let version = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_version.json")).unwrap();
    let summary = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_summary.json")).unwrap();
    let stats = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_stats.json")).unwrap();
    let pools = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_pools.json")).unwrap();
    let r = parse_reading(&version["VERSION"][0], &summary, &stats, &pools);
    let t = &r.telemetry;
    assert_eq!(
        r.identity.hardware_id.as_deref(),
        Some("antminer8144d5ca79104814")
    );
    assert_eq!(r.identity.model, "Antminer S19 Pro");
    assert_eq!(r.identity.firmware.as_deref(), Some("49.0.1.3"));
    assert_eq!(t.hashrate, Some(110566.89));
    assert_eq!(t.expected_hashrate, Some(110000.0));
    assert_eq!(t.error_percent, Some(0.0), "Device Hardware%");
    assert_eq!(
        t.asic_temp,
        Some(78.0),
        "the hottest chain's chip temperature"
    );
    assert_eq!(t.frequency, Some(525.0));
    assert_eq!(t.fan_rpm, Some(6000.0));
    assert_eq!(t.extra["fan2_rpm"], Some(5880.0));
    assert_eq!(
        t.extra["chain1_hashrate"],
        Some(37603.30),
        "chain rates are strings on the wire"
    );
    assert_eq!(t.extra["chain3_temp"], Some(69.0));
    assert!(
        !t.extra.contains_key("chain4_hashrate"),
        "the empty fourth chain is not a sensor"
    );
    assert_eq!(
        (t.shares_accepted, t.shares_rejected),
        (Some(4057), Some(11))
    );
    assert_eq!(t.best_difficulty, Some(12904207043.0));
    assert_eq!(t.pool.as_deref(), Some("btc.global.luxor.tech:700"));
    assert_eq!(t.power, None, "stock firmware reports no power");
    let c = &r.capabilities;
    assert!(
        !c.fan_speed
            && !c.auto_fan
            && !c.restart
            && c.frequency_options.is_none()
            && c.work_modes.is_empty()
    );
    assert_eq!(c.extra_sensors.len(), 3 * 2 + 3);
}

/// Regression (issue 6.8): a hydro-cooled Antminer reports `fan_num` 4 with every fan at 0 while
/// it hashes. Those are fan headers, not stopped fans: no fan sensors, no 0 rpm readings that
/// would fire a "fan stopped" automation. One fan at 0 among spinning ones is still reported.
#[test]
fn a_liquid_cooled_antminer_gets_no_fan_sensors() {
    use miner2mqtt::miner::antminer::parse_reading;
    let version = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_version.json")).unwrap();
    let summary = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_summary.json")).unwrap();
    let mut stats = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_stats.json")).unwrap();
    let pools = parse_json_reply(&load("cgminer-antminer/s19pro_49.0.1.3_pools.json")).unwrap();
    let element = stats["STATS"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e.get("ID").is_some())
        .unwrap();
    element["fan_num"] = 4.into();
    for f in 1..=4 {
        element[format!("fan{f}")] = 0.into();
    }
    let r = parse_reading(&version["VERSION"][0], &summary, &stats, &pools);
    assert_eq!(r.telemetry.fan_rpm, None);
    assert!(r.telemetry.extra.keys().all(|k| !k.starts_with("fan")));
    assert!(r.capabilities.absent_sensors.contains(&"fan_rpm"));
    assert!(r
        .capabilities
        .extra_sensors
        .iter()
        .all(|s| !s.key.starts_with("fan")));

    // Air-cooled, one fan stopped: that zero is real and must show.
    let element = stats["STATS"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e.get("ID").is_some())
        .unwrap();
    element["fan1"] = 6000.into();
    let r = parse_reading(&version["VERSION"][0], &summary, &stats, &pools);
    assert_eq!(r.telemetry.fan_rpm, Some(6000.0));
    assert_eq!(r.telemetry.extra["fan2_rpm"], Some(0.0));
}

/// A file of the fixtures kept in this repository (tests/fixtures, see its PROVENANCE.md).
fn local(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap_or_else(|e| panic!("tests/fixtures/{path}: {e}"))
}

/// Regression (issue 6.4/6.5): an idle Avalon Q was read with the Nano 3's rules — 2,245 W from
/// the wrong `PS` slot and 0 °C from `TAvg[0]`. Its own rules: power from `WALLPOWER`, else the
/// output-power slot while it works; in standby, unknown; a zero temperature is no reading.
#[test]
fn an_idle_avalon_q_reads_by_its_own_rules() {
    use miner2mqtt::miner::avalon::parse_reading;
    let version = parse_json_reply(&load("cgminer-avalon/avalonq_25052801_version.json")).unwrap();
    let summary = parse_json_reply(&load("cgminer-avalon/avalonq_25052801_summary.json")).unwrap();
    let stats = parse_json_reply(&load("cgminer-avalon/avalonq_25052801_stats.json")).unwrap();
    let pools = parse_json_reply(&load("cgminer-avalon/avalonq_25052801_pools.json")).unwrap();
    let r = parse_reading(&version["VERSION"][0], &summary, &stats, &pools, None, true);
    let t = &r.telemetry;
    assert_eq!(r.identity.model, "Avalon Q");
    assert_eq!(r.identity.hardware_id.as_deref(), Some("aabbccddeeff"));
    assert_eq!(r.identity.firmware.as_deref(), Some("25052801_14a19a2"));
    assert_eq!(t.power, None, "standby (SoftOFF[4], In Idle): not 2,245 W");
    assert_eq!(t.asic_temp, None, "TAvg[0] on an idle unit is no reading");
    assert_eq!(t.paused, Some(true), "SoftOFF[4]");
    assert_eq!(t.work_mode.as_deref(), Some("eco"), "WORKMODE[0]");
    assert_eq!(t.hashrate, Some(0.0));
    assert_eq!(
        t.expected_hashrate, None,
        "GHSmm[55032.79] is what it would do, not what it is expected to do in standby"
    );
    let c = &r.capabilities;
    assert!(
        !c.absent_sensors.contains(&"expected_hashrate"),
        "the sensor stays while it stands by"
    );
    assert_eq!(c.work_modes, ["eco", "standard", "super"]);
    assert!(c.pause, "the Q has softoff/softon: the mining switch");
    assert!(c.fan_speed && c.restart);
    assert!(!c.pools.is_empty());
}

/// Regression (issue 6.4): an AvalonMiner 1566 read with the Nano's slot 5 reported 1,188 W
/// where its `WALLPOWER` says 3,731 W. A model miner2mqtt does not know gets generic telemetry,
/// power only from `WALLPOWER`, and no controls.
#[test]
fn an_unknown_avalon_gets_generic_telemetry_and_its_wall_power() {
    use miner2mqtt::miner::avalon::parse_reading;
    let version = parse_json_reply(&local("cgminer-avalon/a1566_24102401_version.json")).unwrap();
    let estats = parse_json_reply(&local("cgminer-avalon/a1566_24102401_estats.json")).unwrap();
    let r = parse_reading(
        &version["VERSION"][0],
        &Value::Null,
        &estats,
        &Value::Null,
        None,
        true,
    );
    let t = &r.telemetry;
    assert_eq!(r.identity.model, "AvalonMiner 15-194");
    assert_eq!(t.power, Some(3731.0), "WALLPOWER, not PS slot 5 (1188)");
    assert_eq!(t.hashrate, Some(199241.07));
    assert_eq!(t.asic_temp, Some(70.0));
    assert_eq!(t.fan_rpm, Some(4275.0));
    assert_eq!(t.work_mode, None, "its work modes are not known");
    let c = &r.capabilities;
    assert!(!c.fan_speed && !c.auto_fan && !c.restart && !c.pause);
    assert!(c.work_modes.is_empty() && c.pools.is_empty());

    // Without WALLPOWER: no power at all rather than a guessed slot.
    let mut estats = estats;
    let blob = estats["STATS"][0]["MM ID0"]
        .as_str()
        .unwrap()
        .replace("WALLPOWER[3731]", "");
    estats["STATS"][0]["MM ID0"] = blob.into();
    let r = parse_reading(
        &version["VERSION"][0],
        &Value::Null,
        &estats,
        &Value::Null,
        None,
        true,
    );
    assert_eq!(r.telemetry.power, None);
    assert!(r.capabilities.absent_sensors.contains(&"power"));
}
