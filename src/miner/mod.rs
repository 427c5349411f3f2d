//! The miner model shared by every device family: what a miner reports (`Telemetry`), who it is
//! (`Identity`), what it can do (`Capabilities`), what can be asked of it (`Command`), and the
//! adapter that speaks its protocol (`MinerClient`).
//!
//! Adapters know nothing of Home Assistant or MQTT. Units are normalised here, at the parser:
//! hashrate in GH/s, power in W, voltage in V, current in A, temperatures in °C, core voltage in
//! mV, frequency in MHz. Anything a device does not report is `None`, never 0.

pub mod antminer;
pub mod asic;
pub mod avalon;
pub mod axeos;
pub mod cgminer;
pub mod nmminer;

use serde::Serialize;
use std::time::Duration;

pub use asic::{AsicProfile, ClockPreset};

/// One poll's worth of readings, normalised. Serialised as the body of the miner's state topic,
/// so every field is always present (`null` when unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Telemetry {
    /// Current hashrate, GH/s.
    pub hashrate: Option<f64>,
    /// Hashrate the firmware expects at the current frequency, GH/s.
    pub expected_hashrate: Option<f64>,
    /// Power drawn by the board, W.
    pub power: Option<f64>,
    /// Input voltage, V (AxeOS reports mV).
    pub input_voltage: Option<f64>,
    /// Input current, A (AxeOS reports mA).
    pub current: Option<f64>,
    /// ASIC temperature, °C.
    pub asic_temp: Option<f64>,
    /// Voltage regulator temperature, °C.
    pub vr_temp: Option<f64>,
    /// Fan duty, %.
    pub fan_speed: Option<f64>,
    /// Fan speed, rpm.
    pub fan_rpm: Option<f64>,
    /// Whether the firmware drives the fan itself.
    pub auto_fan: Option<bool>,
    /// ASIC clock, MHz.
    pub frequency: Option<f64>,
    /// Core voltage the firmware is asked for, mV.
    pub core_voltage: Option<f64>,
    /// Core voltage measured, mV.
    pub core_voltage_actual: Option<f64>,
    pub shares_accepted: Option<u64>,
    pub shares_rejected: Option<u64>,
    /// Share of the chips' work that failed their own check, %: ESP-Miner v2.11+
    /// `errorPercentage`, an Avalon's `DH[…%]`, cgminer's `Device Hardware%` on an Antminer.
    pub error_percent: Option<f64>,
    /// Best share difficulty ever found by this device.
    pub best_difficulty: Option<f64>,
    /// Best share difficulty since the last restart.
    pub best_session_difficulty: Option<f64>,
    /// Seconds since the device started.
    pub uptime: Option<u64>,
    /// Wi-Fi signal, dBm.
    pub rssi: Option<f64>,
    /// The pool the device is mining on now, `host:port`.
    pub pool: Option<String>,
    /// The worker name used on that pool.
    pub pool_user: Option<String>,
    /// Whether the firmware has tripped its own overheat protection.
    pub firmware_overheat: Option<bool>,
    /// Whether mining is paused (ESP-Miner v2.14+ standby).
    pub paused: Option<bool>,
    /// The work mode the device itself reports (Avalon), by name. Published as `mode`.
    #[serde(skip)]
    pub work_mode: Option<String>,
    /// Family-specific readings (Antminer per-chain rate and temperature, extra fans), keyed as
    /// in `Capabilities::extra_sensors`; flattened into the state JSON.
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, Option<f64>>,
}

/// A sensor only some families have, e.g. one hash chain's rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtraSensor {
    /// The state JSON key.
    pub key: String,
    pub name: String,
    pub unit: Option<&'static str>,
    pub device_class: Option<&'static str>,
}

impl Telemetry {
    /// Joules per terahash: the number a home miner optimises. `None` when hashrate is zero.
    pub fn efficiency_j_per_th(&self) -> Option<f64> {
        match (self.power, self.hashrate) {
            (Some(p), Some(h)) if h > 0.0 => Some(p / (h / 1000.0)),
            _ => None,
        }
    }

