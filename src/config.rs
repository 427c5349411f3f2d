//! Configuration: built-in defaults < `config.yaml` < `MINER2MQTT_*` environment variables (nested
//! keys split on `__`, e.g. `MINER2MQTT_MQTT__HOST`). The raw, deserialised form is turned into a
//! validated `Config` in a separate step; every error names the key, where it came from (file or
//! variable) and the offending value.

use crate::miner::axeos::ConfiguredPool;
use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, phrased for the person editing the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist (pass --config with the right path, or create it from the example config.yaml)")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {key} (from {source_name}) is {value}: {hint}")]
    Invalid {
        key: String,
        source_name: String,
        value: String,
        hint: String,
    },
}

/// A secret: accepts a string, or a number YAML or the environment parsed as one. Never printed.
#[derive(Clone, Default, PartialEq, Serialize)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: &str) -> Secret {
        Secret(value.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Secret(match Scalar::deserialize(d)? {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::U(u) => u.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A file holding the password (Docker/HA secrets); wins over `password`.
    pub password_file: Option<PathBuf>,
    pub client_id: String,
    pub base_topic: String,
    pub discovery_prefix: String,
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
}

impl Default for RawMqtt {
    fn default() -> Self {
        RawMqtt {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            password_file: None,
            client_id: "miner2mqtt".into(),
            base_topic: "miner2mqtt".into(),
            discovery_prefix: "homeassistant".into(),
            keepalive: Duration::from_secs(20),
            tls: false,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub path: PathBuf,
    pub cache_capacity_mb: u64,
    /// How long every raw sample is kept.
    #[serde(with = "humantime_serde")]
    pub raw_for: Duration,
    /// How long the 5-minute rollups are kept (per-config aggregates are kept forever).
    #[serde(with = "humantime_serde")]
    pub rollup_for: Duration,
    /// How often new samples are rolled up and old ones pruned.
    #[serde(with = "humantime_serde")]
    pub compact_every: Duration,
}

impl Default for RawStore {
    fn default() -> Self {
        let retention = crate::store::history::Retention::default();
        RawStore {
            path: "miner2mqtt.db".into(),
            cache_capacity_mb: 16,
            raw_for: retention.raw_for,
            rollup_for: retention.rollup_for,
            compact_every: Duration::from_secs(60),
        }
    }
}

/// The always-on safety settings: the limits every command is checked against, and the
/// thermal and hashrate watchdog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    /// ASIC °C at which the watchdog steps the frequency down.
    pub temp_limit: f64,
    /// ASIC °C at which the miner is overheating: the safe profile at once, and an alert.
    pub temp_overheat: f64,
    /// VR °C at which the miner is overheating.
    pub vr_temp_limit: f64,
    /// The lowest manual fan duty accepted, %.
    pub min_fan_speed: u8,
    /// Allow limits above the ASIC's rated range (never above its absolute range).
    pub allow_overclock: bool,
    /// How far the watchdog steps the frequency down at `temp_limit`, MHz.
    pub step_mhz: u32,
    /// After a thermal action, how long the miner must stay 5 °C below `temp_limit` before
    /// anything may raise its frequency or voltage again.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// Polls in a row at zero (or exactly the same) hashrate before the watchdog restarts it.
    pub zero_hashrate_polls: u32,
    /// Restarts the watchdog may make per miner per hour; then it alerts and leaves it alone.
    pub max_restarts_per_hour: u32,
    /// After a start, how long a zero hashrate is a boot, not a fault.
    #[serde(with = "humantime_serde")]
    pub boot_grace: Duration,
    /// Avalons run hotter by design (a Nano's firmware holds its chips near 85–90 °C itself).
    pub avalon: FamilyTemps,
    /// Antminer chip temperatures (stock firmware runs them near 70–80 °C).
    pub antminer: FamilyTemps,
}

/// ASIC temperature thresholds for a family whose chips run hotter than ESP-Miner boards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyTemps {
    pub temp_limit: f64,
    pub temp_overheat: f64,
}

/// The thresholds the watchdog and the Overheating sensor use for one miner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thermal {
    /// ASIC °C at which the frequency (or work mode) is stepped down.
    pub temp_limit: f64,
    /// ASIC °C at which the miner is overheating.
    pub temp_overheat: f64,
    /// VR °C at which the miner is overheating.
    pub vr_temp_limit: f64,
}

impl Safety {
    /// The thresholds for a miner of `kind`: the family's own for Avalon and Antminer, the
    /// top-level ones (ESP-Miner's) for the rest.
    pub fn thermal(&self, kind: MinerKind) -> Thermal {
        let (temp_limit, temp_overheat) = match kind {
            MinerKind::Avalon => (self.avalon.temp_limit, self.avalon.temp_overheat),
            MinerKind::Antminer => (self.antminer.temp_limit, self.antminer.temp_overheat),
            MinerKind::Axeos | MinerKind::Nmminer => (self.temp_limit, self.temp_overheat),
        };
        Thermal {
            temp_limit,
            temp_overheat,
            vr_temp_limit: self.vr_temp_limit,
        }
    }
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            temp_limit: 65.0,
            temp_overheat: 70.0,
            vr_temp_limit: 85.0,
            min_fan_speed: 20,
            allow_overclock: false,
            step_mhz: 25,
            hold: Duration::from_secs(600),
            zero_hashrate_polls: 10,
            max_restarts_per_hour: 2,
            boot_grace: Duration::from_secs(180),
            // The Nano 3 captures show TAvg 85 °C (target 85) and the Nano 3S TMax 95 °C
            // (target 90) in normal running.
            avalon: FamilyTemps {
                temp_limit: 97.0,
                temp_overheat: 102.0,
            },
            // The S19 Pro capture's hottest chip reads 78 °C in normal running.
            antminer: FamilyTemps {
                temp_limit: 88.0,
                temp_overheat: 95.0,
            },
        }
    }
}

