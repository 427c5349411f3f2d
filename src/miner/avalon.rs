//! Canaan Avalon miners over the cgminer API (TCP 4028): the home models — Nano 3, Nano 3S,
//! Mini 3 (the heater) and Q — each read by its own rules, and any other Avalon with the
//! telemetry every cgminer reports.
//!
//! Identity from `version` (`MAC`, else `DNA`; a Nano 3 reports neither there, so the non-zero
//! `DNA` or hash-board `HDNA` of its `MM ID0` blob). Telemetry from `summary` (MH/s), `estats`
//! (the `MM ID0` blob: `GHSspd`, `TAvg`, `Fan1`, `FanR`, `WORKMODE`/`WORKLEVEL`, `SoftOFF`, and the
//! power in the model's own field — see `Model`) and `pools`. One model's slot table is never
//! applied to another: an Avalon this module does not know gets power only from an explicit
//! `WALLPOWER` and no controls, with one warning naming it.
//!
//! Control through `ascset`: `0,workmode,set,N` (119 ok, 118 info, 120 failed; "caling Don't
//! permit switch mode" while calibrating is a retry-later), `0,fan-spd,N` (15–100, −1 auto),
//! `0,softoff,1:<time>` / `0,softon,1:<time>` (Mini 3, Q), `0,reboot,0`, and `setpool` with the
//! web admin password.

use super::cgminer::{blob_get, blob_numbers, parse_bracket_blob, plain_as_json, CgminerClient};
use super::{Capabilities, Command, Identity, MinerError, PoolChoice, Reading, Telemetry};
use serde_json::Value;
use std::time::Duration;

/// The Nano's work modes by code.
pub const WORK_MODES: [&str; 3] = ["low", "medium", "high"];

/// Where a model reports the power it draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerField {
    /// One slot of `PS[…]`: the Nano 3's is 5 (92 W against `MPO[90]`), the Nano 3S's is 6
    /// (133 W against `MPO[133]`).
    PsSlot(usize),
    /// `WALLPOWER[…]`, else `PS` slot 6 (the output power in Canaan's layout), but only while
    /// the unit works: in standby the PSU's figure is not what it draws.
    WallPowerOrPs6,
    /// `WALLPOWER[…]` only: a model whose `PS` layout is not known.
    WallPowerOnly,
}

/// The Avalon models this module knows, and what each reports and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Model {
    Nano3,
    Nano3s,
    Mini3,
    Q,
    /// Any other Avalon (A10–A15 series, …), by the name it reports.
    Other(String),
}

impl Model {
    /// From `version`: `MODEL` where it is one we know, else `PROD` (the Nano 3 says
    /// "Avalonnano"/"nano3", the Nano 3S "Avalon Nano3s"/"Nano3s", the Q "Avalon Q"/"Q", the
    /// Mini 3 "Avalon Mini3").
    pub fn from_version(version: &Value) -> Model {
        let norm = |key: &str| -> String {
            version[key]
                .as_str()
                .unwrap_or("")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let (model, prod) = (norm("MODEL"), norm("PROD"));
        let known = |m: &str| match m {
            "nano3" | "avalonnano3" => Some(Model::Nano3),
            "nano3s" | "avalonnano3s" => Some(Model::Nano3s),
            "mini3" | "avalonmini3" => Some(Model::Mini3),
            "q" | "avalonq" => Some(Model::Q),
            _ => None,
        };
        known(&model)
            .or_else(|| known(&prod))
            .or_else(|| (prod == "avalonnano").then_some(Model::Nano3))
            .unwrap_or_else(|| {
                let name = version["PROD"]
                    .as_str()
                    .or_else(|| version["MODEL"].as_str())
                    .unwrap_or("Avalon")
                    .trim()
                    .to_string();
                Model::Other(if name.is_empty() {
                    "Avalon".into()
                } else {
                    name
                })
            })
    }

    /// The name shown in Home Assistant.
    pub fn name(&self) -> String {
        match self {
            Model::Nano3 => "Avalon Nano 3".into(),
            Model::Nano3s => "Avalon Nano 3S".into(),
            Model::Mini3 => "Avalon Mini 3".into(),
            Model::Q => "Avalon Q".into(),
            Model::Other(name) => name.clone(),
        }
    }

    pub fn power_field(&self) -> PowerField {
        match self {
            Model::Nano3 => PowerField::PsSlot(5),
            Model::Nano3s => PowerField::PsSlot(6),
            Model::Mini3 | Model::Q => PowerField::WallPowerOrPs6,
            Model::Other(_) => PowerField::WallPowerOnly,
        }
    }

    /// The work modes by `WORKMODE` code: the Nano's low/medium/high; the Mini 3 heater's
    /// heating/mining/night; the Q's eco/standard/super. None for models not known.
    pub fn work_modes(&self) -> &'static [&'static str] {
        match self {
            Model::Nano3 | Model::Nano3s => &WORK_MODES,
            Model::Mini3 => &["heating", "mining", "night"],
            Model::Q => &["eco", "standard", "super"],
            Model::Other(_) => &[],
        }
    }

