//! Bitaxe and NerdQaxe++ over the ESP-Miner HTTP API.
//!
//! `GET /api/system/info` is polled; `GET /api/system/asic` is read once for the firmware's
//! frequency and voltage options; `PATCH /api/system` writes settings (200 with an empty body on
//! success, 400 "Wrong API input" when nothing was saved); `POST /api/system/restart`, and on
//! v2.14+ `POST /api/system/pause` / `resume`.
//!
//! The generations differ: up to v2.10 `bestDiff` is a string like `"4.29G"` and manual fan duty
//! is written as `fanspeed`; v2.11 adds `manualFanSpeed`; v2.15 replaces the flat stratum fields
//! with `pools[]` and `primaryPoolIndex`; NerdQaxe++ firmware reports `asicTemps[]`, `fanrpm2`,
//! `autofanspeed: 2` for its PID loop, booleans where AxeOS uses 0/1, and may require an `X-TOTP`
//! header on writes.

use super::{Capabilities, Command, Identity, MinerError, PoolChoice, Reading, Telemetry};
use serde_json::{Map, Value};
use std::time::Duration;

/// Which API shape a device speaks; decides how writes are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Generation {
    /// Up to v2.10: `fanspeed` is the manual fan write.
    Legacy,
    /// v2.11–v2.13: `manualFanSpeed`.
    V2_11,
    /// v2.14: pause and resume.
    V2_14,
    /// v2.15+: `pools[]` and `primaryPoolIndex`; flat stratum fields are ignored on write.
    V2_15,
    /// ESP-Miner-NerdQAxePlus.
    NerdQaxe,
}

/// The parsed `/api/system/info`, with what the writer needs to know beside the telemetry.
#[derive(Debug, Clone)]
pub struct SystemInfo {
    pub reading: Reading,
    pub generation: Generation,
    /// v2.15 pool ids by label, in the device's order.
    pub pool_ids: Vec<(String, i64)>,
}

