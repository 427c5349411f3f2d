//! An Avalon Nano 3 / Nano 3S speaking the cgminer API over real TCP: one request per
//! connection, JSON (`{"command":…,"parameter":…}`) or plain text (`summary|`), replies ended by
//! a NUL. Models the three work modes (hashrate and power per mode, a calibration period after a
//! change during which another change is refused with the firmware's "caling Don't permit switch
//! mode"), the fan (15–100 % or auto), three pool slots set with the admin password, and reboot.
//!
//! Layouts follow the captured firmware: the Nano 3 reports its level as `WORKLEVEL` and its wall
//! power in `PS` slot 5; the Nano 3S reports `WORKMODE` and the power in slot 6. Like the real
//! firmware, `estats` arrives with a dangling comma (`,}`). Fault knobs: truncated replies,
//! offline.

use rand::Rng;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Which Avalon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    Nano3,
    Nano3s,
    /// Antminer S19 Pro on stock bmminer: read-only, three chains.
    S19pro,
}

impl std::str::FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> Result<Model, String> {
        match s.to_ascii_lowercase().as_str() {
            "nano3" => Ok(Model::Nano3),
            "nano3s" => Ok(Model::Nano3s),
            "s19pro" | "antminer" => Ok(Model::S19pro),
            other => Err(format!(
                "unknown Avalon model {other:?}: use nano3 or nano3s"
            )),
        }
    }
}

