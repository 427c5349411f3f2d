//! Avalon Nano 3 and Nano 3S over the cgminer API (TCP 4028).
//!
//! Identity from `version` (`MAC`, else `DNA`); telemetry from `summary` (MH/s), `estats` (the
//! `MM ID0` blob: `GHSspd` real-time GH/s, `PS[…]` power — slot 5 on the Nano 3, slot 6 on the
//! Nano 3S —, `TAvg`, `Fan1`, `FanR`, `WORKMODE` or, on the Nano 3, `WORKLEVEL`; `ITemp[-273]`
//! means no reading) and `pools`. Control through `ascset`: `0,workmode,set,N` (119 ok, 118 info,
//! 120 failed; "caling Don't permit switch mode" while calibrating is a retry-later),
//! `0,fan-spd,N` (15–100, −1 auto), `0,reboot,0`, and `setpool` with the web admin password.
//! These devices have no `addpool`, `restart` or `softoff`: nothing here offers them.

use super::cgminer::{blob_get, blob_numbers, parse_bracket_blob, plain_as_json, CgminerClient};
use super::{Capabilities, Command, Identity, MinerError, PoolChoice, Reading, Telemetry};
use serde_json::Value;
use std::time::Duration;

/// The work modes by code.
pub const WORK_MODES: [&str; 3] = ["low", "medium", "high"];

/// Talks to one Avalon Nano.
pub struct AvalonClient {
    api: CgminerClient,
    admin_password: Option<String>,
    version: Option<Value>,
    /// (url, user) per pool slot, from the last poll.
    pools: Vec<(String, String)>,
    /// The fan duty last set by us; the firmware does not report manual vs auto.
    fan_manual: Option<Option<u8>>,
    last_fan_pct: Option<u8>,
    /// Whether `summary+estats` works (unknown until tried).
    joined: Option<bool>,
    /// Whether the JSON form is unusable and the plain form works.
    plain: bool,
}

impl AvalonClient {
    /// `addr` is `host:port` (port 4028 unless the miner was changed).
    pub fn new(addr: &str, timeout: Duration, admin_password: Option<String>) -> AvalonClient {
        AvalonClient {
            api: CgminerClient::new(addr, timeout),
            admin_password,
            version: None,
            pools: Vec::new(),
            fan_manual: None,
            last_fan_pct: None,
            joined: None,
            plain: false,
        }
    }

    pub async fn poll(&mut self) -> Result<Reading, MinerError> {
        if self.version.is_none() {
            let v = self.read("version", "VERSION").await?;
            self.version = Some(v["VERSION"][0].clone());
        }
        let (summary, estats) = self.summary_and_estats().await?;
        let pools = self.read("pools", "POOLS").await?;
        let version = self.version.clone().unwrap_or(Value::Null);
        let reading = parse_reading(
            &version,
            &summary,
            &estats,
            &pools,
            self.fan_manual,
            self.admin_password.is_some(),
        );
        self.pools = pool_slots(&pools);
        self.last_fan_pct = reading.telemetry.fan_speed.map(|p| p.round() as u8);
        Ok(reading)
    }