/// Parses `/api/system/info` as sent by any supported generation.
pub fn parse_system_info(body: &[u8]) -> Result<SystemInfo, String> {
    let fields = Fields::parse(body)?;
    let obj = &fields;
    if !obj.contains_key("hashRate") && !obj.contains_key("ASICModel") {
        return Err("no hashRate or ASICModel: this is not an ESP-Miner system info".into());
    }
    // Each field is parsed once: this runs on every poll.
    let device_model = string(obj, "deviceModel");
    let firmware = string(obj, "version");
    let reported_count = number(obj, "asicCount").map(|n| n as u32);
    let generation = detect_generation(obj, device_model.as_deref(), firmware.as_deref());

    let asic_model = string(obj, "ASICModel");
    let board = string(obj, "boardVersion");
    let family = if generation == Generation::NerdQaxe {
        None
    } else {
        bitaxe_family(
            device_model.as_deref(),
            board.as_deref(),
            asic_model.as_deref(),
            reported_count,
        )
    };
    // The firmware's own count where it reports one; else what the board is known to carry.
    let asic_count = reported_count
        .or(family.map(|(_, chips)| chips))
        .unwrap_or(1)
        .max(1);
    let small_cores = number(obj, "smallCoreCount");
    let frequency = positive(obj, "frequency");

    let expected_hashrate = number(obj, "expectedHashrate").or_else(|| {
        // ESP-Miner's own formula, for firmware that does not report it.
        Some(frequency? * small_cores? * asic_count as f64 / 1000.0)
    });

    // Temperatures of 0 or below are the firmware's way of saying "no sensor".
    let temp = |key: &str| number(obj, key).filter(|t| *t > 0.0);

    let current = number(obj, "currentA").or_else(|| number(obj, "current").map(|ma| ma / 1000.0));

    let using_fallback = boolish(obj, "isUsingFallbackStratum")
        .or_else(|| {
            obj.get("stratum")
                .and_then(|s| s.get("usingFallback").and_then(Value::as_bool))
        })
        .unwrap_or(false);

    let (pool, pool_user, pool_ids) = pools(obj, generation, using_fallback);

    let telemetry = Telemetry {
        hashrate: number(obj, "hashRate"),
        expected_hashrate,
        power: number(obj, "power"),
        input_voltage: positive(obj, "voltage").map(|mv| mv / 1000.0),
        current,
        asic_temp: temp("temp"),
        vr_temp: temp("vrTemp"),
        fan_speed: number(obj, "fanspeed"),
        fan_rpm: number(obj, "fanrpm").or_else(|| number(obj, "fanSpeed")),
        auto_fan: number(obj, "autofanspeed").map(|n| n != 0.0),
        frequency,
        core_voltage: positive(obj, "coreVoltage"),
        core_voltage_actual: positive(obj, "coreVoltageActual"),
        shares_accepted: number(obj, "sharesAccepted").map(|n| n as u64),
        shares_rejected: number(obj, "sharesRejected").map(|n| n as u64),
        error_percent: number(obj, "errorPercentage").filter(|e| (0.0..=100.0).contains(e)),
        best_difficulty: obj.get("bestDiff").as_ref().and_then(difficulty),
        best_session_difficulty: obj.get("bestSessionDiff").as_ref().and_then(difficulty),
        uptime: number(obj, "uptimeSeconds").map(|n| n as u64),
        rssi: number(obj, "wifiRSSI"),
        pool,
        pool_user,
        firmware_overheat: boolish(obj, "overheat_mode"),
        paused: boolish(obj, "miningPaused").or_else(|| boolish(obj, "shutdown")),
        work_mode: None,
        extra: Default::default(),
    };

    let mac = string(obj, "macAddr");
    let hardware_id = mac.as_deref().and_then(normalise_mac);
    let manufacturer;
    let model;
    if generation == Generation::NerdQaxe {
        manufacturer = "NerdQAxe".to_string();
        model = device_model.unwrap_or_else(|| "NerdQAxe".into());
    } else {
        manufacturer = "Bitaxe".to_string();
        let family = family.map_or("Bitaxe", |(name, _)| name);
        model = match &board {
            Some(board) => format!("{family} {board}"),
            None => family.to_string(),
        };
    }

    let mut capabilities = Capabilities {
        frequency_options: None,
        core_voltage_options: None,
        fan_speed: true,
        fan_min: 0,
        auto_fan: true,
        restart: true,
        pause: generation >= Generation::V2_14 && generation != Generation::NerdQaxe,
        pools: Vec::new(),
        work_modes: Vec::new(),
        work_modes_by_power: Vec::new(),
        absent_sensors: Vec::new(),
        extra_sensors: Vec::new(),
    };
    if telemetry.error_percent.is_none() {
        // Firmware before v2.11 does not count its errors.
        capabilities.absent_sensors.push("error_percent");
    }
    if generation == Generation::V2_15 {
        capabilities.pools = pool_ids
            .iter()
            .map(|(label, _)| PoolChoice {
                label: label.clone(),
            })
            .collect();
    }

    Ok(SystemInfo {
        reading: Reading {
            identity: Identity {
                hardware_id,
                mac: mac.filter(|m| normalise_mac(m).is_some()),
                manufacturer,
                model,
                hostname: string(obj, "hostname"),
                firmware,
                asic_model,
                asic_count,
            },
            telemetry,
            capabilities,
        },
        generation,
        pool_ids,
    })
}

/// The Bitaxe family and the chips its board carries, from what each firmware generation
/// reports: `deviceModel` (v2.5+: "ultra", "hexultra", "gammaturbo", …), else `boardVersion`
/// (whose first digit is the family: 1xx and "2.2" Max, 2xx and "0.11" Ultra, 3xx Ultra Hex,
/// 4xx Supra, 6xx Gamma with 650 the Gamma Duo, 7xx Supra Hex, 8xx Gamma Turbo — AxeOS's own
/// web UI reads it the same way), else the ASIC model and `asicCount`.
pub fn bitaxe_family(
    device_model: Option<&str>,
    board: Option<&str>,
    asic: Option<&str>,
    asic_count: Option<u32>,
) -> Option<(&'static str, u32)> {
    let by_model = device_model.and_then(|m| {
        let m: String = m
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match m.as_str() {
            "max" => ("Max", 1),
            "ultra" => ("Ultra", 1),
            "hexultra" | "ultrahex" | "hex" => ("Ultra Hex", 6),
            "supra" => ("Supra", 1),
            "suprahex" | "hexsupra" => ("Supra Hex", 6),
            "gamma" => ("Gamma", 1),
            "gammaduo" | "duo" => ("Gamma Duo", 2),
            "gammaturbo" | "gt" => ("Gamma Turbo", 2),
            _ => return None,
        })
    });
    let by_board = || {
        let b = board?.trim();
        match b {
            "2.2" => return Some(("Max", 1)),
            "0.11" => return Some(("Ultra", 1)),
            "650" => return Some(("Gamma Duo", 2)),
            _ => {}
        }
        if b.len() < 3 || !b.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some(match b.as_bytes()[0] {
            b'1' => ("Max", 1),
            b'2' => ("Ultra", 1),
            b'3' => ("Ultra Hex", 6),
            b'4' => ("Supra", 1),
            b'6' => ("Gamma", 1),
            b'7' => ("Supra Hex", 6),
            b'8' => ("Gamma Turbo", 2),
            _ => return None,
        })
    };
    let by_asic = || {
        let many = asic_count.unwrap_or(1) > 1;
        Some(match (asic?.trim().to_ascii_uppercase().as_str(), many) {
            ("BM1397", _) => ("Max", 1),
            ("BM1366", false) => ("Ultra", 1),
            ("BM1366", true) => ("Ultra Hex", 6),
            ("BM1368", false) => ("Supra", 1),
            ("BM1368", true) => ("Supra Hex", 6),
            ("BM1370", false) => ("Gamma", 1),
            ("BM1370", true) => ("Gamma Turbo", 2),
            _ => return None,
        })
    };
    by_model.or_else(by_board).or_else(by_asic)
}

