//! An ESP-Miner device (Bitaxe or NerdQaxe++) over real HTTP, in one of several firmware
//! generations, with physics good enough for tuning to mean something:
//! - hashrate ≈ frequency × small cores × chips / 1000 GH/s, with noise, collapsing (with the
//!   error rate rising) when the core voltage is too low for the frequency;
//! - power grows with f·V²; temperature follows power, fan and ambient with a lag;
//! - the firmware's overheat trip (hashing stops, fan to 100 %) until a restart;
//! - PATCH validates all-or-nothing (400 "Wrong API input"), restart makes the device
//!   unreachable for a few seconds.
//!
//! Fault knobs: latency, dropped connections, malformed JSON, HTTP 500, offline.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use rand::Rng;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The firmware generation the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Firmware {
    /// v2.10.1: string difficulties, `fanspeed` as the manual fan write, flat stratum fields.
    #[serde(rename = "v2.10")]
    V2_10,
    /// v2.12.2: numeric difficulties, `manualFanSpeed`.
    #[serde(rename = "v2.12")]
    V2_12,
    /// v2.15: `pools[]`, `primaryPoolIndex`, pause/resume.
    #[serde(rename = "v2.15")]
    V2_15,
    /// NerdQAxe++ firmware v1.1.
    #[serde(rename = "nerdqaxe")]
    Nerdqaxe,
}

impl Firmware {
    /// Whether this firmware can pause mining (`/api/system/pause`).
    pub fn pauses(self) -> bool {
        self == Firmware::V2_15
    }
}

impl std::str::FromStr for Firmware {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v2.10" | "2.10" | "legacy" => Ok(Firmware::V2_10),
            "v2.12" | "2.12" => Ok(Firmware::V2_12),
            "v2.15" | "2.15" => Ok(Firmware::V2_15),
            "nerdqaxe" | "nerdqaxe++" => Ok(Firmware::Nerdqaxe),
            other => Err(format!(
                "unknown firmware {other:?}: use v2.10, v2.12, v2.15 or nerdqaxe"
            )),
        }
    }
}

/// The chip physics. Independent of the adapter's tables on purpose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chip {
    pub model: &'static str,
    pub small_cores: u32,
    /// Voltage (mV) the chip needs at `f0` MHz, and the extra mV per MHz above it.
    pub v0: f64,
    pub f0: f64,
    pub mv_per_mhz: f64,
    /// W per chip = static + k · MHz · V².
    pub static_w: f64,
    pub k: f64,
    pub default_frequency: u32,
    pub default_voltage: u32,
    pub frequency_options: &'static [u32],
    pub voltage_options: &'static [u32],
}

impl Chip {
    /// Share of hashes lost at `frequency` MHz and `core_voltage` mV (voltage short of what the
    /// frequency needs costs errors).
    pub fn error_rate(&self, frequency: f64, core_voltage: f64) -> f64 {
        let deficit = self.v0 + self.mv_per_mhz * (frequency - self.f0) - core_voltage;
        if deficit <= 0.0 {
            0.002
        } else {
            (0.002 + (deficit / 60.0).powi(2)).min(1.0)
        }
    }

    /// Board watts with `chips` chips, hashing or not (idle chips draw half their static power).
    pub fn board_watts(&self, chips: u32, frequency: f64, core_voltage: f64, hashing: bool) -> f64 {
        let chip_w = if hashing {
            self.static_w + self.k * frequency * (core_voltage / 1000.0).powi(2)
        } else {
            self.static_w * 0.5
        };
        1.5 + chips as f64 * chip_w
    }

    /// Steady-state (watts, GH/s) at a clock, without the noise.
    pub fn steady(&self, chips: u32, frequency: u32, core_voltage: u32) -> (f64, f64) {
        let (f, v) = (frequency as f64, core_voltage as f64);
        let nominal = f * self.small_cores as f64 * chips as f64 / 1000.0;
        (
            self.board_watts(chips, f, v, true),
            nominal * (1.0 - self.error_rate(f, v)),
        )
    }
}

pub const BM1370: Chip = Chip {
    model: "BM1370",
    small_cores: 2040,
    v0: 1000.0,
    f0: 400.0,
    mv_per_mhz: 0.5,
    static_w: 4.0,
    k: 0.0192,
    default_frequency: 525,
    default_voltage: 1150,
    frequency_options: &[400, 490, 525, 550, 600, 625],
    voltage_options: &[1000, 1060, 1100, 1150, 1200, 1250],
};

pub const BM1368: Chip = Chip {
    model: "BM1368",
    small_cores: 1276,
    v0: 1050.0,
    f0: 400.0,
    mv_per_mhz: 0.55,
    static_w: 3.0,
    k: 0.0175,
    default_frequency: 490,
    default_voltage: 1166,
    frequency_options: &[400, 425, 450, 475, 485, 490, 500, 525, 550, 575],
    voltage_options: &[1100, 1150, 1166, 1200, 1250, 1300],
};