    /// `summary+estats` in one connection where the firmware joins commands, else two.
    async fn summary_and_estats(&mut self) -> Result<(Value, Value), MinerError> {
        if self.joined != Some(false) && !self.plain {
            match self.api.request("summary+estats", None).await {
                Ok(v) if v.get("summary").is_some() || v.get("estats").is_some() => {
                    // The firmware joins; an error inside either part is this poll's error.
                    self.joined = Some(true);
                    let mut parts = self
                        .api
                        .joined_parts(&v, &[("summary", "SUMMARY"), ("estats", "STATS")])?
                        .into_iter();
                    let summary = parts.next().unwrap_or_default();
                    let estats = parts.next().unwrap_or_default();
                    return Ok((summary, estats));
                }
                // Not joined (an error status for the join itself, or nothing readable): this
                // firmware does not join, unless it joined before (then it is this poll's error).
                Ok(_) | Err(MinerError::Malformed { .. } | MinerError::Answered { .. })
                    if self.joined != Some(true) =>
                {
                    self.joined = Some(false)
                }
                Ok(_) => {
                    return Err(MinerError::Malformed {
                        url: format!("cgminer://{}/summary+estats", self.api.addr),
                        reason: "the joined reply holds neither summary nor estats".into(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok((
            self.read("summary", "SUMMARY").await?,
            self.read("estats", "STATS").await?,
        ))
    }

    /// A read command as JSON, falling back to the plain form when the JSON reply is beyond
    /// repair (and staying with it).
    async fn read(&mut self, command: &str, key: &str) -> Result<Value, MinerError> {
        if self.plain {
            let sections = self.api.request_plain(command, None).await?;
            return Ok(plain_as_json(&sections, key));
        }
        match self.api.read(command, key).await {
            Ok(v) => Ok(v),
            Err(json_error @ MinerError::Malformed { .. }) => {
                // Only a plain reply that works switches this miner to the plain form.
                match self.api.request_plain(command, None).await {
                    Ok(sections) => {
                        tracing::info!(addr = %self.api.addr, command, "JSON replies are unreadable; using the plain form");
                        self.plain = true;
                        Ok(plain_as_json(&sections, key))
                    }
                    Err(_) => Err(json_error),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn execute(&mut self, command: &Command) -> Result<(), MinerError> {
        match command {
            Command::SetWorkMode(m) => self.ascset(&format!("0,workmode,set,{m}")).await,
            Command::SetFanSpeed(p) => {
                self.ascset(&format!("0,fan-spd,{p}")).await?;
                self.fan_manual = Some(Some(*p));
                Ok(())
            }
            Command::SetAutoFan(true) => {
                self.ascset("0,fan-spd,-1").await?;
                self.fan_manual = Some(None);
                Ok(())
            }
            Command::SetAutoFan(false) => {
                // Manual at the duty the firmware runs now.
                let p = self.last_fan_pct.unwrap_or(100).clamp(15, 100);
                self.ascset(&format!("0,fan-spd,{p}")).await?;
                self.fan_manual = Some(Some(p));
                Ok(())
            }
            Command::Restart => self.ascset("0,reboot,0").await,
            Command::SelectPool(label) => self.select_pool(label).await,
            other => Err(MinerError::Unsupported {
                what: other.describe(),
            }),
        }
    }

    /// Puts the chosen slot's pool first (swapping it with slot 0) and reboots: the firmware
    /// mines on the first pool that answers. Pool passwords cannot be read back; `x` is written.
    async fn select_pool(&mut self, label: &str) -> Result<(), MinerError> {
        let password = self
            .admin_password
            .clone()
            .ok_or_else(|| MinerError::Unsupported {
                what: "pool selection without admin_password in the config".into(),
            })?;
        let index = self
            .pools
            .iter()
            .position(|(url, _)| pool_label(url) == label)
            .ok_or_else(|| MinerError::Unsupported {
                what: format!("pool {label:?}"),
            })?;
        if index != 0 {
            let (first, chosen) = (self.pools[0].clone(), self.pools[index].clone());
            for (slot, (url, user)) in [(0, &chosen), (index, &first)] {
                let param = format!("admin,{password},{slot},{url},{user},x");
                let reply = self.api.request("setpool", Some(&param)).await?;
                check_set(&self.api, "setpool", &reply)?;
            }
        }
        self.ascset("0,reboot,0").await
    }

    async fn ascset(&self, parameter: &str) -> Result<(), MinerError> {
        let reply = self.api.request("ascset", Some(parameter)).await?;
        check_set(&self.api, "ascset", &reply)
    }
}

/// 119 is success; 118 is information (success unless it says the device is calibrating);
/// 120 or an error status is a failure.
fn check_set(api: &CgminerClient, command: &str, reply: &Value) -> Result<(), MinerError> {
    let status = &reply["STATUS"][0];
    let code = status["Code"].as_i64().unwrap_or(0);
    let msg = status["Msg"].as_str().unwrap_or("").to_string();
    let url = format!("cgminer://{}/{command}", api.addr);
    if msg.contains("caling") || msg.contains("permit") {
        return Err(MinerError::Busy {
            url,
            reason: "it is calibrating after a mode change and does not permit another switch yet"
                .into(),
        });
    }
    match code {
        119 | 118 => Ok(()),
        _ => Err(MinerError::Refused { url, body: msg }),
    }
}

fn pool_label(url: &str) -> String {
    url.trim_start_matches("stratum+tcp://")
        .trim_start_matches("stratum+ssl://")
        .to_string()
}

fn pool_slots(pools: &Value) -> Vec<(String, String)> {
    pools["POOLS"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    (
                        p["URL"].as_str().unwrap_or("").to_string(),
                        p["User"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Builds a reading from the replies; pure, so it is tested on the captured payloads.
pub fn parse_reading(
    version: &Value,
    summary: &Value,
    estats: &Value,
    pools: &Value,
    fan_manual: Option<Option<u8>>,
    can_select_pools: bool,
) -> Reading {
    let s = &summary["SUMMARY"][0];
    let stats = &estats["STATS"][0];
    let blob_text = stats
        .get("MM ID0")
        .or_else(|| stats.get("MM ID0:Summary"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let blob = parse_bracket_blob(blob_text);
    let num = |key: &str| blob_get(&blob, key).and_then(|v| blob_numbers(v).first().copied());
    let model = version["MODEL"].as_str().unwrap_or("").to_string();
    let is_3s = model.to_ascii_lowercase().ends_with('s');
    let power = blob_get(&blob, "PS")
        .map(blob_numbers)
        .and_then(|ps| ps.get(if is_3s { 6 } else { 5 }).copied())
        .filter(|w| *w > 0.0);
    let mode = num("WORKMODE").or_else(|| num("WORKLEVEL"));
    let active = pools["POOLS"].as_array().and_then(|l| {
        l.iter()
            .find(|p| p["Stratum Active"].as_bool() == Some(true) || p["Stratum Active"] == "true")
    });
    let slots = pool_slots(pools);
    let telemetry = Telemetry {
        hashrate: num("GHSspd").or_else(|| s["MHS 5s"].as_f64().map(|m| m / 1000.0)),
        expected_hashrate: None,
        power,
        input_voltage: None,
        current: None,
        asic_temp: num("TAvg").filter(|t| *t > -273.0),
        vr_temp: None,
        fan_speed: num("FanR"),
        fan_rpm: num("Fan1"),
        auto_fan: fan_manual.map(|m| m.is_none()),
        frequency: num("Freq").filter(|f| *f > 0.0),
        core_voltage: None,
        core_voltage_actual: None,
        shares_accepted: s["Accepted"].as_u64(),
        shares_rejected: s["Rejected"].as_u64(),
        best_difficulty: s["Best Share"].as_f64(),
        best_session_difficulty: None,
        uptime: s["Elapsed"].as_u64(),
        rssi: None,
        pool: active.and_then(|p| p["URL"].as_str()).map(pool_label),
        pool_user: active
            .and_then(|p| p["User"].as_str())
            .filter(|u| !u.is_empty())
            .map(str::to_string),
        firmware_overheat: None,
        paused: num("SoftOFF").map(|v| v > 0.0),
        work_mode: mode
            .and_then(|m| WORK_MODES.get(m as usize))
            .map(|m| m.to_string()),
        extra: Default::default(),
    };
    let mac = version["MAC"]
        .as_str()
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let hardware_id = mac
        .as_deref()
        .and_then(super::axeos::normalise_mac)
        .or_else(|| {
            version["DNA"]
                .as_str()
                .filter(|d| d.chars().all(|c| c.is_ascii_hexdigit()) && !d.is_empty())
                .map(|d| format!("dna{d}"))
        });
    let identity = Identity {
        hardware_id,
        mac: mac
            .as_deref()
            .and_then(super::axeos::normalise_mac)
            .map(|hex| {
                hex.as_bytes()
                    .chunks(2)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(":")
            }),
        manufacturer: "Canaan".into(),
        model: version["PROD"].as_str().unwrap_or("Avalon").to_string(),
        hostname: None,
        firmware: version["LVERSION"].as_str().map(str::to_string),
        asic_model: blob_get(&blob, "Core").map(str::to_string),
        asic_count: 1,
    };
    let capabilities = Capabilities {
        frequency_options: None,
        core_voltage_options: None,
        fan_speed: true,
        fan_min: 15,
        auto_fan: true,
        restart: true,
        pause: false,
        pools: if can_select_pools {
            slots
                .iter()
                .filter(|(u, _)| !u.is_empty())
                .map(|(u, _)| PoolChoice {
                    label: pool_label(u),
                })
                .collect()
        } else {
            Vec::new()
        },
        work_modes: WORK_MODES.iter().map(|m| m.to_string()).collect(),
        absent_sensors: vec![
            "expected_hashrate",
            "vr_temp",
            "input_voltage",
            "current",
            "rssi",
        ],
        extra_sensors: Vec::new(),
    };
    Reading {
        identity,
        telemetry,
        capabilities,
    }
}