    /// The work mode codes least power first, where that is not code order: the Mini 3 heats
    /// at 800 W (heating), mines at 850 W (mining) and runs quiet at 500 W (night).
    pub fn codes_by_power(&self) -> &'static [usize] {
        match self {
            Model::Mini3 => &[2, 0, 1],
            _ => &[],
        }
    }

    /// Whether the firmware takes `softoff`/`softon` (standby without a reboot).
    pub fn soft_off(&self) -> bool {
        matches!(self, Model::Mini3 | Model::Q)
    }

    /// Whether miner2mqtt may write to it at all (modes, fan, pools, restart).
    pub fn known(&self) -> bool {
        !matches!(self, Model::Other(_))
    }
}

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
            let version = v["VERSION"][0].clone();
            if let Model::Other(name) = Model::from_version(&version) {
                tracing::warn!(addr = %self.api.addr, model = %name, "this Avalon model is not one miner2mqtt knows: it gets generic cgminer telemetry (hashrate, temperature, fans, pools), power only from an explicit WALLPOWER field, and no controls");
            }
            self.version = Some(version);
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
            Command::SetMining(on) => {
                // Standby and wake-up take a time to act at; a few seconds from now, as the
                // vendor's app does.
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() + 5)
                    .unwrap_or(0);
                let what = if *on { "softon" } else { "softoff" };
                match self.ascset(&format!("0,{what},1:{at}")).await {
                    // The firmware may close the connection without a reply to softon.
                    Err(MinerError::Malformed { reason, .. })
                        if *on && reason.contains("empty reply") =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            }
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
    let model = Model::from_version(version);
    let s = &summary["SUMMARY"][0];
    let stats = &estats["STATS"][0];
    let blob_text = stats
        .get("MM ID0")
        .or_else(|| stats.get("MM ID0:Summary"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let blob = parse_bracket_blob(blob_text);
    let num = |key: &str| blob_get(&blob, key).and_then(|v| blob_numbers(v).first().copied());
    let soft_off = num("SoftOFF").map(|v| v > 0.0);
    let working = blob_get(&blob, "SYSTEMSTATU").is_none_or(|st| st.contains("In Work"))
        && soft_off != Some(true);
    let ps = blob_get(&blob, "PS").map(blob_numbers).unwrap_or_default();
    let wall = num("WALLPOWER").filter(|w| *w > 0.0);
    let power = match model.power_field() {
        PowerField::PsSlot(slot) => ps.get(slot).copied().filter(|w| *w > 0.0),
        PowerField::WallPowerOrPs6 => wall.or_else(|| {
            working
                .then(|| ps.get(6).copied())
                .flatten()
                .filter(|w| *w > 0.0)
        }),
        PowerField::WallPowerOnly => wall,
    };
    let modes = model.work_modes();
    let mode = num("WORKMODE").or_else(|| num("WORKLEVEL"));
    let active = pools["POOLS"].as_array().and_then(|l| {
        l.iter()
            .find(|p| p["Stratum Active"].as_bool() == Some(true) || p["Stratum Active"] == "true")
    });
    let slots = pool_slots(pools);
    // A temperature of 0 (an idle unit) or -273 (no sensor) is no reading.
    let temp = |key: &str| num(key).filter(|t| *t > 0.0);
    let telemetry = Telemetry {
        hashrate: num("GHSspd").or_else(|| s["MHS 5s"].as_f64().map(|m| m / 1000.0)),
        // The rate the firmware expects in its work mode; not while it stands by.
        expected_hashrate: num("GHSmm").filter(|g| *g > 0.0 && working),
        power,
        input_voltage: None,
        current: None,
        asic_temp: temp("TAvg").or_else(|| temp("TMax")),
        vr_temp: None,
        fan_speed: num("FanR"),
        fan_rpm: num("Fan1"),
        auto_fan: fan_manual.map(|m| m.is_none()),
        frequency: num("Freq").filter(|f| *f > 0.0),
        core_voltage: None,
        core_voltage_actual: None,
        shares_accepted: s["Accepted"].as_u64(),
        shares_rejected: s["Rejected"].as_u64(),
        // `DH`: the chips' failed nonces as a share of all they returned (Canaan's driver prints
        // it as b / (a + b) · 100 with a percent sign).
        error_percent: num("DH").filter(|e| (0.0..=100.0).contains(e)),
        best_difficulty: s["Best Share"].as_f64(),
        best_session_difficulty: None,
        uptime: s["Elapsed"]
            .as_u64()
            .or_else(|| num("Elapsed").map(|e| e as u64)),
        rssi: None,
        pool: active.and_then(|p| p["URL"].as_str()).map(pool_label),
        pool_user: active
            .and_then(|p| p["User"].as_str())
            .filter(|u| !u.is_empty())
            .map(str::to_string),
        firmware_overheat: None,
        paused: soft_off,
        work_mode: mode
            .and_then(|m| modes.get(m as usize))
            .map(|m| m.to_string()),
        extra: Default::default(),
    };
    let mac = version["MAC"]
        .as_str()
        .and_then(super::axeos::normalise_mac);
    // A serial: `DNA` in version, else the blob's own `DNA`, else the hash board's `HDNA` (the
    // Nano 3 reports no MAC or DNA in version and a zero DNA in its blob).
    let dna = [
        version["DNA"].as_str(),
        blob_get(&blob, "DNA"),
        blob_get(&blob, "HDNA"),
    ]
    .into_iter()
    .flatten()
    .map(str::trim)
    .find(|d| {
        !d.is_empty() && d.chars().all(|c| c.is_ascii_hexdigit()) && d.chars().any(|c| c != '0')
    })
    .map(|d| format!("dna{}", d.to_ascii_lowercase()));
    let firmware = version["LVERSION"]
        .as_str()
        .or_else(|| version["VERSION"].as_str())
        .or_else(|| blob_get(&blob, "LVer"))
        .map(str::to_string);
    let identity = Identity {
        hardware_id: mac.clone().or(dna),
        mac: mac.map(|hex| {
            hex.as_bytes()
                .chunks(2)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(":")
        }),
        manufacturer: "Canaan".into(),
        model: model.name(),
        hostname: None,
        firmware,
        asic_model: blob_get(&blob, "Core").map(str::to_string),
        asic_count: 1,
    };
    let known = model.known();
    let mut absent_sensors = vec!["vr_temp", "input_voltage", "current", "rssi"];
    // By whether the firmware prints the key at all, so a unit standing by keeps its sensors.
    for (key, sensor) in [("GHSmm", "expected_hashrate"), ("DH", "error_percent")] {
        if blob_get(&blob, key).is_none() {
            absent_sensors.push(sensor);
        }
    }
    if model.power_field() == PowerField::WallPowerOnly && wall.is_none() {
        absent_sensors.extend(["power", "efficiency"]);
    }
    let capabilities = Capabilities {
        frequency_options: None,
        core_voltage_options: None,
        // Fan control is known on the Nano and the Q (its `ascset help` lists fan-spd).
        fan_speed: matches!(model, Model::Nano3 | Model::Nano3s | Model::Q),
        fan_min: 15,
        auto_fan: matches!(model, Model::Nano3 | Model::Nano3s | Model::Q),
        restart: known,
        pause: model.soft_off(),
        pools: if can_select_pools && known {
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
        work_modes: modes.iter().map(|m| m.to_string()).collect(),
        work_modes_by_power: model
            .codes_by_power()
            .iter()
            .filter_map(|c| modes.get(*c).map(|m| m.to_string()))
            .collect(),
        absent_sensors,
        extra_sensors: Vec::new(),
    };
    Reading {
        identity,
        telemetry,
        capabilities,
    }
}