pub const BM1366: Chip = Chip {
    model: "BM1366",
    small_cores: 894,
    v0: 1080.0,
    f0: 400.0,
    mv_per_mhz: 0.6,
    static_w: 3.0,
    k: 0.021,
    default_frequency: 485,
    default_voltage: 1200,
    frequency_options: &[400, 425, 450, 475, 485, 500, 525, 550, 575],
    voltage_options: &[1100, 1150, 1200, 1250, 1300],
};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub firmware: Firmware,
    pub chip: Chip,
    pub chips: u32,
    pub mac: [u8; 6],
    pub hostname: String,
    pub ambient_c: f64,
    /// How quickly the chip's temperature follows its power and fan (time constant, s).
    pub thermal_tau_s: f64,
    /// How long a restart keeps the device unreachable.
    pub restart_time: Duration,
    /// NerdQaxe OTP: PATCH needs a valid `X-TOTP` header.
    pub totp_secret: Option<String>,
}

impl DeviceSpec {
    /// A Bitaxe Gamma (BM1370) on the given firmware, with a MAC derived from `n`.
    pub fn gamma(n: u32, firmware: Firmware) -> DeviceSpec {
        DeviceSpec::new(n, firmware, BM1370, 1)
    }

    pub fn new(n: u32, firmware: Firmware, chip: Chip, chips: u32) -> DeviceSpec {
        let b = n.to_be_bytes();
        DeviceSpec {
            firmware,
            chip,
            chips,
            mac: [0x02, 0x5a, b[0], b[1], b[2], b[3]],
            hostname: format!("sim-{}-{n}", chip.model.to_ascii_lowercase()),
            ambient_c: 24.0,
            thermal_tau_s: 20.0,
            restart_time: Duration::from_secs(3),
            totp_secret: None,
        }
    }