impl Model {
    /// (TH/s, W) per work mode 0, 1, 2.
    fn modes(self) -> [(f64, f64); 3] {
        match self {
            Model::Nano3 => [(2.0, 50.0), (3.3, 90.0), (4.0, 140.0)],
            Model::Nano3s => [(3.5, 70.0), (5.0, 100.0), (6.6, 133.0)],
            Model::S19pro => [(110.0, 3250.0); 3],
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct AvalonSpec {
    pub model: Model,
    pub mac: [u8; 6],
    pub admin_password: String,
    /// How long the device calibrates after a mode change.
    pub calibration: Duration,
    pub reboot_time: Duration,
}

impl AvalonSpec {
    pub fn new(n: u32, model: Model) -> AvalonSpec {
        let b = n.to_be_bytes();
        AvalonSpec {
            model,
            mac: [0xe0, 0xe1, b[0], b[1], b[2], b[3]],
            admin_password: "admin".into(),
            calibration: Duration::from_secs(20),
            reboot_time: Duration::from_secs(5),
        }
    }
}

/// Faults to inject.
#[derive(Debug, Clone, Default)]
pub struct AvalonFaults {
    /// Replies cut in half (no NUL).
    pub truncate: bool,
    /// Connections closed at once.
    pub offline: bool,
    /// JSON replies garbled beyond repair (the plain form still works).
    pub broken_json: bool,
}

#[derive(Debug)]
struct Device {
    spec: AvalonSpec,
    mode: u8,
    calibrating_until: Option<Instant>,
    fan_manual: Option<u8>,
    pools: [(String, String); 3],
    active_pool: usize,
    booted: Instant,
    rebooting_until: Option<Instant>,
    accepted: u64,
    rejected: u64,
    commands: Vec<String>,
}

impl Device {
    fn tick(&mut self) {
        let now = Instant::now();
        if self.rebooting_until.is_some_and(|t| now >= t) {
            self.rebooting_until = None;
            self.booted = now;
        }
        if self.calibrating_until.is_some_and(|t| now >= t) {
            self.calibrating_until = None;
        }
        self.accepted += rand::rng().random_range(0..3);
    }

    fn calibrating(&self) -> bool {
        self.calibrating_until.is_some()
    }

    fn hashrate_ghs(&self) -> f64 {
        let (ths, _) = self.spec.model.modes()[self.mode as usize];
        // During calibration the chips run at a fraction of their rate.
        let ramp = if self.calibrating() { 0.4 } else { 1.0 };
        ths * 1000.0 * ramp * (1.0 + rand::rng().random_range(-0.02..0.02))
    }

    fn power(&self) -> f64 {
        self.spec.model.modes()[self.mode as usize].1
    }

    fn fan_pct(&self) -> u8 {
        self.fan_manual.unwrap_or(match self.mode {
            0 => 30,
            1 => 43,
            _ => 60,
        })
    }

    fn mac_hex(&self) -> String {
        self.spec.mac.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn status(&self, code: u32, msg: &str, kind: &str) -> Value {
        json!([{ "STATUS": kind, "When": 1765004019u64 + self.booted.elapsed().as_secs(), "Code": code, "Msg": msg, "Description": "cgminer 4.11.1" }])
    }

    fn blob(&self) -> String {
        let hr = self.hashrate_ghs();
        let (ver, ps) = match self.spec.model {
            Model::Nano3 => (
                "nano3-24071801_42c628d",
                format!("PS[0 0 0 3 2780 {} 314]", self.power() as u32),
            ),
            Model::Nano3s | Model::S19pro => (
                "Nano3s-25021401_56abae7",
                format!("PS[0 0 27541 4 0 3756 {}]", self.power() as u32),
            ),
        };
        let mode = match self.spec.model {
            Model::Nano3 => format!("WORKLEVEL[{}]", self.mode),
            Model::Nano3s | Model::S19pro => format!("WORKMODE[{}] WORKLEVEL[0]", self.mode),
        };
        let state = if self.calibrating() {
            "Work: In Calibration"
        } else {
            "Work: In Work"
        };
        format!(
            "Ver[{ver}] DNA[02010000{}] SYSTEMSTATU[{state}, Hash Board: 1] Elapsed[{}] ITemp[-273] OTemp[{}] TMax[{}] TAvg[{}] TarT[90] Fan1[{}] FanR[{}%] {ps} GHSspd[{hr:.2}] GHSmm[{hr:.2}] GHSavg[{hr:.2}] Freq[{}] {mode} MPO[{}] Core[A3197S] SoftOFF[0]",
            self.mac_hex(),
            self.booted.elapsed().as_secs(),
            45 + self.mode as u32 * 5,
            80 + self.mode as u32 * 5,
            75 + self.mode as u32 * 5,
            self.fan_pct() as u32 * 35,
            self.fan_pct(),
            [350.0, 420.0, 464.89][self.mode as usize],
            self.power() as u32,
        )
    }

    fn reply(&mut self, command: &str, parameter: &str) -> Value {
        self.commands.push(if parameter.is_empty() {
            command.into()
        } else {
            format!("{command}|{parameter}")
        });
        if self.spec.model == Model::S19pro {
            return self.antminer_reply(command);
        }
        let elapsed = self.booted.elapsed().as_secs();
        match command {
            "version" => json!({ "STATUS": self.status(22, "CGMiner versions", "S"), "VERSION": [{
                "CGMiner": "4.11.1", "API": "3.7",
                "PROD": match self.spec.model { Model::Nano3 => "Avalon Nano3", _ => "Avalon Nano3s" },
                "MODEL": match self.spec.model { Model::Nano3 => "Nano3", _ => "Nano3s" },
                "HWTYPE": "N_MM1v1_X1", "SWTYPE": "MM319", "LVERSION": "25021401_56abae7", "BVERSION": "25021401_56abae7",
                "CGVERSION": "25021401_56abae7", "DNA": format!("02010000{}", self.mac_hex()), "MAC": self.mac_hex(), "UPAPI": "2" }], "id": 1 }),
            "summary" => {
                let mhs = self.hashrate_ghs() * 1000.0;
                json!({ "STATUS": self.status(11, "Summary", "S"), "SUMMARY": [{
                    "Elapsed": elapsed, "MHS av": mhs, "MHS 5s": mhs, "MHS 1m": mhs, "MHS 5m": mhs, "MHS 15m": mhs,
                    "Found Blocks": 0, "Accepted": self.accepted, "Rejected": self.rejected, "Hardware Errors": 0,
                    "Best Share": 138508908u64, "Pool Rejected%": 0.065, "Pool Stale%": 0.0 }], "id": 1 })
            }
            "estats" | "stats" => {
                json!({ "STATUS": self.status(70, "CGMiner stats", "S"), "STATS": [{
                "STATS": 0, "ID": "AVANANO0", "Elapsed": elapsed, "MM ID0": self.blob(), "MM Count": 1 }], "id": 1 })
            }
            "lcd" => {
                let (url, user) = &self.pools[self.active_pool];
                json!({ "STATUS": self.status(125, "LCD", "S"), "LCD": [{ "Elapsed": elapsed, "GHS 5s": self.hashrate_ghs(),
                    "Temperature": 0.0, "Best Share": 138508908u64, "Current Pool": url, "User": user }], "id": 1 })
            }
            "pools" => {
                let pools: Vec<Value> = self.pools.iter().enumerate().map(|(i, (url, user))| json!({
                    "POOL": i, "URL": url, "Status": if url.is_empty() { "Dead" } else { "Alive" }, "Priority": i,
                    "User": user, "Stratum Active": i == self.active_pool, "Accepted": if i == self.active_pool { self.accepted } else { 0 } })).collect();
                json!({ "STATUS": self.status(7, &format!("{} Pool(s)", pools.len()), "S"), "POOLS": pools, "id": 1 })
            }
            "ascset" => self.ascset(parameter),
            "setpool" => {
                let parts: Vec<&str> = parameter.splitn(6, ',').collect();
                match parts.as_slice() {
                    ["admin", pw, id, url, user, _pass] if *pw == self.spec.admin_password => {
                        match id.parse::<usize>() {
                            Ok(i) if i < 3 => {
                                self.pools[i] = (url.to_string(), user.to_string());
                                self.active_pool = i;
                                json!({ "STATUS": self.status(119, "ASC 0 set OK", "S") })
                            }
                            _ => json!({ "STATUS": self.status(120, "Invalid pool id", "E") }),
                        }
                    }
                    ["admin", _, ..] => json!({ "STATUS": self.status(45, "Access denied", "E") }),
                    _ => json!({ "STATUS": self.status(120, "Missing parameter", "E") }),
                }
            }
            _ => json!({ "STATUS": self.status(14, "Invalid command", "E"), "id": 1 }),
        }
    }

    /// Stock bmminer replies, shaped like the captured S19 Pro (GH/s, chain rates as strings,
    /// a fourth, empty chain).
    fn antminer_reply(&mut self, command: &str) -> Value {
        let elapsed = self.booted.elapsed().as_secs();
        let rates: Vec<f64> = (0..3)
            .map(|_| 37000.0 * (1.0 + rand::rng().random_range(-0.02..0.02)))
            .collect();
        let total: f64 = rates.iter().sum();
        let (r1, r2, r3) = (
            format!("{:.2}", rates[0]),
            format!("{:.2}", rates[1]),
            format!("{:.2}", rates[2]),
        );
        let miner_id = format!("8144d5ca{}", self.mac_hex());
        let status = |code: u32, msg: &str| json!([{ "STATUS": "S", "When": 1755615295u64 + elapsed, "Code": code, "Msg": msg, "Description": "cgminer 1.0.0" }]);
        match command {
            "version" => {
                json!({ "STATUS": status(22, "CGMiner versions"), "VERSION": [{ "BMMiner": "1.0.0", "API": "3.1",
                "Miner": "49.0.1.3", "CompileTime": "Tue Dec  6 16:12:30 CST 2022", "Type": "Antminer S19 Pro" }], "id": 1 })
            }
            "summary" => {
                json!({ "STATUS": status(11, "Summary"), "SUMMARY": [{ "Elapsed": elapsed, "GHS 5s": total,
                "GHS av": total, "GHS 30m": total, "Found Blocks": 0, "Getwork": 3957, "Accepted": self.accepted,
                "Rejected": self.rejected, "Hardware Errors": 562, "Best Share": 12904207043u64, "Pool Rejected%": 0.0,
                "Pool Stale%": 0.0 }], "id": 1 })
            }
            "stats" => json!({ "STATUS": status(70, "CGMiner stats"), "STATS": [
                { "BMMiner": "1.0.0", "Miner": "49.0.1.3", "CompileTime": "Tue Dec  6 16:12:30 CST 2022", "Type": "Antminer S19 Pro" },
                { "STATS": 0, "ID": "BTM_SOC0", "Elapsed": elapsed, "GHS 5s": total, "GHS av": total, "rate_30m": total,
                  "Mode": 2, "miner_count": 3, "frequency": 525, "fan_num": 4, "fan1": 6000, "fan2": 5880, "fan3": 5040, "fan4": 5040,
                  "temp_num": 3, "temp1": 73, "temp2_1": 78, "temp2": 66, "temp2_2": 71, "temp3": 64, "temp2_3": 69,
                  "temp_chip1": "78-50-69-70", "temp_chip2": "52-55-70-71", "temp_chip3": "51-49-69-68", "temp_chip4": "0-0-0-0",
                  "total_rateideal": 110000.0, "rate_unit": "GH", "total_freqavg": 525, "total_acn": 342, "total rate": total,
                  "temp_max": 0, "chain_acn1": 114, "chain_acn2": 114, "chain_acn3": 114, "chain_acn4": 0,
                  "chain_rate1": r1, "chain_rate2": r2, "chain_rate3": r3, "chain_rate4": "", "freq1": 525, "freq2": 525, "freq3": 525, "freq4": 0,
                  "miner_version": "49.0.1.3", "miner_id": miner_id } ], "id": 1 }),
            "pools" => {
                json!({ "STATUS": status(7, "1 Pool(s)"), "POOLS": [{ "POOL": 0, "URL": self.pools[0].0, "Status": "Alive",
                "Priority": 0, "Accepted": self.accepted, "Rejected": self.rejected, "User": self.pools[0].1, "Last Share Time": "0:00:03",
                "Diff": "524K", "Stratum Active": true, "Best Share": 12904207043.0, "Pool Stale%%": 0.0 }], "id": 1 })
            }
            _ => {
                json!({ "STATUS": [{ "STATUS": "E", "When": 1755615295u64 + elapsed, "Code": 14, "Msg": "Invalid command", "Description": "cgminer 1.0.0" }], "id": 1 })
            }
        }
    }

    fn ascset(&mut self, parameter: &str) -> Value {
        let parts: Vec<&str> = parameter.split(',').collect();
        match parts.as_slice() {
            ["0", "workmode", "set", n] => match n.parse::<u8>() {
                Ok(m) if m <= 2 => {
                    if self.calibrating() {
                        return json!({ "STATUS": self.status(118, "ASC 0 set info: caling Don't permit switch mode", "I") });
                    }
                    self.mode = m;
                    self.fan_manual = None;
                    self.calibrating_until = Some(Instant::now() + self.spec.calibration);
                    json!({ "STATUS": self.status(119, "ASC 0 set OK", "S") })
                }
                _ => json!({ "STATUS": self.status(120, "ASC 0 set failed: workmode", "E") }),
            },
            ["0", "workmode"] => {
                json!({ "STATUS": self.status(118, &format!("ASC 0 set info: WORKMODE[{}]", self.mode), "I") })
            }
            ["0", "fan-spd", v] => match v.parse::<i32>() {
                Ok(-1) => {
                    self.fan_manual = None;
                    json!({ "STATUS": self.status(119, "ASC 0 set OK", "S") })
                }
                Ok(p) if (15..=100).contains(&p) => {
                    self.fan_manual = Some(p as u8);
                    json!({ "STATUS": self.status(119, "ASC 0 set OK", "S") })
                }
                _ => json!({ "STATUS": self.status(120, "ASC 0 set failed: fan-spd", "E") }),
            },
            ["0", "reboot", _] => {
                self.rebooting_until =
                    Some(Instant::now() + Duration::from_millis(100) + self.spec.reboot_time);
                json!({ "STATUS": self.status(119, "ASC 0 set OK", "S") })
            }
            _ => json!({ "STATUS": self.status(120, "ASC 0 set failed", "E") }),
        }
    }
}

/// A running simulated Avalon.
#[derive(Clone)]
pub struct SimAvalon {
    pub addr: SocketAddr,
    pub spec: AvalonSpec,
    device: Arc<Mutex<Device>>,
    faults: Arc<Mutex<AvalonFaults>>,
}

/// What a test can see.
#[derive(Debug, Clone)]
pub struct AvalonSnapshot {
    pub mode: u8,
    pub calibrating: bool,
    pub fan_manual: Option<u8>,
    pub active_pool: usize,
    pub pools: Vec<(String, String)>,
    /// Every command received, as `command|parameter`.
    pub commands: Vec<String>,
}

impl SimAvalon {
    pub fn set_faults(&self, faults: AvalonFaults) {
        *self.faults.lock().unwrap() = faults;
    }

    pub fn snapshot(&self) -> AvalonSnapshot {
        let mut d = self.device.lock().unwrap();
        d.tick();
        AvalonSnapshot {
            mode: d.mode,
            calibrating: d.calibrating(),
            fan_manual: d.fan_manual,
            active_pool: d.active_pool,
            pools: d.pools.to_vec(),
            commands: d.commands.clone(),
        }
    }

    pub fn mac_string(&self) -> String {
        self.device.lock().unwrap().mac_hex()
    }
}

/// Starts a simulated Avalon on `addr` (port 0 for a free port).
pub async fn start(
    spec: AvalonSpec,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<SimAvalon> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let device = Arc::new(Mutex::new(Device {
        mode: 1,
        calibrating_until: None,
        fan_manual: None,
        pools: [
            (
                "stratum+tcp://public-pool.io:21496".into(),
                "bc1qsim.avalon".into(),
            ),
            (
                "stratum+tcp://solo.ckpool.org:3333".into(),
                "bc1qsim.avalon".into(),
            ),
            (String::new(), String::new()),
        ],
        active_pool: 0,
        booted: Instant::now(),
        rebooting_until: None,
        accepted: 0,
        rejected: 0,
        commands: Vec::new(),
        spec: spec.clone(),
    }));
    let faults = Arc::new(Mutex::new(AvalonFaults::default()));
    let sim = SimAvalon {
        addr,
        spec,
        device: device.clone(),
        faults: faults.clone(),
    };
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
            };
            let (device, faults) = (device.clone(), faults.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), serve(stream, device, faults))
                    .await;
            });
        }
    });
    Ok(sim)
}