/// The firmware's suggested clock values from `/api/system/asic`.
#[derive(Debug, Clone, PartialEq)]
pub struct AsicOptions {
    pub frequency_options: Vec<u32>,
    pub voltage_options: Vec<u32>,
}

/// Parses `/api/system/asic`.
pub fn parse_asic_info(body: &[u8]) -> Result<AsicOptions, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = |key: &str| -> Result<Vec<u32>, String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("missing {key}"))?
            .iter()
            .map(|v| {
                v.as_f64()
                    .filter(|n| *n > 0.0)
                    .map(|n| n.round() as u32)
                    .ok_or_else(|| format!("{key} holds {v}, not a positive number"))
            })
            .collect()
    };
    Ok(AsicOptions {
        frequency_options: list("frequencyOptions")?,
        voltage_options: list("voltageOptions")?,
    })
}

fn detect_generation(
    obj: &Fields,
    device_model: Option<&str>,
    version: Option<&str>,
) -> Generation {
    let is_nerd = device_model
        .map(|m| m.to_ascii_lowercase().contains("nerd"))
        .unwrap_or(false)
        || obj.contains_key("asicTemps");
    if is_nerd {
        return Generation::NerdQaxe;
    }
    if obj.raw("pools").is_some_and(|raw| raw.starts_with('[')) {
        return Generation::V2_15;
    }
    match version.and_then(version_number) {
        Some((2, minor)) if minor >= 15 => Generation::V2_15,
        Some((2, 14)) => Generation::V2_14,
        Some((2, minor)) if minor >= 11 => Generation::V2_11,
        Some((major, _)) if major > 2 => Generation::V2_15,
        Some(_) => Generation::Legacy,
        None if obj.contains_key("manualFanSpeed") => Generation::V2_11,
        None => Generation::Legacy,
    }
}