    /// Gives the chip silicon of its own, seeded by `seed`: it needs up to ±30 mV more or less
    /// at each frequency and draws up to ±6 % more or less power, so simulated miners have
    /// different optima (as real chips of one model do).
    pub fn with_silicon(mut self, seed: u64) -> DeviceSpec {
        // splitmix64: two well-spread numbers from one seed, the same on every machine.
        let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        self.chip.v0 += (next() * 2.0 - 1.0) * 30.0;
        self.chip.k *= 1.0 + (next() * 2.0 - 1.0) * 0.06;
        self
    }

    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Faults to inject, changeable while running.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Faults {
    pub latency_ms: u64,
    /// Share of connections closed without an answer, 0–1.
    pub drop_rate: f64,
    /// Share of info replies cut in half, 0–1.
    pub malformed_rate: f64,
    /// Share of requests answered 500, 0–1.
    pub error500_rate: f64,
    /// Refuse every connection, as a device that is unplugged.
    pub offline: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Pool {
    id: i64,
    url: String,
    port: u16,
    user: String,
}

/// The device's mutable state.
#[derive(Debug)]
struct Device {
    spec: DeviceSpec,
    frequency: u32,
    core_voltage: u32,
    autofan: u8,
    manual_fan: f64,
    fan: f64,
    temp: f64,
    vr_temp: f64,
    temptarget: f64,
    min_fan: f64,
    hashrate: f64,
    error_rate: f64,
    power: f64,
    shares_accepted: u64,
    shares_rejected: u64,
    share_acc: f64,
    best: f64,
    best_session: f64,
    booted: Instant,
    restarting_until: Option<Instant>,
    overheat: bool,
    paused: bool,
    /// Hashing has stopped while the device answers on (a frozen ASIC chain); a restart
    /// clears it unless `stall_persists`.
    stalled: bool,
    stall_persists: bool,
    restarts: u64,
    /// Its mains power is off (a smart plug): no answer, no draw.
    unpowered: bool,
    pools: Vec<Pool>,
    primary: i64,
    secondary: i64,
    last: Instant,
    /// Every accepted PATCH body, for tests to check what reached the device.
    patches: Vec<Value>,
    requests: u64,
}

const POOL_DIFFICULTY: f64 = 1000.0;

impl Device {
    fn new(spec: DeviceSpec) -> Device {
        let now = Instant::now();
        let mut d = Device {
            frequency: spec.chip.default_frequency,
            core_voltage: spec.chip.default_voltage,
            autofan: if spec.firmware == Firmware::Nerdqaxe {
                2
            } else {
                1
            },
            manual_fan: 100.0,
            fan: 50.0,
            temp: spec.ambient_c + 20.0,
            vr_temp: spec.ambient_c + 25.0,
            temptarget: 60.0,
            min_fan: 25.0,
            hashrate: 0.0,
            error_rate: 0.0,
            power: 0.0,
            shares_accepted: 0,
            shares_rejected: 0,
            share_acc: 0.0,
            best: 4.29e9,
            best_session: 0.0,
            booted: now,
            restarting_until: None,
            overheat: false,
            paused: false,
            stalled: false,
            stall_persists: false,
            restarts: 0,
            unpowered: false,
            pools: vec![
                Pool {
                    id: 0,
                    url: "public-pool.io".into(),
                    port: 21496,
                    user: format!("bc1qsim.{}", spec.hostname),
                },
                Pool {
                    id: 1,
                    url: "solo.ckpool.org".into(),
                    port: 3333,
                    user: format!("bc1qsim.{}", spec.hostname),
                },
            ],
            primary: 0,
            secondary: 1,
            last: now,
            patches: Vec::new(),
            requests: 0,
            spec,
        };
        d.settle();
        d
    }

    /// Puts temperature and fan at their steady state for the current settings.
    fn settle(&mut self) {
        let step = self.max_step().min(5.0);
        for _ in 0..(1000.0 / step) as usize {
            self.step(step);
        }
        self.best_session = 0.0;
        self.shares_accepted = 0;
        self.shares_rejected = 0;
        self.share_acc = 0.0;
    }

    fn advance(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().min(120.0);
        self.last = now;
        if let Some(until) = self.restarting_until {
            if now >= until {
                self.restarting_until = None;
                self.booted = now;
                self.overheat = false;
                self.paused = false;
                self.stalled &= self.stall_persists;
                self.restarts += 1;
                self.best_session = 0.0;
                self.shares_accepted = 0;
                self.shares_rejected = 0;
            }
        }
        // Integrate in steps of at most 1 s (and a quarter of the thermal lag) so the fan loop
        // and the lag stay stable.
        let mut left = dt;
        let max_step = self.max_step();
        while left > 0.0 {
            let step = left.min(max_step);
            self.step(step);
            left -= step;
        }
    }

    /// The longest integration step that keeps the thermal loop stable, s.
    fn max_step(&self) -> f64 {
        (self.spec.thermal_tau_s / 4.0).clamp(0.05, 1.0)
    }

    fn step(&mut self, dt: f64) {
        let c = self.spec.chip;
        let n = self.spec.chips as f64;
        let f = self.frequency as f64;
        let v = self.core_voltage as f64;
        let hashing = !self.overheat
            && !self.paused
            && !self.stalled
            && !self.unpowered
            && self.restarting_until.is_none();
        self.error_rate = c.error_rate(f, v);
        let nominal = f * c.small_cores as f64 * n / 1000.0;
        let noise = 1.0 + rand::rng().random_range(-0.02..0.02);
        self.hashrate = if hashing {
            (nominal * (1.0 - self.error_rate) * noise).max(0.0)
        } else {
            0.0
        };
        self.power = if self.unpowered {
            0.0
        } else {
            c.board_watts(self.spec.chips, f, v, hashing)
        };

        // Fan: the firmware's P loop towards temptarget, or the manual duty.
        self.fan = if self.overheat {
            100.0
        } else if self.autofan > 0 {
            (40.0 + (self.temp - self.temptarget) * 8.0).clamp(self.min_fan, 100.0)
        } else {
            self.manual_fan
        };
        // °C per W falls as the fan spins up; more chips spread the heat.
        let resistance = 0.9 / (0.2 + 0.8 * self.fan / 100.0) / n.sqrt();
        let target = self.spec.ambient_c + self.power * resistance;
        let k = 1.0 - (-dt / self.spec.thermal_tau_s.max(0.1)).exp();
        self.temp += (target - self.temp) * k;
        self.vr_temp +=
            (self.spec.ambient_c + 6.0 + self.power * resistance * 1.15 - self.vr_temp) * k;
        if self.temp >= 70.0 || self.vr_temp >= 105.0 {
            self.overheat = true;
        }

        // Shares: hashrate over difficulty × 2³².
        if hashing {
            let expected = self.hashrate * 1e9 * dt / (POOL_DIFFICULTY * 4294967296.0);
            self.share_acc += expected;
            while self.share_acc >= 1.0 {
                self.share_acc -= 1.0;
                if rand::rng().random::<f64>() < self.error_rate.min(0.5) * 0.1 {
                    self.shares_rejected += 1;
                } else {
                    self.shares_accepted += 1;
                    let u: f64 = rand::rng().random_range(1e-9..1.0);
                    let diff = POOL_DIFFICULTY / u;
                    self.best_session = self.best_session.max(diff);
                    self.best = self.best.max(diff);
                }
            }
        }
    }

    fn uptime(&self) -> u64 {
        self.booted.elapsed().as_secs()
    }

    fn version(&self) -> &'static str {
        match self.spec.firmware {
            Firmware::V2_10 => "v2.10.1",
            Firmware::V2_12 => "v2.12.2",
            Firmware::V2_15 => "v2.15.0",
            Firmware::Nerdqaxe => "v1.1.0-beta1",
        }
    }

    fn pool(&self, id: i64) -> &Pool {
        self.pools
            .iter()
            .find(|p| p.id == id)
            .unwrap_or(&self.pools[0])
    }

    /// `/api/system/info` in this device's generation.
    fn info(&self) -> Value {
        let c = self.spec.chip;
        let fw = self.spec.firmware;
        let nominal_v = if self.spec.chips > 1 { 12.0 } else { 5.0 };
        let input_mv = nominal_v * 1000.0 - self.power * 3.0;
        let current_ma = self.power / (input_mv / 1000.0) * 1000.0;
        let expected =
            self.frequency as f64 * c.small_cores as f64 * self.spec.chips as f64 / 1000.0;
        let primary = self.pool(self.primary).clone();
        let fallback = self.pool(self.secondary).clone();
        let string_diff = |d: f64| -> Value {
            let (v, s) = if d >= 1e12 {
                (d / 1e12, "T")
            } else if d >= 1e9 {
                (d / 1e9, "G")
            } else if d >= 1e6 {
                (d / 1e6, "M")
            } else if d >= 1e3 {
                (d / 1e3, "k")
            } else {
                (d, "")
            };
            Value::from(format!("{v:.2} {s}").trim_end().to_string())
        };
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        if fw == Firmware::Nerdqaxe {
            put("asicCount", self.spec.chips.into());
            put("smallCoreCount", c.small_cores.into());
            put("deviceModel", "NerdQAxe++".into());
            put("hostip", "127.0.0.1".into());
            put("macAddr", self.spec.mac_string().into());
            put("wifiRSSI", (-60).into());
            put("power", self.power.into());
            put("maxPower", 100.into());
            put("minPower", 52.into());
            put("maxVoltage", 13.into());
            put("minVoltage", 11.into());
            put("current", current_ma.into());
            put("currentA", (current_ma / 1000.0).into());
            put("minCurrentA", 0.into());
            put("maxCurrentA", 8.into());
            put("temp", self.temp.into());
            put("vrTemp", self.vr_temp.into());
            put("vrTempInt", (self.vr_temp + 2.0).into());
            put("hashRateTimestamp", (self.uptime() * 1000).into());
            put("hashRate", self.hashrate.into());
            for k in ["hashRate_1m", "hashRate_10m", "hashRate_1h", "hashRate_1d"] {
                put(k, self.hashrate.into());
            }
            put("coreVoltage", self.core_voltage.into());
            put("defaultCoreVoltage", c.default_voltage.into());
            put("coreVoltageActual", (self.core_voltage as f64 - 2.0).into());
            put("fanspeed", self.fan.round().into());
            put("manualFanSpeed", self.manual_fan.into());
            put("fanrpm", ((self.fan * 33.0) as u64).into());
            put("fanrpm2", ((self.fan * 29.0) as u64).into());
            put("fanspeed2", self.fan.round().into());
            put("fanCount", 2.into());
            put("lastpingrtt", 1.2.into());
            put("recentpingloss", 0.into());
            put("shutdown", self.paused.into());
            put("duplicateHWNonces", 0.into());
            put(
                "stratum",
                json!({
                    "poolMode": 0, "activePoolMode": 0, "poolBalance": 50, "totalBestDiff": self.best as u64,
                    "usingFallback": false,
                    "pools": [{ "connected": true, "verifyBlocked": "", "poolDifficulty": POOL_DIFFICULTY as u64,
                        "networkDifficulty": 124932866000000u64, "poolDiffErr": false, "accepted": self.shares_accepted,
                        "rejected": self.shares_rejected, "pingRtt": 1.2, "pingLoss": 0, "bestDiff": self.best_session as u64,
                        "activeProtocol": 0, "encrypted": false }]
                }),
            );
            put("poolDifficulty", (POOL_DIFFICULTY as u64).into());
            put("networkDifficulty", 124932866000000u64.into());
            put("foundBlocks", 0.into());
            put("totalFoundBlocks", 0.into());
            put("sharesAccepted", self.shares_accepted.into());
            put("sharesRejected", self.shares_rejected.into());
            put("bestDiff", (self.best as u64).into());
            put("bestSessionDiff", (self.best_session as u64).into());
            put("asicTemps", json!(vec![0; self.spec.chips as usize]));
            put("pidTargetTemp", self.temptarget.into());
            put("pidP", 6.into());
            put("pidI", 0.1.into());
            put("pidD", 10.into());
            put(
                "fans",
                json!([
                    { "label": "M2", "mode": self.autofan, "manualSpeed": self.manual_fan, "overheatTemp": 70, "rpm": (self.fan * 33.0) as u64, "speedPerc": self.fan.round(), "pid": { "targetTemp": self.temptarget, "p": 6, "i": 0.1, "d": 10 } },
                    { "label": "M1", "mode": 0, "manualSpeed": 40, "overheatTemp": 80, "rpm": (self.fan * 29.0) as u64, "speedPerc": self.fan.round(), "pid": { "targetTemp": 65, "p": 6, "i": 0.1, "d": 10 } }
                ]),
            );
            put("hostname", self.spec.hostname.clone().into());
            put("ssid", "simnet".into());
            put("stratumURL", primary.url.clone().into());
            put("stratumPort", primary.port.into());
            put("stratumUser", primary.user.clone().into());
            put("stratumEnonceSubscribe", true.into());
            put("stratumTLS", false.into());
            put("fallbackStratumURL", fallback.url.clone().into());
            put("fallbackStratumPort", fallback.port.into());
            put("fallbackStratumUser", fallback.user.clone().into());
            put("fallbackStratumEnonceSubscribe", true.into());
            put("fallbackStratumTLS", false.into());
            put("stratumProtocol", 0.into());
            put("fallbackStratumProtocol", 0.into());
            put("sv2AuthorityPubkey", "".into());
            put("fallbackSv2AuthorityPubkey", "".into());
            put("sv2ChannelType", 0.into());
            put("fallbackSv2ChannelType", 0.into());
            put("voltage", input_mv.into());
            put("frequency", self.frequency.into());
            put("defaultFrequency", c.default_frequency.into());
            put("jobInterval", 500.into());
            put("stratumDifficulty", 1000.into());
            put("overheat_temp", 70.into());
            put("flipscreen", 0.into());
            put("invertscreen", 0.into());
            put("autoscreenoff", 1.into());
            put("invertfanpolarity", 0.into());
            put("autofanspeed", self.autofan.into());
            put("stratum_keep", 1.into());
            put("vrFrequency", 25011.into());
            put("defaultVrFrequency", 25011.into());
            put("otp", self.spec.totp_secret.is_some().into());
            put("ASICModel", c.model.into());
            put("uptimeSeconds", self.uptime().into());
            put("lastResetReason", "SYSTEM.RESET_SOFTWARE".into());
            put("wifiStatus", "WiFi Connected!".into());
            put("freeHeap", 6890556.into());
            put("freeHeapInt", 148248.into());
            put("version", self.version().into());
            put("runningPartition", "ota_0".into());
            put("defaultTheme", "cosmic".into());
            return Value::Object(m);
        }

        put("power", self.power.into());
        put("voltage", input_mv.into());
        put("current", current_ma.into());
        put("temp", self.temp.into());
        put("temp2", (if fw == Firmware::V2_10 { 0 } else { -1 }).into());
        put("vrTemp", self.vr_temp.round().into());
        put("maxPower", 40.into());
        put("nominalVoltage", (nominal_v as u64).into());
        put("hashRate", self.hashrate.into());
        if fw != Firmware::V2_10 {
            for k in ["hashRate_1m", "hashRate_10m", "hashRate_1h"] {
                put(k, self.hashrate.into());
            }
        }
        put("expectedHashrate", expected.round().into());
        if fw != Firmware::V2_10 {
            put("errorPercentage", (self.error_rate * 100.0).into());
        }
        if fw == Firmware::V2_10 {
            put("bestDiff", string_diff(self.best));
            put("bestSessionDiff", string_diff(self.best_session));
        } else {
            put("bestDiff", (self.best as u64).into());
            put("bestSessionDiff", (self.best_session as u64).into());
        }
        put("poolDifficulty", (POOL_DIFFICULTY as u64).into());
        put("isUsingFallbackStratum", 0.into());
        if fw != Firmware::V2_10 {
            put("poolAddrFamily", 2.into());
        }
        put("isPSRAMAvailable", 1.into());
        put("freeHeap", 8212708.into());
        if fw != Firmware::V2_10 {
            put("freeHeapInternal", 104027.into());
            put("freeHeapSpiram", 8140652.into());
        }
        put("coreVoltage", self.core_voltage.into());
        put(
            "coreVoltageActual",
            (self.core_voltage as f64 - 6.0).round().into(),
        );
        put("frequency", self.frequency.into());
        put("ssid", "simnet".into());
        put("macAddr", self.spec.mac_string().into());
        put("hostname", self.spec.hostname.clone().into());
        if fw != Firmware::V2_10 {
            put("ipv4", "127.0.0.1".into());
            put("ipv6", "::1".into());
        }
        put("wifiStatus", "Connected!".into());
        put("wifiRSSI", (-55).into());
        put("apEnabled", 0.into());
        put("sharesAccepted", self.shares_accepted.into());
        put("sharesRejected", self.shares_rejected.into());
        put(
            "sharesRejectedReasons",
            if self.shares_rejected > 0 {
                json!([{ "message": "Stale", "count": self.shares_rejected }])
            } else {
                json!([])
            },
        );
        put("uptimeSeconds", self.uptime().into());
        put("smallCoreCount", c.small_cores.into());
        put("ASICModel", c.model.into());
        if self.spec.chips > 1 {
            put("asicCount", self.spec.chips.into());
        }
        if fw == Firmware::V2_15 {
            put("pools", Value::Array(self.pools.iter().map(|p| json!({
                "id": p.id, "stratumProtocol": "SV1", "stratumURL": p.url, "stratumPort": p.port,
                "stratumUser": p.user, "stratumPassword": "*****", "stratumSuggestedDifficulty": 1000,
                "stratumExtranonceSubscribe": false, "stratumTLS": 0, "stratumCert": "", "stratumDecodeCoinbase": true,
            })).collect()));
            put("primaryPoolIndex", self.primary.into());
            put("secondaryPoolIndex", self.secondary.into());
            put("useFallbackStratum", true.into());
            put("miningPaused", self.paused.into());
        }
        // Flat stratum fields stay readable on every generation (v2.15 ignores them on write).
        put("stratumURL", primary.url.clone().into());
        put("stratumPort", primary.port.into());
        put("stratumUser", primary.user.clone().into());
        put("stratumSuggestedDifficulty", 1000.into());
        put("stratumExtranonceSubscribe", 0.into());
        put("fallbackStratumURL", fallback.url.clone().into());
        put("fallbackStratumPort", fallback.port.into());
        put("fallbackStratumUser", fallback.user.clone().into());
        put("fallbackStratumSuggestedDifficulty", 1000.into());
        put("fallbackStratumExtranonceSubscribe", 0.into());
        put("responseTime", 200.5.into());
        put("version", self.version().into());
        put("axeOSVersion", self.version().into());
        put("idfVersion", "v5.5.1".into());
        put("boardVersion", board(c.model, self.spec.chips).0.into());
        if fw != Firmware::V2_10 {
            put("resetReason", "Power on".into());
        }
        put("runningPartition", "ota_0".into());
        put("overheat_mode", (self.overheat as u8).into());
        put("overclockEnabled", 0.into());
        put("display", "SSD1306 (128x32)".into());
        put("rotation", 0.into());
        put("invertscreen", 0.into());
        put("displayTimeout", (-1).into());
        put("autofanspeed", self.autofan.into());
        put(
            "fanspeed",
            if fw == Firmware::V2_10 {
                Value::from(self.fan.round())
            } else {
                Value::from(self.fan)
            },
        );
        if fw != Firmware::V2_10 {
            put("manualFanSpeed", self.manual_fan.into());
        }
        put("minFanSpeed", self.min_fan.into());
        put("temptarget", self.temptarget.into());
        put("fanrpm", ((self.fan * 40.0) as u64).into());
        if fw != Firmware::V2_10 {
            put("fan2rpm", 0.into());
        }
        put("statsFrequency", 0.into());
        if fw != Firmware::V2_10 {
            put("blockFound", 0.into());
            put("blockHeight", 931409.into());
            put("scriptsig", "Public-Pool".into());
            put("networkDifficulty", 146472570619930u64.into());
            let domains = vec![self.hashrate / 4.0; 4];
            put(
                "hashrateMonitor",
                json!({ "asics": [{ "total": self.hashrate, "domains": domains, "errorCount": self.shares_rejected }] }),
            );
        }
        Value::Object(m)
    }

    fn asic(&self) -> Value {
        let c = self.spec.chip;
        json!({
            "ASICModel": c.model,
            "deviceModel": board(c.model, self.spec.chips).1,
            "swarmColor": "purple",
            "asicCount": self.spec.chips,
            "defaultFrequency": c.default_frequency,
            "frequencyOptions": c.frequency_options,
            "defaultVoltage": c.default_voltage,
            "voltageOptions": c.voltage_options,
        })
    }

    /// Applies a PATCH body all-or-nothing, as the firmware does.
    fn patch(&mut self, body: &Value) -> Result<(), ()> {
        let obj = body.as_object().ok_or(())?;
        let fw = self.spec.firmware;
        let int = |v: &Value| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0);
        // Validate everything first.
        for (k, v) in obj {
            let ok = match k.as_str() {
                "frequency" | "coreVoltage" => int(v).is_some_and(|f| f > 0.0),
                "autofanspeed" => {
                    int(v).is_some_and(|f| f <= if fw == Firmware::Nerdqaxe { 2.0 } else { 1.0 })
                }
                "fanspeed" => int(v).is_some_and(|f| f <= 100.0),
                "manualFanSpeed" => fw != Firmware::V2_10 && int(v).is_some_and(|f| f <= 100.0),
                "temptarget" => int(v).is_some_and(|f| f <= 100.0),
                "stratumURL"
                | "stratumUser"
                | "stratumPassword"
                | "fallbackStratumURL"
                | "fallbackStratumUser"
                | "fallbackStratumPassword"
                | "hostname" => v.is_string(),
                "stratumPort" | "fallbackStratumPort" => {
                    int(v).is_some_and(|p| (1.0..=65535.0).contains(&p))
                }
                "primaryPoolIndex" | "secondaryPoolIndex" => {
                    fw == Firmware::V2_15
                        && v.as_i64()
                            .is_some_and(|id| self.pools.iter().any(|p| p.id == id))
                }
                // Settings this simulator does not model are accepted and ignored.
                _ => true,
            };
            if !ok {
                return Err(());
            }
        }
        for (k, v) in obj {
            match k.as_str() {
                "frequency" => self.frequency = v.as_f64().unwrap_or_default() as u32,
                "coreVoltage" => self.core_voltage = v.as_f64().unwrap_or_default() as u32,
                "autofanspeed" => self.autofan = v.as_f64().unwrap_or_default() as u8,
                "fanspeed" if fw == Firmware::V2_10 => {
                    self.manual_fan = v.as_f64().unwrap_or_default()
                }
                "manualFanSpeed" => self.manual_fan = v.as_f64().unwrap_or_default(),
                "temptarget" => self.temptarget = v.as_f64().unwrap_or_default(),
                "primaryPoolIndex" => self.primary = v.as_i64().unwrap_or_default(),
                "secondaryPoolIndex" => self.secondary = v.as_i64().unwrap_or_default(),
                "stratumURL" if fw != Firmware::V2_15 => {
                    self.pools[0].url = v.as_str().unwrap_or_default().into()
                }
                "stratumPort" if fw != Firmware::V2_15 => {
                    self.pools[0].port = v.as_f64().unwrap_or_default() as u16
                }
                "stratumUser" if fw != Firmware::V2_15 => {
                    self.pools[0].user = v.as_str().unwrap_or_default().into()
                }
                _ => {}
            }
        }
        self.patches.push(body.clone());
        Ok(())
    }
}