async fn serve(
    mut stream: TcpStream,
    device: Arc<Mutex<Device>>,
    faults: Arc<Mutex<AvalonFaults>>,
) -> std::io::Result<()> {
    let f = faults.lock().unwrap().clone();
    let rebooting = {
        let mut d = device.lock().unwrap();
        d.tick();
        d.rebooting_until.is_some()
    };
    if f.offline || rebooting {
        return Ok(());
    }
    // A JSON request is read until it parses; a plain one is what the first read brings.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.first() != Some(&b'{')
            || serde_json::from_slice::<Value>(&buf).is_ok()
            || buf.len() > 65536
        {
            break;
        }
    }
    let plain = buf.first() != Some(&b'{');
    let (command, parameter) = if plain {
        let text = String::from_utf8_lossy(&buf).into_owned();
        match text.split_once('|') {
            Some((c, p)) => (c.to_string(), p.to_string()),
            None => (text, String::new()),
        }
    } else {
        let v: Value = serde_json::from_slice(&buf).unwrap_or(Value::Null);
        (
            v["command"].as_str().unwrap_or("").to_string(),
            v["parameter"].as_str().unwrap_or("").to_string(),
        )
    };
    let mut reply = if command.contains('+') && !plain {
        // Joined commands: each command's reply under its own name.
        device.lock().unwrap().commands.push(command.clone());
        let mut joined = serde_json::Map::new();
        for c in command.split('+') {
            let one = device.lock().unwrap().reply(c, "");
            joined.insert(c.to_string(), Value::Array(vec![one]));
        }
        joined.insert("id".into(), json!(1));
        Value::Object(joined)
    } else {
        device.lock().unwrap().reply(&command, &parameter)
    };
    complete(&mut reply, &command);
    let mut body = if plain {
        to_plain(&reply)
    } else {
        reply.to_string()
    };
    let model = device.lock().unwrap().spec.model;
    if command == "estats" && !plain {
        // The real firmware leaves a comma before a closing brace here.
        if let Some(pos) = body.rfind("}]") {
            body.insert(pos, ',');
        }
    }
    if command == "stats" && model == Model::S19pro && !plain {
        // bmminer repeats keys in stats; the last one counts.
        body = body.replacen("\"temp_max\":0", "\"temp_max\":1,\"temp_max\":0", 1);
    }
    if f.broken_json && !plain {
        body = body.replacen('"', "\u{1}", 3);
    }
    let mut bytes = body.into_bytes();
    if f.truncate {
        bytes.truncate(bytes.len() / 2);
        stream.write_all(&bytes).await?;
        return Ok(());
    }
    bytes.push(0);
    stream.write_all(&bytes).await
}