/// When alerts fire and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// The least time between two alerts of one kind for one miner.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// A hashrate below this share of its own recent mean (at the same clock) is a drop.
    pub hashrate_drop: f64,
    /// Rejected shares above this share of all shares (over the last 50 or more) alert.
    pub reject_rate: f64,
    /// Efficiency (J/TH) at an unchanged clock worse than its own history by this many percent
    /// alerts (dust, a failing fan, a tired chip).
    pub drift_percent: f64,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            cooldown: Duration::from_secs(1800),
            hashrate_drop: 0.8,
            reject_rate: 0.05,
            drift_percent: 15.0,
        }
    }
}

/// An inclusive range written as `{ min: .., max: .. }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

/// Per-miner limits tighter than the ASIC's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitOverrides {
    pub frequency: Option<Bounds>,
    pub core_voltage: Option<Bounds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinerKind {
    /// Bitaxe and NerdQaxe++ (ESP-Miner HTTP API).
    #[serde(alias = "bitaxe", alias = "nerdqaxe", alias = "esp-miner")]
    Axeos,
    /// Avalon Nano 3 and Nano 3S (cgminer API on TCP 4028).
    #[serde(alias = "avalon-nano", alias = "nano3", alias = "nano3s")]
    Avalon,
    /// Antminer on stock firmware (cgminer API, read-only).
    #[serde(alias = "bmminer")]
    Antminer,
    /// NMMiner lottery miners: created from their UDP broadcasts, not listed under `miners`.
    Nmminer,
}

impl MinerKind {
    /// The family name band targets may use: `axeos`, `avalon`, `antminer`, `nmminer`.
    pub fn family(self) -> &'static str {
        match self {
            MinerKind::Axeos => "axeos",
            MinerKind::Avalon => "avalon",
            MinerKind::Antminer => "antminer",
            MinerKind::Nmminer => "nmminer",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMiner {
    pub name: String,
    pub kind: MinerKind,
    pub host: String,
    /// Base32 TOTP secret for NerdQaxe firmware with OTP enabled.
    #[serde(default)]
    pub totp_secret: Option<Secret>,
    /// The web admin password (Avalon), needed for pool selection.
    #[serde(default)]
    pub admin_password: Option<Secret>,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// The smart plug that switches its mains power.
    #[serde(default)]
    pub power: Option<crate::power::RawPower>,
}

impl RawMiner {
    /// A miner with no TOTP secret and the ASIC's own limits.
    pub fn new(name: &str, kind: MinerKind, host: &str) -> RawMiner {
        RawMiner {
            name: name.into(),
            kind,
            host: host.into(),
            totp_secret: None,
            admin_password: None,
            limits: LimitOverrides::default(),
            power: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub url: String,
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// A mode preset override: `modes: { BM1370: { eco: { frequency: 450, core_voltage: 1100 } } }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreset {
    pub frequency: u32,
    pub core_voltage: u32,
}

/// One NMMiner device to accept, by the IP it broadcasts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNmDevice {
    pub ip: String,
    /// The device name in HA and in topics; `nmminer-<ip>` when omitted.
    #[serde(default)]
    pub name: Option<String>,
}

/// NMMiner broadcasts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNmminer {
    /// Where telemetry broadcasts arrive.
    pub listen: String,
    /// The devices' configuration port.
    pub config_port: u16,
    /// Accept every device that broadcasts, not only those listed.
    pub accept_all: bool,
    pub devices: Vec<RawNmDevice>,
    /// Silence after which a device shows unavailable.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
}

impl Default for RawNmminer {
    fn default() -> Self {
        RawNmminer {
            listen: "0.0.0.0:12345".into(),
            config_port: 12347,
            accept_all: false,
            devices: Vec::new(),
            expire_after: Duration::from_secs(120),
        }
    }
}

/// The validated NMMiner settings; absent when no device is accepted.
#[derive(Debug, Clone)]
pub struct NmminerConfig {
    pub listen: std::net::SocketAddr,
    pub config_port: u16,
    pub accept_all: bool,
    /// (ip, name) of the listed devices.
    pub devices: Vec<(String, String)>,
    pub expire_after: Duration,
}

impl NmminerConfig {
    /// The name for a device broadcasting as `ip`, if it is accepted.
    pub fn name_for(&self, ip: &str) -> Option<String> {
        match self.devices.iter().find(|(i, _)| i == ip) {
            Some((_, name)) => Some(name.clone()),
            None if self.accept_all => Some(default_nm_name(ip)),
            None => None,
        }
    }
}

/// `192.168.1.101` → `nmminer-192-168-1-101`.
pub fn default_nm_name(ip: &str) -> String {
    let ip: String = ip
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("nmminer-{ip}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub mqtt: RawMqtt,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Extra attempts within one poll before it counts as failed.
    pub retries: u32,
    /// Failed polls in a row before a miner is shown offline.
    pub offline_after: u32,
    pub log_level: String,
    pub store: RawStore,
    pub safety: Safety,
    pub alerts: Alerts,
    /// How benchmark sweeps run.
    pub benchmark: crate::tuning::sweep::SweepConfig,
    pub modes: BTreeMap<String, BTreeMap<String, RawPreset>>,
    /// Pools offered for selection on firmware older than v2.15 (which has its own list) and on
    /// NMMiner devices.
    pub pools: Vec<RawPool>,
    pub miners: Vec<RawMiner>,
    pub nmminer: RawNmminer,
    /// Prices, bands and the strategy; without it energy is only metered.
    pub energy: Option<crate::energy::config::RawEnergy>,
    /// Home Assistant's REST API, for plugs that are HA entities.
    pub ha: crate::power::RawHa,
    /// How often plugs are checked and corrected where they differ from what is wanted.
    #[serde(with = "humantime_serde")]
    pub power_keepalive: Duration,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            mqtt: RawMqtt::default(),
            poll_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            retries: 1,
            offline_after: 3,
            log_level: "info".into(),
            store: RawStore::default(),
            safety: Safety::default(),
            alerts: Alerts::default(),
            benchmark: Default::default(),
            modes: BTreeMap::new(),
            pools: Vec::new(),
            miners: Vec::new(),
            nmminer: RawNmminer::default(),
            energy: None,
            ha: Default::default(),
            power_keepalive: Duration::from_secs(300),
        }
    }
}

/// The validated MQTT settings.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub client_id: String,
    pub base_topic: String,
    pub discovery_prefix: String,
    pub keepalive: Duration,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
}