/// What a test can see of a running simulated device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub frequency: u32,
    pub core_voltage: u32,
    pub autofan: u8,
    pub manual_fan: f64,
    pub temp: f64,
    pub hashrate: f64,
    pub paused: bool,
    pub overheat: bool,
    /// Restarts completed since it started.
    pub restarts: u64,
    pub primary_pool: i64,
    pub patches: Vec<Value>,
    pub requests: u64,
}

struct Shared {
    device: Mutex<Device>,
    faults: Mutex<Faults>,
    /// Cancelled when the device reboots: every open connection drops, as on real hardware.
    reboot: Mutex<CancellationToken>,
}

/// A running simulated device.
#[derive(Clone)]
pub struct SimDevice {
    pub addr: SocketAddr,
    pub spec: DeviceSpec,
    shared: Arc<Shared>,
}

impl SimDevice {
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().unwrap().clone()
    }

    pub fn snapshot(&self) -> Snapshot {
        let d = self.shared.device.lock().unwrap();
        Snapshot {
            frequency: d.frequency,
            core_voltage: d.core_voltage,
            autofan: d.autofan,
            manual_fan: d.manual_fan,
            temp: d.temp,
            hashrate: d.hashrate,
            paused: d.paused,
            overheat: d.overheat,
            restarts: d.restarts,
            primary_pool: d.primary,
            patches: d.patches.clone(),
            requests: d.requests,
        }
    }

    /// The `/api/system/info` body the device would send now.
    pub fn info_json(&self) -> Value {
        let mut d = self.shared.device.lock().unwrap();
        d.advance();
        d.info()
    }

    /// Mains power from a smart plug: off drops every connection and answers nothing; on
    /// boots the device (unreachable for its restart time), keeping its settings as a real
    /// one keeps them in flash.
    pub fn set_power(&self, on: bool) {
        {
            let mut d = self.shared.device.lock().unwrap();
            d.advance();
            if d.unpowered != on {
                return;
            }
            d.unpowered = !on;
            if on {
                d.restarting_until = Some(Instant::now() + d.spec.restart_time);
            }
        }
        if !on {
            let old = std::mem::take(&mut *self.shared.reboot.lock().unwrap());
            old.cancel();
        }
    }

    /// Whether its mains power is on.
    pub fn powered(&self) -> bool {
        !self.shared.device.lock().unwrap().unpowered
    }

    /// Forces the ASIC temperature (to exercise overheating without waiting for physics).
    pub fn set_temperature(&self, celsius: f64) {
        let mut d = self.shared.device.lock().unwrap();
        d.temp = celsius;
    }

    /// The room warms or cools: the chip's temperature follows with its thermal lag.
    pub fn set_ambient(&self, celsius: f64) {
        let mut d = self.shared.device.lock().unwrap();
        d.advance();
        d.spec.ambient_c = celsius;
    }

    /// Hashing stops while the device goes on answering (hashrate 0), as a frozen ASIC chain
    /// does; a restart cures it unless `survives_restart`.
    pub fn stall(&self, survives_restart: bool) {
        let mut d = self.shared.device.lock().unwrap();
        d.advance();
        d.stalled = true;
        d.stall_persists = survives_restart;
    }
}