/// `{"STATUS":[{…}],"POOLS":[{…},{…}]}` → `STATUS=S,…|POOL=0,…|`, the status section first.
fn to_plain(reply: &Value) -> String {
    let mut out = String::new();
    if let Some(obj) = reply.as_object() {
        let sections = obj
            .iter()
            .filter(|(k, _)| *k == "STATUS")
            .chain(obj.iter().filter(|(k, _)| *k != "STATUS" && *k != "id"));
        for (_, list) in sections {
            let Some(items) = list.as_array() else {
                continue;
            };
            for item in items {
                let Some(fields) = item.as_object() else {
                    continue;
                };
                let mut first = true;
                for (k, v) in fields {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    // cgminer escapes its separators inside values.
                    let v = v
                        .replace('\\', "\\\\")
                        .replace(',', "\\,")
                        .replace('|', "\\|")
                        .replace('=', "\\=");
                    out.push_str(&format!("{k}={v}"));
                }
                out.push('|');
            }
        }
    }
    out
}

/// Adds to `reply[list][i]` the keys of `defaults` it lacks: the counters and settings the real
/// firmware reports that the simulation does not model, so payloads keep the captured shape.
fn fill(reply: &mut Value, list: &str, index: usize, defaults: Value) {
    let (Some(target), Value::Object(defaults)) = (
        reply[list].get_mut(index).and_then(Value::as_object_mut),
        defaults,
    ) else {
        return;
    };
    for (k, v) in defaults {
        target.entry(k).or_insert(v);
    }
}