/// `"v2.11.0b6"` → (2, 11); `"2.7.0-TCH-All-In-One"` → (2, 7).
fn version_number(version: &str) -> Option<(u32, u32)> {
    let v = version.trim().trim_start_matches(['v', 'V']);
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Returns (active pool, its user, v2.15 pool labels with ids).
fn pools(
    obj: &Fields,
    generation: Generation,
    using_fallback: bool,
) -> (Option<String>, Option<String>, Vec<(String, i64)>) {
    if generation == Generation::V2_15 {
        if let Some(Value::Array(list)) = obj.get("pools") {
            let mut labels: Vec<(String, i64)> = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let Some(url) = p.get("stratumURL").and_then(Value::as_str) else {
                    continue;
                };
                if url.is_empty() {
                    continue;
                }
                let id = p.get("id").and_then(Value::as_i64).unwrap_or(i as i64);
                let port = p.get("stratumPort").and_then(Value::as_f64);
                let mut label = match port {
                    Some(port) => format!("{url}:{}", port as u64),
                    None => url.to_string(),
                };
                if labels.iter().any(|(l, _)| *l == label) {
                    label = format!("{label} #{id}");
                }
                labels.push((label, id));
            }
            let key = if using_fallback {
                "secondaryPoolIndex"
            } else {
                "primaryPoolIndex"
            };
            let active_id = number(obj, key).map(|n| n as i64);
            let active = active_id.and_then(|id| {
                list.iter()
                    .enumerate()
                    .find(|(i, p)| p.get("id").and_then(Value::as_i64).unwrap_or(*i as i64) == id)
                    .map(|(_, p)| p)
            });
            let label = active_id.and_then(|id| {
                labels
                    .iter()
                    .find(|(_, i)| *i == id)
                    .map(|(l, _)| l.clone())
            });
            let user = active
                .and_then(|p| p.get("stratumUser"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            return (label, user, labels);
        }
    }
    let prefix = if using_fallback {
        "fallbackStratum"
    } else {
        "stratum"
    };
    let url = string(obj, &format!("{prefix}URL"));
    let port = number(obj, &format!("{prefix}Port"));
    let pool = url.map(|u| match port {
        Some(p) => format!("{u}:{}", p as u64),
        None => u,
    });
    (pool, string(obj, &format!("{prefix}User")), Vec::new())
}

/// A number, or a string holding one (some forks quote numbers).
fn number(obj: &Fields, key: &str) -> Option<f64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn positive(obj: &Fields, key: &str) -> Option<f64> {
    number(obj, key).filter(|n| *n > 0.0)
}

/// 0/1 or true/false.
fn boolish(obj: &Fields, key: &str) -> Option<bool> {
    match obj.get(key)? {
        Value::Bool(b) => Some(b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        _ => None,
    }
}

/// A non-empty string.
fn string(obj: &Fields, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_string),
        _ => None,
    }
}

/// `/api/system/info`'s top-level fields, each kept as its raw JSON text until it is read:
/// building a tree of all ~80 fields (with the nested pool and hash-rate arrays) on every poll
/// was most of the parse's cost, and about forty are read.
struct Fields<'a>(std::collections::HashMap<Key<'a>, &'a serde_json::value::RawValue>);

impl<'a> Fields<'a> {
    fn parse(body: &'a [u8]) -> Result<Fields<'a>, String> {
        let text = std::str::from_utf8(body).map_err(|e| format!("not JSON: {e}"))?;
        match serde_json::from_str(text) {
            Ok(map) => Ok(Fields(map)),
            Err(e) if e.is_data() => Err("expected a JSON object".into()),
            Err(e) => Err(format!("not JSON: {e}")),
        }
    }

    fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The field parsed, when present and valid.
    fn get(&self, key: &str) -> Option<Value> {
        serde_json::from_str(self.raw(key)?).ok()
    }

    /// The field's JSON text, unparsed.
    fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|raw| raw.get())
    }
}

/// A field name, borrowed from the reply unless it holds an escape.
#[derive(PartialEq, Eq, Hash)]
struct Key<'a>(std::borrow::Cow<'a, str>);

impl std::borrow::Borrow<str> for Key<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// A difficulty as a number, or as the string forms `"13M"`, `"572.14 M"`, `"483k"`, `"0"`.
pub fn difficulty(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => super::si_number(s),
        _ => None,
    }
}

/// `"10:F5:12:33:BB:F0"` → `"10f51233bbf0"`; redacted or blank MACs give `None`.
pub fn normalise_mac(mac: &str) -> Option<String> {
    let hex: String = mac
        .chars()
        .filter(|c| *c != ':' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) && hex != "000000000000")
        .then_some(hex)
}

/// A TOTP generator for the NerdQaxe `X-TOTP` header from the base32 secret the device shows.
pub fn totp(secret: &str) -> Result<totp_rs::TOTP, String> {
    let bytes = totp_rs::Secret::Encoded(secret.trim().replace(' ', "").to_ascii_uppercase())
        .to_bytes()
        .map_err(|e| format!("{e:?}"))?;
    Ok(totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
    ))
}

/// A pool the user configured for firmware without `pools[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredPool {
    pub url: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl ConfiguredPool {
    pub fn label(&self) -> String {
        format!("{}:{}", self.url, self.port)
    }
}

/// The largest reply read from a device (a system info is a few kilobytes).
const MAX_BODY: usize = 1 << 20;