/// Starts a simulated device on `addr` (port 0 for any free port).
pub async fn start(
    spec: DeviceSpec,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<SimDevice> {
    let listener = TcpListener::bind(addr).await?;
    Ok(serve(spec, listener, cancel))
}

/// Serves a simulated device on an already bound listener.
pub fn serve(spec: DeviceSpec, listener: TcpListener, cancel: CancellationToken) -> SimDevice {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let shared = Arc::new(Shared {
        device: Mutex::new(Device::new(spec.clone())),
        faults: Mutex::new(Faults::default()),
        reboot: Mutex::new(CancellationToken::new()),
    });
    let app = Router::new()
        .route("/", get(index))
        .route("/api/system/info", get(info))
        .route("/api/system/asic", get(asic))
        .route("/api/system", patch(patch_system))
        .route("/api/system/restart", post(restart))
        .route("/api/system/pause", post(pause))
        .route("/api/system/resume", post(resume))
        .with_state(shared.clone());
    let accept_shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
            };
            let (offline, drop_it) = {
                let faults = accept_shared.faults.lock().unwrap().clone();
                let mut d = accept_shared.device.lock().unwrap();
                d.advance();
                let restarting = d.restarting_until.is_some();
                (
                    faults.offline || restarting || d.unpowered,
                    rand::rng().random::<f64>() < faults.drop_rate,
                )
            };
            if offline || drop_it {
                // Unplugged, rebooting, or a flaky link: the connection closes with no answer.
                drop(stream);
                continue;
            }
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let conn_cancel = cancel.clone();
            let reboot = accept_shared.reboot.lock().unwrap().clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                tokio::select! {
                    _ = conn => {}
                    _ = conn_cancel.cancelled() => {}
                    _ = reboot.cancelled() => {}
                }
            });
        }
    });
    SimDevice { addr, spec, shared }
}