/// One configured miner, validated.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// Unique, topic-safe name: `miner2mqtt/<name>/state`.
    pub name: String,
    pub kind: MinerKind,
    /// `host` or `host:port`, without scheme.
    pub host: String,
    pub totp_secret: Option<Secret>,
    pub admin_password: Option<Secret>,
    pub limits: LimitOverrides,
    pub power: Option<crate::power::Plug>,
}

impl MinerConfig {
    /// `host:port`, with the family's default port when the config gave none.
    pub fn address(&self) -> String {
        let has_port = self
            .host
            .rsplit_once(':')
            .is_some_and(|(h, _)| !h.contains(':'));
        match (self.kind, has_port) {
            (MinerKind::Avalon | MinerKind::Antminer, false) => format!("{}:4028", self.host),
            _ => self.host.clone(),
        }
    }
}

/// The runtime configuration every part of the daemon reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    pub retries: u32,
    pub offline_after: u32,
    pub log_level: String,
    pub store_path: PathBuf,
    pub store_cache_bytes: u64,
    pub store_retention: crate::store::history::Retention,
    pub store_compact_every: Duration,
    pub safety: Safety,
    pub alerts: Alerts,
    pub benchmark: crate::tuning::sweep::SweepConfig,
    /// ASIC model (upper case) → mode name → preset.
    pub modes: BTreeMap<String, BTreeMap<String, RawPreset>>,
    pub pools: Vec<ConfiguredPool>,
    pub miners: Vec<MinerConfig>,
    pub nmminer: Option<NmminerConfig>,
    pub energy: crate::energy::EnergyConfig,
    /// Home Assistant's REST API (plugs that are HA entities).
    pub ha: Option<crate::power::HaApi>,
    pub power_keepalive: Duration,
    /// Whether the MQTT password came from `mqtt.password_file`.
    password_file_used: bool,
}

/// The log levels the bridge's select offers.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Loads `path` (which must exist when `explicit`), then the environment.
pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
    if explicit && !path.exists() {
        return Err(ConfigError::Missing(path.to_path_buf()));
    }
    let mut config = from_figment(&layers(Some(path)))?;
    if config.mqtt_password_from_file_is_unset() {
        if let Some(password) = env_password() {
            config.mqtt.password = Some(password);
        }
    }
    Ok(config)
}