    /// Gigahashes per watt, the inverse view of efficiency.
    pub fn gh_per_w(&self) -> Option<f64> {
        match (self.power, self.hashrate) {
            (Some(p), Some(h)) if p > 0.0 => Some(h / p),
            _ => None,
        }
    }

    /// The clock settings this sample was taken at, when the device reports them.
    pub fn clock(&self) -> Option<ClockConfig> {
        Some(ClockConfig {
            frequency_mhz: self.frequency?.round() as u32,
            core_voltage_mv: self.core_voltage?.round() as u32,
        })
    }
}

/// Frequency and core voltage: the pair every tuning result and history sample is tagged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct ClockConfig {
    pub frequency_mhz: u32,
    pub core_voltage_mv: u32,
}

/// Who a miner is. The hardware id (MAC, or serial) is the identity; the IP is not, since DHCP
/// moves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// Lower-case hex MAC without separators, e.g. `10f51233bbf0`. `None` when the device hides
    /// or lacks one (some firmware forks blank it).
    pub hardware_id: Option<String>,
    /// The MAC as the device printed it, for the HA device's connections.
    pub mac: Option<String>,
    pub manufacturer: String,
    pub model: String,
    pub hostname: Option<String>,
    pub firmware: Option<String>,
    pub asic_model: Option<String>,
    pub asic_count: u32,
}

/// A pool the device can be pointed at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolChoice {
    /// What the user picks in HA: `host:port`, made unique by the adapter.
    pub label: String,
}

/// What a device can read and set. HA entities follow these.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Capabilities {
    /// Frequency can be set; the firmware's own list of suggested values.
    pub frequency_options: Option<Vec<u32>>,
    /// Core voltage can be set; the firmware's own list of suggested values.
    pub core_voltage_options: Option<Vec<u32>>,
    pub fan_speed: bool,
    /// The lowest manual fan duty the firmware accepts, %.
    pub fan_min: u8,
    pub auto_fan: bool,
    pub restart: bool,
    /// Standby without a reboot (ESP-Miner v2.14+).
    pub pause: bool,
    /// Pools that can be selected; empty when pool selection is not possible.
    pub pools: Vec<PoolChoice>,
    /// Work modes the firmware switches between itself (Avalon: low, medium, high), in the
    /// order of their codes. Empty when modes are clock presets.
    pub work_modes: Vec<String>,
    /// The same work modes, least power first, where that is not the order of their codes (the
    /// Mini 3's night mode, code 2, draws the least); empty means code order. The watchdog
    /// steps down in this order.
    pub work_modes_by_power: Vec<String>,
    /// State keys this family never reports; their sensors are not offered.
    pub absent_sensors: Vec<&'static str>,
    /// Sensors beyond the common set.
    pub extra_sensors: Vec<ExtraSensor>,
}

impl Capabilities {
    /// Adds the pool the device is on to the pools offered, when pool selection is possible at
    /// all and it is not already there: Home Assistant logs an error for a select whose state is
    /// not one of its options.
    pub fn include_current_pool(&mut self, current: Option<&str>) {
        let Some(current) = current.filter(|p| !p.is_empty()) else {
            return;
        };
        if !self.pools.is_empty() && !self.pools.iter().any(|p| p.label == current) {
            self.pools.push(PoolChoice {
                label: current.to_string(),
            });
        }
    }
}