/// Latency, 500s; returns a response to send instead of the real one, if a fault fires.
async fn inject(shared: &Shared) -> Option<Response> {
    let faults = shared.faults.lock().unwrap().clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if rand::rng().random::<f64>() < faults.error500_rate {
        return Some((StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response());
    }
    None
}

fn json_response(body: String) -> Response {
    ([("content-type", "application/json")], body).into_response()
}

/// The web UI's entry page: AxeOS is an Angular app whose `index.html` is titled "AxeOS", which
/// other tools (and a LAN scan) use to recognise the device.
async fn index(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(r) = inject(&shared).await {
        return r;
    }
    let page = "<!doctype html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>AxeOS</title>\n  <base href=\"/\">\n  <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n  <link rel=\"icon\" type=\"image/x-icon\" href=\"favicon.ico\">\n  <link rel=\"stylesheet\" href=\"styles.css\">\n</head>\n<body>\n  <app-root></app-root>\n  <script src=\"runtime.js\" type=\"module\"></script><script src=\"main.js\" type=\"module\"></script>\n</body>\n</html>\n";
    ([(axum::http::header::CONTENT_TYPE, "text/html")], page).into_response()
}

async fn info(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(r) = inject(&shared).await {
        return r;
    }
    let body = {
        let mut d = shared.device.lock().unwrap();
        d.requests += 1;
        d.advance();
        serde_json::to_string_pretty(&d.info()).unwrap_or_default()
    };
    let malformed = rand::rng().random::<f64>() < shared.faults.lock().unwrap().malformed_rate;
    if malformed {
        return json_response(body[..body.len() / 2].to_string());
    }
    json_response(body)
}

async fn asic(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(r) = inject(&shared).await {
        return r;
    }
    let d = shared.device.lock().unwrap();
    if d.spec.firmware == Firmware::Nerdqaxe {
        // This firmware has no /asic endpoint.
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    json_response(d.asic().to_string())
}

fn totp_ok(spec: &DeviceSpec, headers: &HeaderMap) -> bool {
    let Some(secret) = &spec.totp_secret else {
        return true;
    };
    let Some(code) = headers.get("X-TOTP").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Ok(bytes) = totp_rs::Secret::Encoded(secret.clone()).to_bytes() else {
        return false;
    };
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes);
    totp.check_current(code).unwrap_or(false)
}

async fn patch_system(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = inject(&shared).await {
        return r;
    }
    let mut d = shared.device.lock().unwrap();
    d.advance();
    if !totp_ok(&d.spec, &headers) {
        return (StatusCode::UNAUTHORIZED, "Invalid or missing TOTP").into_response();
    }
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    match parsed.map_err(|_| ()).and_then(|v| d.patch(&v)) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(()) => (StatusCode::BAD_REQUEST, "Wrong API input").into_response(),
    }
}