/// Only the `mqtt:` section of `path` (when given) and of the environment, for commands that
/// bring their own miners (the demo) but use the user's broker and credentials.
pub fn load_mqtt(path: Option<&Path>) -> Result<RawMqtt, ConfigError> {
    if let Some(path) = path.filter(|p| !p.exists()) {
        return Err(ConfigError::Missing(path.to_path_buf()));
    }
    let mut mqtt: RawMqtt = layers(path).extract_inner("mqtt").map_err(parse_error)?;
    if mqtt.password_file.is_none() {
        if let Some(password) = env_password() {
            mqtt.password = Some(password);
        }
    }
    Ok(mqtt)
}

/// Defaults < the file (when given) < the environment.
fn layers(path: Option<&Path>) -> Figment {
    let figment = Figment::from(Serialized::defaults(RawConfig::default()));
    match path {
        Some(path) => figment.merge(Yaml::file(path)),
        None => figment,
    }
    .merge(env_provider())
}

/// The environment layer parses values ("0042" would become 42); a password keeps its bytes.
fn env_password() -> Option<Secret> {
    std::env::var("MINER2MQTT_MQTT__PASSWORD").ok().map(Secret)
}

fn parse_error(e: figment::Error) -> ConfigError {
    let msgs: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
    ConfigError::Parse(msgs.join("; "))
}

/// The environment layer: `MINER2MQTT_MQTT__HOST` → `mqtt.host`. `MINER2MQTT_CONFIG`,
/// `MINER2MQTT_LOG` and the real-HA test's `MINER2MQTT_HA_LOG` / `MINER2MQTT_HA_PYTHON` are not
/// configuration keys.
pub fn env_provider() -> Env {
    Env::prefixed("MINER2MQTT_")
        .split("__")
        .ignore(&["config", "log", "ha_log", "ha_python"])
}

/// Extracts and validates from any figment (tests build their own).
pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
    let raw: RawConfig = figment.extract().map_err(parse_error)?;
    validate(raw, figment)
}