fn summary_defaults() -> Value {
    json!({ "Getworks": 8828, "Getwork": 3957, "Utility": 12.9, "Discarded": 0, "Stale": 0, "Get Failures": 0,
        "Local Work": 44544, "Remote Failures": 0, "Network Blocks": 170, "Total MH": 309728599813.0,
        "Work Utility": 42608.85, "Difficulty Accepted": 72177677.0, "Difficulty Rejected": 46931.0,
        "Difficulty Stale": 0.0, "Device Hardware%": 0.0002, "Device Rejected%": 0.065, "Last getwork": 0 })
}

fn pool_defaults() -> Value {
    json!({ "Quota": 1, "Long Poll": "N", "Getworks": 0, "Works": 0, "Discarded": 0, "Stale": 0, "Get Failures": 0,
        "Remote Failures": 0, "Rejected": 0, "Password": "", "Last Share Time": 0, "Diff1 Shares": 0, "Proxy Type": "", "Proxy": "",
        "Difficulty Accepted": 0.0, "Difficulty Rejected": 0.0, "Difficulty Stale": 0.0, "Last Share Difficulty": 0.0,
        "Work Difficulty": 0.0, "Has Stratum": true, "Stratum URL": "", "Stratum Difficulty": 0.0, "Has Vmask": true,
        "Has GBT": false, "Best Share": 0.0, "Pool Rejected%": 0.0, "Pool Stale%": 0.0, "Bad Work": 0,
        "Current Block Height": 0, "Current Block Version": 0 })
}