/// Talks to one ESP-Miner device.
pub struct AxeOsClient {
    http: reqwest::Client,
    /// `host:port` for the connection.
    authority: String,
    /// The `Host` header.
    host_header: String,
    base: String,
    timeout: Duration,
    retries: u32,
    totp: Option<totp_rs::TOTP>,
    pools: Vec<ConfiguredPool>,
    asic_options: Option<AsicOptions>,
    /// The generation and v2.15 pool ids from the last poll: how writes are spelled.
    generation: Option<Generation>,
    pool_ids: Vec<(String, i64)>,
}

impl AxeOsClient {
    /// `host` may carry a port (`192.168.1.50:8080`). `http` is the process's one client.
    pub fn new(
        http: reqwest::Client,
        host: &str,
        timeout: Duration,
        retries: u32,
        totp: Option<totp_rs::TOTP>,
        pools: Vec<ConfiguredPool>,
    ) -> Self {
        // `host:port` to connect to (80 unless given) and the Host header as the user wrote it.
        let authority = match host.rsplit_once(':') {
            Some((_, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
                host.to_string()
            }
            _ => format!("{host}:80"),
        };
        AxeOsClient {
            http,
            authority,
            host_header: host.to_string(),
            base: format!("http://{host}"),
            timeout,
            retries,
            totp,
            pools,
            asic_options: None,
            generation: None,
            pool_ids: Vec::new(),
        }
    }

    pub async fn poll(&mut self) -> Result<Reading, MinerError> {
        let url = format!("{}/api/system/info", self.base);
        let body = self.get_with_retry(&url).await?;
        let info = parse_system_info(&body).map_err(|reason| MinerError::Malformed {
            url: url.clone(),
            reason,
        })?;
        if self.asic_options.is_none() {
            let asic_url = format!("{}/api/system/asic", self.base);
            // Older firmware has no /asic: fall back to the profile's ranges.
            match self.get_with_retry(&asic_url).await {
                Ok(body) => match parse_asic_info(&body) {
                    Ok(opts) => self.asic_options = Some(opts),
                    Err(reason) => {
                        tracing::debug!(url = %asic_url, %reason, "no usable ASIC options")
                    }
                },
                Err(e) => tracing::debug!(url = %asic_url, error = %e, "no ASIC options"),
            }
        }
        // The reading moves on to the hub; the client keeps what writes need.
        let SystemInfo {
            mut reading,
            generation,
            pool_ids,
        } = info;
        if let Some(opts) = &self.asic_options {
            reading.capabilities.frequency_options = Some(opts.frequency_options.clone());
            reading.capabilities.core_voltage_options = Some(opts.voltage_options.clone());
        } else {
            reading.capabilities.frequency_options = Some(Vec::new());
            reading.capabilities.core_voltage_options = Some(Vec::new());
        }
        if generation != Generation::V2_15 {
            reading.capabilities.pools = self
                .pools
                .iter()
                .map(|p| PoolChoice { label: p.label() })
                .collect();
        }
        self.generation = Some(generation);
        self.pool_ids = pool_ids;
        Ok(reading)
    }

    pub async fn execute(&mut self, command: &Command) -> Result<(), MinerError> {
        let generation = self.generation.unwrap_or(Generation::Legacy);
        match command {
            Command::SetFrequency(f) => self.patch(serde_json::json!({ "frequency": f })).await,
            Command::SetCoreVoltage(v) => self.patch(serde_json::json!({ "coreVoltage": v })).await,
            Command::SetClock(c) => {
                self.patch(serde_json::json!({
                    "frequency": c.frequency_mhz,
                    "coreVoltage": c.core_voltage_mv,
                }))
                .await
            }
            Command::SetFanSpeed(pct) => {
                let key = if generation == Generation::Legacy {
                    "fanspeed"
                } else {
                    "manualFanSpeed"
                };
                let mut body = Map::new();
                body.insert("autofanspeed".into(), 0.into());
                body.insert(key.into(), (*pct).into());
                self.patch(Value::Object(body)).await
            }
            Command::SetAutoFan(on) => {
                let mode = match (on, generation) {
                    (false, _) => 0,
                    // NerdQaxe's PID loop is mode 2; keep the firmware's own choice.
                    (true, Generation::NerdQaxe) => 2,
                    (true, _) => 1,
                };
                self.patch(serde_json::json!({ "autofanspeed": mode }))
                    .await
            }
            Command::SelectPool(label) => {
                if generation == Generation::V2_15 {
                    let id = self
                        .pool_ids
                        .iter()
                        .find(|(l, _)| l == label)
                        .map(|(_, id)| *id)
                        .ok_or_else(|| MinerError::Unsupported {
                            what: format!("pool {label:?}"),
                        })?;
                    self.patch(serde_json::json!({ "primaryPoolIndex": id }))
                        .await?;
                } else {
                    let pool = self
                        .pools
                        .iter()
                        .find(|p| p.label() == *label)
                        .cloned()
                        .ok_or_else(|| MinerError::Unsupported {
                            what: format!("pool {label:?}"),
                        })?;
                    self.patch(serde_json::json!({
                        "stratumURL": pool.url,
                        "stratumPort": pool.port,
                        "stratumUser": pool.user,
                        "stratumPassword": pool.password,
                    }))
                    .await?;
                }
                self.post("restart").await
            }
            Command::Restart => self.post("restart").await,
            Command::SetWorkMode(_) => Err(MinerError::Unsupported {
                what: "firmware work modes (ESP-Miner modes are clock presets)".into(),
            }),
            Command::SetMining(on) => {
                if !(Generation::V2_14..=Generation::V2_15).contains(&generation) {
                    return Err(MinerError::Unsupported {
                        what: "pause/resume".into(),
                    });
                }
                self.post(if *on { "resume" } else { "pause" }).await
            }
        }
    }

    async fn get_with_retry(&self, url: &str) -> Result<Vec<u8>, MinerError> {
        let mut attempt = 0;
        loop {
            match self.get(url).await {
                Ok(body) => return Ok(body),
                // A malformed reply or an HTTP error will not improve by asking again at once.
                Err(e @ (MinerError::Malformed { .. } | MinerError::Http { .. })) => return Err(e),
                Err(e) if attempt >= self.retries => return Err(e),
                Err(e) => {
                    attempt += 1;
                    let backoff = Duration::from_millis(250 * (1 << attempt.min(4)));
                    tracing::debug!(%url, error = %e, attempt, "retrying");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// One GET on a connection of its own (ESP32 web servers have few sockets; none is kept
    /// open), spoken with hyper directly: this runs on every poll, and a general-purpose client's
    /// URL parsing, pool and connector layers cost more than the request itself.
    async fn get(&self, url: &str) -> Result<Vec<u8>, MinerError> {
        let path = url.strip_prefix(&self.base).unwrap_or(url);
        let exchange = async {
            let unreachable = |reason: String| MinerError::Unreachable {
                url: url.into(),
                reason,
            };
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
            let request = hyper::Request::get(path)
                .header(hyper::header::HOST, self.host_header.as_str())
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(|e| unreachable(e.to_string()))?;
            let response = async {
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                let status = response.status();
                let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
                    response.into_body(),
                    MAX_BODY,
                ))
                .await
                .map_err(|e| MinerError::Malformed {
                    url: url.into(),
                    reason: format!("reading the reply: {e}"),
                })?
                .to_bytes();
                Ok::<_, MinerError>((status, body))
            };
            // The connection is driven while the response is read, and dropped (closed) after.
            tokio::pin!(connection);
            tokio::pin!(response);
            let mut driving = true;
            loop {
                tokio::select! {
                    r = &mut response => break r,
                    c = &mut connection, if driving => {
                        driving = false;
                        if let Err(e) = c {
                            break Err(unreachable(e.to_string()));
                        }
                    }
                }
            }
        };
        // On the heap while it runs: inline, its state would sit in every idle poller's task.
        let (status, body) = tokio::time::timeout(self.timeout, Box::pin(exchange))
            .await
            .map_err(|_| MinerError::Timeout {
                url: url.into(),
                timeout: self.timeout,
            })??;
        if !status.is_success() {
            return Err(MinerError::Http {
                url: url.into(),
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        Ok(body.to_vec())
    }

    async fn patch(&self, body: Value) -> Result<(), MinerError> {
        let url = format!("{}/api/system", self.base);
        let mut request = self.http.patch(&url).timeout(self.timeout).json(&body);
        if let Some(totp) = &self.totp {
            if let Ok(code) = totp.generate_current() {
                request = request.header("X-TOTP", code);
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&url, e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => Ok(()),
            400 => Err(MinerError::Refused {
                url,
                body: text.chars().take(200).collect(),
            }),
            code => Err(MinerError::Http {
                url,
                status: code,
                body: text.chars().take(200).collect(),
            }),
        }
    }

    async fn post(&self, action: &str) -> Result<(), MinerError> {
        let url = format!("{}/api/system/{action}", self.base);
        let response = self
            .http
            .post(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&url, e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(MinerError::Http {
                url,
                status: status.as_u16(),
                body: snippet(&response.bytes().await.unwrap_or_default()),
            })
        }
    }

    fn transport_error(&self, url: &str, e: reqwest::Error) -> MinerError {
        if e.is_timeout() {
            MinerError::Timeout {
                url: url.into(),
                timeout: self.timeout,
            }
        } else if e.is_decode() || e.is_body() {
            MinerError::Malformed {
                url: url.into(),
                reason: e.to_string(),
            }
        } else {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            MinerError::Unreachable {
                url: url.into(),
                reason,
            }
        }
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn difficulty_strings_of_every_generation() {
        assert_eq!(difficulty(&json!("13M")), Some(13e6));
        assert_eq!(difficulty(&json!("572.14 M")), Some(572.14e6));
        assert_eq!(difficulty(&json!("483k")), Some(483e3));
        assert_eq!(difficulty(&json!("5.56G")), Some(5.56e9));
        assert_eq!(difficulty(&json!("0")), Some(0.0));
        assert_eq!(difficulty(&json!(572141152)), Some(572141152.0));
        assert_eq!(difficulty(&json!("12X")), None);
        assert_eq!(difficulty(&json!(null)), None);
    }

    #[test]
    fn a_bitaxe_hex_is_an_ultra_hex_with_six_chips() {
        // Board 302/303 carries six BM1366; firmware before deviceModel only says the board.
        assert_eq!(
            bitaxe_family(None, Some("302"), Some("BM1366"), None),
            Some(("Ultra Hex", 6))
        );
        assert_eq!(
            bitaxe_family(Some("hexultra"), Some("303"), Some("BM1366"), Some(6)),
            Some(("Ultra Hex", 6))
        );
        assert_eq!(
            bitaxe_family(None, Some("204"), Some("BM1366"), Some(1)),
            Some(("Ultra", 1))
        );
        assert_eq!(
            bitaxe_family(Some("gammaturbo"), Some("801"), Some("BM1370"), Some(2)),
            Some(("Gamma Turbo", 2))
        );
        assert_eq!(
            bitaxe_family(None, Some("650"), Some("BM1370"), None),
            Some(("Gamma Duo", 2))
        );
        assert_eq!(
            bitaxe_family(None, Some("2.2"), None, None),
            Some(("Max", 1))
        );
        assert_eq!(
            bitaxe_family(None, None, Some("BM1368"), Some(6)),
            Some(("Supra Hex", 6))
        );
        assert_eq!(bitaxe_family(None, Some("x"), None, None), None);
        // A Hex whose firmware has no asicCount still counts six chips.
        let info = parse_system_info(
            br#"{"ASICModel": "BM1366", "boardVersion": "302", "hashRate": 2900.5, "frequency": 485, "smallCoreCount": 894, "version": "v2.4.2"}"#,
        )
        .unwrap();
        assert_eq!(info.reading.identity.model, "Ultra Hex 302");
        assert_eq!(info.reading.identity.asic_count, 6);
        let expected = info.reading.telemetry.expected_hashrate.unwrap();
        assert!(
            (expected - 485.0 * 894.0 * 6.0 / 1000.0).abs() < 0.01,
            "{expected}"
        );
    }

    #[test]
    fn versions() {
        assert_eq!(version_number("v2.11.0b6"), Some((2, 11)));
        assert_eq!(version_number("2.7.0-TCH-All-In-One"), Some((2, 7)));
        assert_eq!(version_number("v2.4.5-3-gb5d1e36-dirty"), Some((2, 4)));
        assert_eq!(version_number("garbage"), None);
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalise_mac("10:F5:12:33:BB:F0").as_deref(),
            Some("10f51233bbf0")
        );
        assert_eq!(normalise_mac("XX:XX:XX:XX:XX:XX"), None);
        assert_eq!(normalise_mac(""), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_system_info(b"").is_err());
        assert!(parse_system_info(b"{\"power\": 3").is_err());
        assert!(parse_system_info(b"[1,2]").is_err());
        assert!(parse_system_info(b"{\"unrelated\": true}").is_err());
        assert!(
            parse_asic_info(b"{\"frequencyOptions\": [\"x\"], \"voltageOptions\": []}").is_err()
        );
    }
}