/// `bitaxe-1` → `bitaxe_1`: lower-case letters and digits, everything else `_` (as Home
/// Assistant slugs names; also safe as a topic level and an id).
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A number written with an SI suffix, as miners print hashrates and difficulties: `"13M"`,
/// `"572.14 M"`, `"483k"`, `"113.13K"`, `"1.0154MH/s"`, `"0"` → the plain number. A trailing
/// `H/s` or `H` is ignored.
pub fn si_number(text: &str) -> Option<f64> {
    let t = text
        .trim()
        .trim_end_matches("/s")
        .trim_end_matches(['H', 'h']);
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let scale = match suffix.trim() {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    Some(n * scale)
}

/// One poll: the identity, the readings and the capabilities seen on the device now.
#[derive(Debug, Clone)]
pub struct Reading {
    pub identity: Identity,
    pub telemetry: Telemetry,
    pub capabilities: Capabilities,
}

/// Something to change on a miner. Values are already validated against the safety limits when
/// a command reaches an adapter; adapters only translate.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetFrequency(u32),
    SetCoreVoltage(u32),
    /// Frequency and voltage together (a mode preset), applied in one request.
    SetClock(ClockConfig),
    /// A firmware work mode by its code (Avalon `workmode`).
    SetWorkMode(u8),
    /// Manual fan duty in %; turns automatic fan control off.
    SetFanSpeed(u8),
    SetAutoFan(bool),
    /// Select a pool by the label from `Capabilities::pools`; the device restarts.
    SelectPool(String),
    Restart,
    /// Pause (`false`) or resume (`true`) mining.
    SetMining(bool),
}

impl Command {
    /// The setting a command changes; a newer command for the same one supersedes it.
    pub fn property(&self) -> &'static str {
        match self {
            Command::SetFrequency(_) => "frequency",
            Command::SetCoreVoltage(_) => "core_voltage",
            Command::SetClock(_) => "clock",
            Command::SetWorkMode(_) => "mode",
            Command::SetFanSpeed(_) | Command::SetAutoFan(_) => "fan",
            Command::SelectPool(_) => "pool",
            Command::Restart => "restart",
            Command::SetMining(_) => "mining",
        }
    }

    /// The name a user sees in events and logs.
    pub fn describe(&self) -> String {
        match self {
            Command::SetFrequency(f) => format!("frequency {f} MHz"),
            Command::SetCoreVoltage(v) => format!("core voltage {v} mV"),
            Command::SetClock(c) => {
                format!("clock {} MHz / {} mV", c.frequency_mhz, c.core_voltage_mv)
            }
            Command::SetWorkMode(m) => format!("work mode {m}"),
            Command::SetFanSpeed(s) => format!("fan speed {s} %"),
            Command::SetAutoFan(on) => format!("auto fan {}", if *on { "on" } else { "off" }),
            Command::SelectPool(p) => format!("pool {p}"),
            Command::Restart => "restart".into(),
            Command::SetMining(on) => (if *on { "resume mining" } else { "pause mining" }).into(),
        }
    }
}

/// Why talking to a miner failed. Every variant names the URL or address.
#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: cannot connect: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: the miner refused the change (HTTP 400 {body:?}); nothing was saved")]
    Refused { url: String, body: String },
    #[error("{url}: unreadable reply: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url}: the miner answered {status} (code {code}): {msg}")]
    Answered {
        url: String,
        status: String,
        code: i64,
        msg: String,
    },
    #[error("{what} is not supported by this miner's firmware")]
    Unsupported { what: String },
    #[error("{url}: the miner is busy ({reason}); try again in a minute")]
    Busy { url: String, reason: String },
}

/// The adapter for one miner, whatever its family. Enum dispatch keeps the poller generic without
/// boxing futures; each later family adds a variant.
pub enum MinerClient {
    // Boxed: the ESP-Miner client carries its last parsed info and is several times larger.
    AxeOs(Box<axeos::AxeOsClient>),
    Avalon(avalon::AvalonClient),
    Antminer(antminer::AntminerClient),
}

impl MinerClient {
    /// Reads the device once.
    pub async fn poll(&mut self) -> Result<Reading, MinerError> {
        match self {
            MinerClient::AxeOs(c) => c.poll().await,
            MinerClient::Avalon(c) => c.poll().await,
            MinerClient::Antminer(c) => c.poll().await,
        }
    }

    /// Sends one already-validated command to the device.
    pub async fn execute(&mut self, command: &Command) -> Result<(), MinerError> {
        match self {
            MinerClient::AxeOs(c) => c.execute(command).await,
            MinerClient::Avalon(c) => c.execute(command).await,
            MinerClient::Antminer(_) => Err(MinerError::Unsupported {
                what: format!(
                    "{} (stock Antminer firmware is read-only here)",
                    command.describe()
                ),
            }),
        }
    }
}