async fn restart(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(r) = inject(&shared).await {
        return r;
    }
    let mut d = shared.device.lock().unwrap();
    // Answer first; the device goes away a moment later, dropping every open connection.
    d.restarting_until = Some(Instant::now() + Duration::from_millis(100) + d.spec.restart_time);
    let rebooting = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let old = std::mem::take(&mut *rebooting.reboot.lock().unwrap());
        old.cancel();
    });
    "System will restart shortly.".into_response()
}

async fn pause(State(shared): State<Arc<Shared>>) -> Response {
    pause_resume(shared, true).await
}

async fn resume(State(shared): State<Arc<Shared>>) -> Response {
    pause_resume(shared, false).await
}

async fn pause_resume(shared: Arc<Shared>, paused: bool) -> Response {
    if let Some(r) = inject(&shared).await {
        return r;
    }
    let mut d = shared.device.lock().unwrap();
    if !d.spec.firmware.pauses() {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    d.paused = paused;
    json_response(json!({ "paused": paused }).to_string())
}

/// The board a chip and chip count come on, as real boards report it: (`boardVersion`,
/// `deviceModel` of `/api/system/asic`). A BM1366 board is an Ultra (2xx) or, with six chips, a
/// Hex (302/303); a BM1368 a Supra (4xx) or Supra Hex (70x); a BM1370 a Gamma (60x) or, with
/// two, a Gamma Turbo (80x).
fn board(chip: &str, chips: u32) -> (&'static str, &'static str) {
    match (chip, chips) {
        ("BM1397", _) => ("102", "Max"),
        ("BM1366", 1) => ("204", "Ultra"),
        ("BM1366", _) => ("302", "UltraHex"),
        ("BM1368", 1) => ("401", "Supra"),
        ("BM1368", _) => ("702", "SupraHex"),
        ("BM1370", 1) => ("601", "Gamma"),
        ("BM1370", _) => ("801", "GammaTurbo"),
        _ => ("0", "Unknown"),
    }
}