fn describe_figment_error(e: &figment::Error) -> String {
    use figment::error::Kind;
    // `miners.0.kind` reads as `miners[0].kind`.
    let mut key = String::new();
    for part in &e.path {
        if part.chars().all(|c| c.is_ascii_digit()) {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    if key.is_empty() {
        key = "(top level)".into();
    }
    let source = e
        .metadata
        .as_ref()
        .map(|m| describe_source(m, &e.path))
        .unwrap_or_else(|| "configuration".into());
    let what = match &e.kind {
        Kind::UnknownField(found, expected) => {
            let hint = closest(found, expected)
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            format!(
                "unknown key {found:?}{hint}; the keys here are {}",
                expected.join(", ")
            )
        }
        Kind::UnknownVariant(found, expected) => {
            let hint = closest(found, expected)
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            format!(
                "{found:?} is not known{hint}; use one of {}",
                expected.join(", ")
            )
        }
        Kind::MissingField(field) => format!("{field} is required here"),
        Kind::DuplicateField(field) => format!("{field} is given twice"),
        other => other.to_string(),
    };
    // An unknown key's own name is in the path already; say it once.
    let key = match &e.kind {
        Kind::UnknownField(found, _) => key
            .strip_suffix(found.as_str())
            .map(|k| k.trim_end_matches('.').to_string())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "(top level)".into()),
        _ => key,
    };
    format!("{key} (from {source}): {what}")
}

/// The expected word nearest to a misspelt one (at most two edits away), for a hint.
fn closest<'a>(found: &str, expected: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb))
                    .min(row[j] + 1)
                    .min(row[j + 1] + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    expected
        .iter()
        .map(|e| (distance(&found.to_ascii_lowercase(), e), *e))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// "config.yaml", or the exact environment variable for `path`.
fn describe_source(m: &figment::Metadata, path: &[String]) -> String {
    if m.name.contains("environment") && !path.is_empty() {
        let var: Vec<String> = path.iter().map(|p| p.to_ascii_uppercase()).collect();
        return format!("environment variable MINER2MQTT_{}", var.join("__"));
    }
    match &m.source {
        Some(s) => format!("{} {s}", m.name),
        None => m.name.to_string(),
    }
}

fn source_of(figment: &Figment, key: &str) -> String {
    let path: Vec<String> = key
        .split('.')
        .filter(|p| !p.contains('['))
        .map(str::to_string)
        .collect();
    match figment.find_metadata(key.split('[').next().unwrap_or(key)) {
        Some(m) => describe_source(m, &path),
        None => "defaults".into(),
    }
}

fn validate(raw: RawConfig, figment: &Figment) -> Result<Config, ConfigError> {
    let invalid = |key: &str, value: &dyn fmt::Display, hint: &str| ConfigError::Invalid {
        key: key.to_string(),
        source_name: source_of(figment, key),
        value: value.to_string(),
        hint: hint.to_string(),
    };

    let st = &raw.store;
    if st.raw_for < Duration::from_secs(3600) {
        return Err(invalid(
            "store.raw_for",
            &humantime::format_duration(st.raw_for),
            "at least 1h: samples are rolled up in 5-minute buckets a few minutes after they end",
        ));
    }
    if st.rollup_for < st.raw_for {
        return Err(invalid(
            "store.rollup_for",
            &humantime::format_duration(st.rollup_for),
            "at least store.raw_for: rollups are what is left of older samples",
        ));
    }
    if st.compact_every < Duration::from_secs(1) || st.compact_every > Duration::from_secs(3600) {
        return Err(invalid(
            "store.compact_every",
            &humantime::format_duration(st.compact_every),
            "from 1s to 1h",
        ));
    }

    let m = raw.mqtt;
    if m.host.trim().is_empty() {
        return Err(invalid(
            "mqtt.host",
            &"empty",
            "set the broker's host name or IP",
        ));
    }
    if m.port == 0 {
        return Err(invalid(
            "mqtt.port",
            &0,
            "use the broker's port, usually 1883",
        ));
    }
    for (key, topic) in [
        ("mqtt.base_topic", &m.base_topic),
        ("mqtt.discovery_prefix", &m.discovery_prefix),
    ] {
        if topic.is_empty()
            || topic.contains(['+', '#'])
            || topic.starts_with('/')
            || topic.ends_with('/')
        {
            return Err(invalid(
                key,
                &format!("{topic:?}"),
                "use a plain topic such as \"miner2mqtt\" (no wildcards, no leading or trailing /)",
            ));
        }
    }
    if !(Duration::from_secs(5)..=Duration::from_secs(600)).contains(&m.keepalive) {
        return Err(invalid(
            "mqtt.keepalive",
            &humantime::format_duration(m.keepalive),
            "use 5s to 10m; 20s suits most brokers",
        ));
    }
    let password = match &m.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "mqtt.password_file",
                    &path.display(),
                    &format!("cannot read it: {e}"),
                )
            })?;
            Some(Secret(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        None => m.password.clone(),
    };
    if let Some(ca) = &m.ca_file {
        if !ca.exists() {
            return Err(invalid(
                "mqtt.ca_file",
                &ca.display(),
                "the file does not exist",
            ));
        }
    }

    if raw.poll_interval < Duration::from_secs(1) {
        return Err(invalid(
            "poll_interval",
            &humantime::format_duration(raw.poll_interval),
            "poll at most once a second; 30s is the default",
        ));
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&raw.request_timeout) {
        return Err(invalid(
            "request_timeout",
            &humantime::format_duration(raw.request_timeout),
            "use between 100ms and 60s; 5s suits Wi-Fi miners",
        ));
    }
    if raw.offline_after == 0 {
        return Err(invalid("offline_after", &0, "at least 1 failed poll"));
    }
    if !LOG_LEVELS.contains(&raw.log_level.as_str()) {
        return Err(invalid(
            "log_level",
            &format!("{:?}", raw.log_level),
            "use one of error, warn, info, debug, trace",
        ));
    }
    let s = &raw.safety;
    if !(s.temp_limit > 0.0 && s.temp_limit < s.temp_overheat && s.temp_overheat <= 90.0) {
        return Err(invalid(
            "safety.temp_limit",
            &format!("{} / temp_overheat {}", s.temp_limit, s.temp_overheat),
            "temp_limit must be below temp_overheat, and temp_overheat at most 90 °C",
        ));
    }
    for (family, t) in [("avalon", &s.avalon), ("antminer", &s.antminer)] {
        if !(t.temp_limit > 0.0 && t.temp_limit < t.temp_overheat && t.temp_overheat <= 110.0) {
            return Err(invalid(
                &format!("safety.{family}.temp_limit"),
                &format!("{} / temp_overheat {}", t.temp_limit, t.temp_overheat),
                "temp_limit must be below temp_overheat, and temp_overheat at most 110 °C",
            ));
        }
    }
    if !(40.0..=110.0).contains(&s.vr_temp_limit) {
        return Err(invalid(
            "safety.vr_temp_limit",
            &s.vr_temp_limit,
            "use 40 to 110 °C",
        ));
    }
    if s.min_fan_speed > 100 {
        return Err(invalid(
            "safety.min_fan_speed",
            &s.min_fan_speed,
            "a percentage, 0 to 100",
        ));
    }
    if !(5..=200).contains(&s.step_mhz) {
        return Err(invalid(
            "safety.step_mhz",
            &s.step_mhz,
            "use 5 to 200 MHz; 25 is one step of ESP-Miner's frequency list",
        ));
    }
    if s.zero_hashrate_polls == 0 {
        return Err(invalid(
            "safety.zero_hashrate_polls",
            &0,
            "at least 1 poll (10 is five minutes at the default poll_interval)",
        ));
    }
    if s.max_restarts_per_hour > 12 {
        return Err(invalid(
            "safety.max_restarts_per_hour",
            &s.max_restarts_per_hour,
            "at most 12; 0 turns the watchdog's restarts off (it still alerts)",
        ));
    }
    let b = &raw.benchmark;
    if !(1..=200).contains(&b.frequency_step) || !(1..=100).contains(&b.voltage_step) {
        return Err(invalid(
            "benchmark.frequency_step",
            &format!("{} / voltage_step {}", b.frequency_step, b.voltage_step),
            "use 1 to 200 MHz and 1 to 100 mV (25 and 20 are the usual steps)",
        ));
    }
    if b.window.is_zero() || b.sample_every.is_zero() || b.sample_every > b.window {
        return Err(invalid(
            "benchmark.window",
            &format!(
                "{} / sample_every {}",
                humantime::format_duration(b.window),
                humantime::format_duration(b.sample_every)
            ),
            "the window must be longer than sample_every, both above zero (600s and 15s are usual)",
        ));
    }
    if b.mode_settle.is_zero() || b.mode_settle > Duration::from_secs(3600) {
        return Err(invalid(
            "benchmark.mode_settle",
            &humantime::format_duration(b.mode_settle),
            "how long an Avalon calibrates after a work-mode change: above zero, at most 1h (5m is usual)",
        ));
    }
    if !(b.max_error_percent > 0.0 && b.max_error_percent <= 50.0) {
        return Err(invalid(
            "benchmark.max_error_percent",
            &b.max_error_percent,
            "a percentage above 0 and at most 50, e.g. 3 (healthy chips report 0–2.5 %)",
        ));
    }
    if !(b.pass_ratio > 0.5 && b.pass_ratio <= 1.0) {
        return Err(invalid(
            "benchmark.pass_ratio",
            &b.pass_ratio,
            "a share of the expected hashrate between 0.5 and 1, e.g. 0.94",
        ));
    }
    let a = &raw.alerts;
    if !(a.hashrate_drop > 0.0 && a.hashrate_drop < 1.0) {
        return Err(invalid(
            "alerts.hashrate_drop",
            &a.hashrate_drop,
            "a share of the recent mean between 0 and 1, e.g. 0.8 (alert below 80 %)",
        ));
    }
    if !(a.reject_rate > 0.0 && a.reject_rate < 1.0) {
        return Err(invalid(
            "alerts.reject_rate",
            &a.reject_rate,
            "a share of all shares between 0 and 1, e.g. 0.05 (5 %)",
        ));
    }
    if !(a.drift_percent > 0.0 && a.drift_percent <= 100.0) {
        return Err(invalid(
            "alerts.drift_percent",
            &a.drift_percent,
            "a percentage above 0, e.g. 15",
        ));
    }

    let mut modes = BTreeMap::new();
    for (model, presets) in raw.modes {
        for (name, p) in &presets {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    &format!("modes.{model}"),
                    &format!("{name:?}"),
                    "mode names are letters, digits, - and _",
                ));
            }
            if let Some(profile) = crate::miner::asic::profile(&model) {
                if !profile.absolute_frequency_mhz.contains(&p.frequency)
                    || !profile.absolute_core_voltage_mv.contains(&p.core_voltage)
                {
                    return Err(invalid(
                        &format!("modes.{model}.{name}"),
                        &format!("{} MHz / {} mV", p.frequency, p.core_voltage),
                        &format!(
                            "{model} never runs outside {:?} MHz and {:?} mV",
                            profile.absolute_frequency_mhz, profile.absolute_core_voltage_mv
                        ),
                    ));
                }
            }
        }
        modes.insert(model.to_ascii_uppercase(), presets);
    }

    let mut pools = Vec::new();
    for (i, p) in raw.pools.into_iter().enumerate() {
        if p.url.trim().is_empty() || p.url.contains("://") {
            return Err(invalid(
                &format!("pools[{i}].url"),
                &format!("{:?}", p.url),
                "the pool's host name without stratum+tcp://",
            ));
        }
        pools.push(ConfiguredPool {
            url: p.url,
            port: p.port,
            user: p.user,
            password: p.password.map(|s| s.0).unwrap_or_else(|| "x".into()),
        });
    }

    let ha = crate::power::HaApi::resolve(&raw.ha);
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&raw.power_keepalive) {
        return Err(invalid(
            "power_keepalive",
            &humantime::format_duration(raw.power_keepalive),
            "use 1s to 1h; 5m is the default",
        ));
    }
    let mut miners: Vec<MinerConfig> = Vec::new();
    for (i, rm) in raw.miners.into_iter().enumerate() {
        let key = |field: &str| format!("miners[{i}].{field}");
        let name = rm.name.trim().to_string();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                &key("name"),
                &format!("{:?}", rm.name),
                "names become MQTT topics: use letters, digits, - and _ (at most 64)",
            ));
        }
        if name == "bridge" {
            return Err(invalid(
                &key("name"),
                &"\"bridge\"",
                "\"bridge\" is the daemon's own topic; pick another name",
            ));
        }
        if miners.iter().any(|m| m.name == name) {
            return Err(invalid(
                &key("name"),
                &format!("{name:?}"),
                "another miner has the same name",
            ));
        }
        let mut host = rm
            .host
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(invalid(
                &key("host"),
                &format!("{:?}", rm.host),
                "the miner's IP address or host name, optionally with :port",
            ));
        }
        if let Some((h, port)) = host.rsplit_once(':') {
            if !h.contains(':') && port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid(
                    &key("host"),
                    &format!("{:?}", rm.host),
                    "the port after ':' must be 1 to 65535",
                ));
            }
        }
        if rm.kind == MinerKind::Nmminer {
            return Err(invalid(
                &key("kind"),
                &"nmminer",
                "NMMiner devices are found from their broadcasts: list them under nmminer.devices",
            ));
        }
        host.shrink_to_fit();
        for (field, b) in [
            ("frequency", rm.limits.frequency),
            ("core_voltage", rm.limits.core_voltage),
        ] {
            if let Some(b) = b {
                if b.min > b.max || b.min == 0 {
                    return Err(invalid(
                        &key(&format!("limits.{field}")),
                        &format!("{}..{}", b.min, b.max),
                        "min must be above 0 and not above max",
                    ));
                }
            }
        }
        if let Some(secret) = &rm.totp_secret {
            if crate::miner::axeos::totp(secret.expose()).is_err() {
                return Err(invalid(
                    &key("totp_secret"),
                    &"<redacted>",
                    "not a base32 TOTP secret as the NerdQaxe shows it",
                ));
            }
        }
        let power = match rm.power {
            Some(p) => Some(
                crate::power::validate(p, ha.as_ref())
                    .map_err(|(k, v, hint)| invalid(&key(&k), &v, &hint))?,
            ),
            None => None,
        };
        miners.push(MinerConfig {
            name,
            kind: rm.kind,
            host,
            totp_secret: rm.totp_secret,
            admin_password: rm.admin_password,
            limits: rm.limits,
            power,
        });
    }

    let nm = raw.nmminer;
    let nmminer = if nm.accept_all || !nm.devices.is_empty() {
        let listen = nm.listen.parse().map_err(|_| {
            invalid(
                "nmminer.listen",
                &format!("{:?}", nm.listen),
                "an address and UDP port such as 0.0.0.0:12345",
            )
        })?;
        if nm.expire_after < Duration::from_secs(1) {
            return Err(invalid(
                "nmminer.expire_after",
                &humantime::format_duration(nm.expire_after),
                "at least 1s; the devices broadcast every few seconds",
            ));
        }
        let mut devices = Vec::new();
        for (i, d) in nm.devices.iter().enumerate() {
            if d.ip.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    &format!("nmminer.devices[{i}].ip"),
                    &format!("{:?}", d.ip),
                    "the IP address the device broadcasts",
                ));
            }
            let name = d.name.clone().unwrap_or_else(|| default_nm_name(&d.ip));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                || miners.iter().any(|m| m.name == name)
            {
                return Err(invalid(
                    &format!("nmminer.devices[{i}].name"),
                    &format!("{name:?}"),
                    "a unique name of letters, digits, - and _",
                ));
            }
            devices.push((d.ip.clone(), name));
        }
        Some(NmminerConfig {
            listen,
            config_port: nm.config_port,
            accept_all: nm.accept_all,
            devices,
            expire_after: nm.expire_after,
        })
    } else {
        None
    };
    let energy = crate::energy::config::validate(raw.energy)
        .map_err(|(key, value, hint)| invalid(&key, &value, &hint))?;

    Ok(Config {
        mqtt: MqttConfig {
            host: m.host,
            port: m.port,
            username: m.username,
            password,
            client_id: m.client_id,
            base_topic: m.base_topic,
            discovery_prefix: m.discovery_prefix,
            keepalive: m.keepalive,
            tls: m.tls,
            ca_file: m.ca_file,
        },
        poll_interval: raw.poll_interval,
        request_timeout: raw.request_timeout,
        retries: raw.retries,
        offline_after: raw.offline_after,
        log_level: raw.log_level,
        store_retention: crate::store::history::Retention {
            raw_for: raw.store.raw_for,
            rollup_for: raw.store.rollup_for,
        },
        store_compact_every: raw.store.compact_every,
        store_path: raw.store.path,
        store_cache_bytes: raw.store.cache_capacity_mb.max(1) * 1024 * 1024,
        safety: raw.safety,
        alerts: raw.alerts,
        benchmark: raw.benchmark,
        modes,
        pools,
        miners,
        nmminer,
        energy,
        ha,
        power_keepalive: raw.power_keepalive,
        password_file_used: m.password_file.is_some(),
    })
}

