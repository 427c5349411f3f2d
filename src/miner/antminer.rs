//! Antminer on stock bmminer/cgminer firmware, read-only, over the cgminer API (TCP 4028).
//!
//! `summary` is in GH/s (`GHS 5s`); `stats` holds a version header and then the miner's own
//! element: `total_rateideal` (expected GH/s), `chain_rateN` as strings (`""` for an empty chain),
//! `temp2_N` chip temperatures per chain, `fanN` rpm, `frequency`, and `miner_id`, which is the
//! identity (the API reports no MAC). Sensors only: nothing is ever written to an Antminer.

use super::cgminer::CgminerClient;
use super::{Capabilities, ExtraSensor, Identity, MinerError, Reading, Telemetry};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Polls one Antminer.
pub struct AntminerClient {
    api: CgminerClient,
    version: Option<Value>,
}

impl AntminerClient {
    pub fn new(addr: &str, timeout: Duration) -> AntminerClient {
        AntminerClient {
            api: CgminerClient::new(addr, timeout),
            version: None,
        }
    }

    pub async fn poll(&mut self) -> Result<Reading, MinerError> {
        if self.version.is_none() {
            let v = self.api.read("version", "VERSION").await?;
            self.version = Some(v["VERSION"][0].clone());
        }
        let summary = self.api.read("summary", "SUMMARY").await?;
        let stats = self.api.read("stats", "STATS").await?;
        let pools = self.api.read("pools", "POOLS").await?;
        Ok(parse_reading(
            self.version.as_ref().unwrap_or(&Value::Null),
            &summary,
            &stats,
            &pools,
        ))
    }
}

/// A number, or a string holding one (`chain_rateN` are strings).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Builds a reading from the replies; pure, so it is tested on the captured payloads.
pub fn parse_reading(version: &Value, summary: &Value, stats: &Value, pools: &Value) -> Reading {
    let s = &summary["SUMMARY"][0];
    // The element with the miner's data is the one with an ID (the first is a version header).
    let st = stats["STATS"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e.get("ID").is_some()))
        .cloned()
        .unwrap_or(Value::Null);
    let mut extra = BTreeMap::new();
    let mut extra_sensors = Vec::new();
    let mut chip_max: Option<f64> = None;
    for chain in 1..=4 {
        let rate = number(&st[format!("chain_rate{chain}")]);
        // A chain that is absent reports "" and zero hashing chips.
        if rate.is_none() && st[format!("chain_acn{chain}")].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let temp = number(&st[format!("temp2_{chain}")]).filter(|t| *t > 0.0);
        chip_max = match (chip_max, temp) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        extra.insert(format!("chain{chain}_hashrate"), rate);
        extra.insert(format!("chain{chain}_temp"), temp);
        extra_sensors.push(ExtraSensor {
            key: format!("chain{chain}_hashrate"),
            name: format!("Chain {chain} hashrate"),
            unit: Some("GH/s"),
            device_class: None,
        });
        extra_sensors.push(ExtraSensor {
            key: format!("chain{chain}_temp"),
            name: format!("Chain {chain} chip temperature"),
            unit: Some("°C"),
            device_class: Some("temperature"),
        });
    }
    let fans = st["fan_num"].as_u64().unwrap_or(0).min(8);
    let readings: Vec<Option<f64>> = (1..=fans).map(|f| number(&st[format!("fan{f}")])).collect();
    // A hydro or immersion unit reports its fan headers, all at 0, while it hashes: it has no
    // fans. (On an air-cooled unit one fan at 0 among spinning ones is a stopped fan, and stays.)
    let hashing = number(&s["GHS 5s"]).is_some_and(|h| h > 0.0);
    let fanless = hashing && readings.iter().all(|r| r.unwrap_or(0.0) == 0.0);
    let mut fan_rpms = Vec::new();
    for (fan, rpm) in (1..=fans).zip(readings) {
        if fanless {
            break;
        }
        fan_rpms.extend(rpm);
        if fan > 1 {
            extra.insert(format!("fan{fan}_rpm"), rpm);
            extra_sensors.push(ExtraSensor {
                key: format!("fan{fan}_rpm"),
                name: format!("Fan {fan} RPM"),
                unit: Some("rpm"),
                device_class: None,
            });
        }
    }
    let active = pools["POOLS"].as_array().and_then(|l| {
        l.iter()
            .find(|p| p["Stratum Active"].as_bool() == Some(true))
    });
    let telemetry = Telemetry {
        hashrate: number(&s["GHS 5s"]).or_else(|| number(&st["GHS 5s"])),
        expected_hashrate: number(&st["total_rateideal"]),
        fan_rpm: fan_rpms.first().copied(),
        asic_temp: chip_max,
        frequency: number(&st["frequency"])
            .or_else(|| number(&st["total_freqavg"]))
            .filter(|f| *f > 0.0),
        shares_accepted: s["Accepted"].as_u64(),
        shares_rejected: s["Rejected"].as_u64(),
        error_percent: number(&s["Device Hardware%"]).filter(|e| (0.0..=100.0).contains(e)),
        best_difficulty: number(&s["Best Share"]),
        uptime: s["Elapsed"].as_u64(),
        pool: active
            .and_then(|p| p["URL"].as_str())
            .map(|u| u.trim_start_matches("stratum+tcp://").to_string()),
        pool_user: active.and_then(|p| p["User"].as_str()).map(str::to_string),
        extra,
        ..Telemetry::default()
    };
    let miner_id = st["miner_id"].as_str().filter(|id| !id.is_empty());
    let identity = Identity {
        hardware_id: miner_id.map(|id| format!("antminer{}", id.to_ascii_lowercase())),
        mac: None,
        manufacturer: "Bitmain".into(),
        model: version["Type"].as_str().unwrap_or("Antminer").to_string(),
        hostname: None,
        firmware: version["Miner"]
            .as_str()
            .or_else(|| st["miner_version"].as_str())
            .map(str::to_string),
        asic_model: None,
        asic_count: st["total_acn"].as_u64().unwrap_or(0) as u32,
    };
    let mut absent_sensors = vec![
        "power",
        "efficiency",
        "vr_temp",
        "input_voltage",
        "current",
        "rssi",
        "fan_speed",
    ];
    if fan_rpms.is_empty() {
        absent_sensors.push("fan_rpm");
    }
    if telemetry.error_percent.is_none() {
        absent_sensors.push("error_percent");
    }
    let capabilities = Capabilities {
        absent_sensors,
        extra_sensors,
        ..Capabilities::default()
    };
    Reading {
        identity,
        telemetry,
        capabilities,
    }
}