fn stats_defaults() -> Value {
    json!({ "Calls": 0, "Wait": 0.0, "Max": 0.0, "Min": 99999999.0, "Nonce Mask": 1 })
}

/// Gives each reply the rest of the fields the real firmware sends.
fn complete(reply: &mut Value, command: &str) {
    if command.contains('+') {
        for c in command.split('+') {
            if let Some(inner) = reply.get_mut(c).and_then(|v| v.get_mut(0)) {
                complete(inner, c);
            }
        }
        return;
    }
    let antminer = reply["STATS"][0].get("BMMiner").is_some()
        || reply["SUMMARY"][0].get("GHS 5s").is_some()
        || reply["POOLS"][0].get("Diff").is_some();
    match command {
        "summary" => fill(reply, "SUMMARY", 0, summary_defaults()),
        "stats" | "estats" => {
            let index = if antminer { 1 } else { 0 };
            fill(reply, "STATS", index, stats_defaults());
            if antminer {
                let mut extra = serde_json::Map::new();
                for n in 1..=4 {
                    let empty = n == 4;
                    extra.insert(
                        format!("temp_pcb{n}"),
                        json!(if empty { "0-0-0-0" } else { "73-45-64-65" }),
                    );
                    extra.insert(
                        format!("temp_pic{n}"),
                        json!(if empty { "0-0-0-0" } else { "63-35-54-55" }),
                    );
                    extra.insert(
                        format!("chain_acs{n}"),
                        json!(if empty { "" } else { " ooo ooo ooo ooo" }),
                    );
                    extra.insert(format!("chain_hw{n}"), json!(if empty { 0 } else { 183 }));
                }
                extra.insert("no_matching_work".into(), json!(562));
                fill(reply, "STATS", 1, Value::Object(extra));
            }
        }
        "pools" => {
            let n = reply["POOLS"].as_array().map_or(0, Vec::len);
            for i in 0..n {
                let mut defaults = pool_defaults();
                if antminer {
                    // bmminer's own spellings.
                    defaults["Pool Stale%%"] = json!(0.0);
                    if let Some(o) = defaults.as_object_mut() {
                        o.remove("Pool Stale%");
                    }
                }
                fill(reply, "POOLS", i, defaults);
            }
        }
        _ => {}
    }
}