impl Config {
    fn mqtt_password_from_file_is_unset(&self) -> bool {
        std::env::var_os("MINER2MQTT_MQTT__PASSWORD_FILE").is_none() && !self.password_file_used
    }

    /// The configuration as `bridge/info` shows it: secrets removed.
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::json!({
            "mqtt": {
                "host": self.mqtt.host,
                "port": self.mqtt.port,
                "username": self.mqtt.username,
                "base_topic": self.mqtt.base_topic,
                "discovery_prefix": self.mqtt.discovery_prefix,
                "tls": self.mqtt.tls,
            },
            "poll_interval": humantime::format_duration(self.poll_interval).to_string(),
            "request_timeout": humantime::format_duration(self.request_timeout).to_string(),
            "offline_after": self.offline_after,
            "safety": self.safety,
            "alerts": self.alerts,
            "miners": self.miners.len(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_the_repository_loads_with_the_documented_safety_values() {
        // In a Jail: it reads the environment, which the tests that set MINER2MQTT_* in theirs
        // would otherwise change under it (it failed once on another test's password file).
        figment::Jail::expect_with(|_| {
            let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"));
            let c = load(path, true).unwrap_or_else(|e| panic!("config.yaml: {e}"));
            assert_eq!(
                c.safety,
                Safety::default(),
                "config.yaml states the defaults"
            );
            assert_eq!(c.alerts, Alerts::default());
            assert_eq!(c.benchmark, crate::tuning::sweep::SweepConfig::default());
            assert_eq!(
                c.store_retention,
                crate::store::history::Retention::default()
            );
            assert_eq!(c.store_compact_every, Duration::from_secs(60));
            Ok(())
        });
    }
    use figment::providers::Yaml;

    fn load_str(yaml: &str) -> Result<Config, ConfigError> {
        from_figment(
            &Figment::from(Serialized::defaults(RawConfig::default())).merge(Yaml::string(yaml)),
        )
    }

    #[test]
    fn the_minimal_shape_from_the_issue_loads() {
        let c = load_str(
            "mqtt: { host: 127.0.0.1, port: 1883, base_topic: miner2mqtt, discovery_prefix: homeassistant }\n\
             poll_interval: 30s\n\
             miners:\n  - { name: bitaxe-1, kind: axeos, host: 192.168.1.50 }\n",
        )
        .unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.miners[0].host, "192.168.1.50");
        assert_eq!(c.miners[0].kind, MinerKind::Axeos);
    }

    #[test]
    fn numeric_password_is_accepted_and_never_printed() {
        let c = load_str("mqtt: { password: 123456 }").unwrap();
        assert_eq!(c.mqtt.password.as_ref().unwrap().expose(), "123456");
        assert!(!format!("{c:?}").contains("123456"));
        assert!(!c.public_view().to_string().contains("123456"));
        assert!(c.public_view()["mqtt"].get("password").is_none());
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_value() {
        let e = load_str("miners:\n  - { name: 'bad name', kind: axeos, host: x }")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("miners[0].name") && e.contains("bad name"),
            "{e}"
        );
        let e = load_str("poll_interval: soon").unwrap_err().to_string();
        assert!(e.contains("poll_interval"), "{e}");
        let e = load_str("mqtt: { hots: x }").unwrap_err().to_string();
        assert!(e.contains("hots"), "{e}");
        let e = load_str("miners:\n  - { name: a, kind: toaster, host: x }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("toaster"), "{e}");
    }

    /// Regression (issue 6.13): the unknown-key error nested backquotes
    /// (``expected `one of `host`, …``); it reads like a sentence now, with a hint.
    #[test]
    fn an_unknown_key_reads_like_a_sentence_with_a_hint() {
        let e = load_str("mqtt: { hots: x }").unwrap_err().to_string();
        assert!(
            e.contains("mqtt (from") && e.contains("unknown key \"hots\" (did you mean host?)"),
            "{e}"
        );
        assert!(!e.contains('`'), "{e}");
        let e = load_str("miners:\n  - { name: a, kind: axeoss, host: x }")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("miners[0].kind") && e.contains("did you mean axeos?") && !e.contains('`'),
            "{e}"
        );
    }

    #[test]
    fn duplicate_names_and_bad_ports_are_refused() {
        assert!(load_str(
            "miners: [{name: a, kind: axeos, host: x}, {name: a, kind: axeos, host: y}]"
        )
        .is_err());
        assert!(load_str("miners: [{name: a, kind: axeos, host: 'x:99999'}]").is_err());
        let c = load_str("miners: [{name: a, kind: bitaxe, host: 'http://x:8080/'}]").unwrap();
        assert_eq!(c.miners[0].host, "x:8080");
    }

    #[test]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.yaml", "mqtt: { host: file-host, port: 1883 }")?;
            jail.set_env("MINER2MQTT_MQTT__HOST", "env-host");
            jail.set_env("MINER2MQTT_MQTT__PASSWORD", "0042");
            let c = load(Path::new("config.yaml"), true).map_err(|e| e.to_string())?;
            assert_eq!(c.mqtt.host, "env-host");
            assert_eq!(c.mqtt.password.unwrap().expose(), "0042");
            jail.set_env("MINER2MQTT_MQTT__PORT", "not-a-port");
            let e = load(Path::new("config.yaml"), true)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("mqtt.port") && e.contains("MINER2MQTT_MQTT__PORT"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn password_file_wins() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("pw", "s3cret\n")?;
            jail.set_env("MINER2MQTT_MQTT__PASSWORD_FILE", "pw");
            let c = load(Path::new("absent.yaml"), false).map_err(|e| e.to_string())?;
            assert_eq!(c.mqtt.password.unwrap().expose(), "s3cret");
            Ok(())
        });
    }
}
