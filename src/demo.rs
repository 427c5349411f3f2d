//! `miner2mqtt demo`: the whole system with no hardware. A simulated fleet (Bitaxe Gamma and
//! Supra, a v2.15 Gamma, a NerdQaxe++, an Avalon Nano 3S and an Avalon Q, an Antminer S19 Pro, an
//! NMMiner), the broker on localhost:1883 if one answers or else an
//! embedded one, the daemon, and a live table of what Home Assistant sees over MQTT.

use crate::config::{self, Config, MinerKind, RawConfig, RawMiner};
use crate::energy::task::{Clock, FastClock};
use crate::sim::axeos::{DeviceSpec, Firmware, BM1368, BM1370};
use crate::sim::cgminer::{AvalonSpec, Model};
use anyhow::Context;
use figment::{providers::Serialized, Figment};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether something answers on `addr` within a short time.
pub fn broker_answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Starts rumqttd on `addr` in its own threads. Returns when it is accepting connections.
pub fn start_embedded_broker(addr: SocketAddr) -> anyhow::Result<()> {
    let cfg: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 20010,
            "max_outgoing_packet_count": 1000,
            "max_segment_size": 104857600,
            "max_segment_count": 10,
        },
        "v4": { "1": {
            "name": "v4-1",
            "listen": addr.to_string(),
            "next_connection_delay_ms": 1,
            "connections": {
                "connection_timeout_ms": 60000,
                "max_payload_size": 1048576,
                "max_inflight_count": 500,
                "dynamic_filters": true,
            },
        }},
    }))
    .context("building the embedded broker's configuration")?;
    std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} for the embedded broker"))?;
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(cfg);
        if let Err(e) = broker.start() {
            tracing::error!(error = %e, "embedded broker stopped");
        }
    });
    for _ in 0..50 {
        if broker_answers(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("the embedded broker did not start listening on {addr}")
}

/// The demo's ESP-Miner boards, by name.
pub fn esp_miners() -> [(&'static str, DeviceSpec); 4] {
    [
        (
            "bitaxe-gamma",
            DeviceSpec::new(1, Firmware::V2_12, BM1370, 1),
        ),
        (
            "bitaxe-supra",
            DeviceSpec::new(2, Firmware::V2_10, BM1368, 1),
        ),
        (
            "bitaxe-gamma-215",
            DeviceSpec::new(3, Firmware::V2_15, BM1370, 1),
        ),
        (
            "nerdqaxe",
            DeviceSpec::new(4, Firmware::Nerdqaxe, BM1370, 4),
        ),
    ]
}

/// The demo's Avalons whose modes can be set, by name (the Nano 3S and the Q).
pub const AVALONS: [(&str, Model); 2] = [("avalon-nano3s", Model::Nano3s), ("avalon-q", Model::Q)];

/// The demo miner that hangs on a simulated smart plug.
pub const PLUGGED: &str = "bitaxe-supra";

/// Options for the demo.
pub struct DemoOptions {
    /// The broker's address. When nothing answers at a loopback address and no `mqtt` settings
    /// were given, an embedded broker is started there.
    pub broker: Option<SocketAddr>,
    /// The user's `mqtt:` settings (from `--config` or `MINER2MQTT_MQTT__*`): host, port,
    /// credentials, TLS, topics. `broker` overrides host and port.
    pub mqtt: Option<config::RawMqtt>,
    pub poll_interval: Duration,
    /// Print the table (off when stdout is not for people).
    pub table: bool,
}

/// Runs the demo until `cancel` fires.
pub async fn run(opts: DemoOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let specs = esp_miners();
    let mut names: Vec<&str> = specs.iter().map(|(n, _)| *n).collect();
    let devices = crate::sim::start_axeos_fleet(
        specs.iter().map(|(_, s)| s.clone()).collect(),
        None,
        &cancel,
    )
    .await?;
    let avalon = crate::sim::cgminer::start(
        AvalonSpec::new(5, AVALONS[0].1),
        "127.0.0.1:0".parse().expect("a socket address"),
        cancel.clone(),
    )
    .await?;
    names.push(AVALONS[0].0);
    let avalon_q = crate::sim::cgminer::start(
        AvalonSpec::new(7, AVALONS[1].1),
        "127.0.0.1:0".parse().expect("a socket address"),
        cancel.clone(),
    )
    .await?;
    names.push(AVALONS[1].0);
    let s19 = crate::sim::cgminer::start(
        AvalonSpec::new(6, Model::S19pro),
        "127.0.0.1:0".parse().expect("a socket address"),
        cancel.clone(),
    )
    .await?;
    names.push("antminer-s19");
    // An NMMiner broadcasting from 127.0.0.2 to a UDP port of the daemon's. Systems where
    // 127.0.0.2 is not a loopback address run the demo without it.
    let nm = start_demo_nmminer(&cancel).await;
    match &nm {
        Ok(_) => names.push("nmminer-lotto"),
        Err(e) => eprintln!("demo: running without the simulated NMMiner: {e}"),
    }

    // Energy on a compressed day: the controller's clock and the Octopus simulator's run 60×
    // from 05:40 UK time today, so bands change every minute or two and a champion is chosen
    // when the morning price rises into the champion band.
    let clock = Arc::new(FastClock::new(demo_day_start(), DEMO_SPEED));
    let octopus = {
        let clock = clock.clone();
        crate::sim::octopus::start(
            "127.0.0.1:0".parse().expect("a socket address"),
            crate::sim::octopus::Curve::Agile,
            100,
            Box::new(move || clock.now()),
            cancel.clone(),
        )
        .await?
    };

    let given = opts.mqtt.is_some();
    let mut mqtt = opts.mqtt.unwrap_or_default();
    if let Some(b) = opts.broker {
        mqtt.host = b.ip().to_string();
        mqtt.port = b.port();
    }
    let broker = format!("{}:{}", mqtt.host, mqtt.port);
    let loopback: Option<SocketAddr> = broker
        .parse()
        .ok()
        .filter(|a: &SocketAddr| a.ip().is_loopback());
    // An embedded broker only where the user pointed at nothing of their own.
    let embedded = match loopback {
        Some(addr) if !given && !broker_answers(addr) => {
            start_embedded_broker(addr)?;
            true
        }
        _ => false,
    };

    let store_dir = std::env::temp_dir().join(format!("miner2mqtt-demo-{}", std::process::id()));
    let mut raw = RawConfig::default();
    mqtt.client_id = format!("miner2mqtt-demo-{}", std::process::id());
    raw.mqtt = mqtt;
    raw.poll_interval = opts.poll_interval;
    raw.store.path = store_dir.join("history");
    raw.miners = names
        .iter()
        .zip(&devices)
        .map(|(name, d)| RawMiner::new(name, MinerKind::Axeos, &d.addr.to_string()))
        .collect();
    let mut nano = RawMiner::new(AVALONS[0].0, MinerKind::Avalon, &avalon.addr.to_string());
    nano.admin_password = Some(config::Secret::new(&avalon.spec.admin_password));
    raw.miners.push(nano);
    raw.miners.push(RawMiner::new(
        AVALONS[1].0,
        MinerKind::Avalon,
        &avalon_q.addr.to_string(),
    ));
    raw.miners.push(RawMiner::new(
        "antminer-s19",
        MinerKind::Antminer,
        &s19.addr.to_string(),
    ));
    if let Ok((nm_listen, nm_config_port)) = &nm {
        raw.nmminer.listen = nm_listen.to_string();
        raw.nmminer.config_port = *nm_config_port;
        raw.nmminer.devices = vec![config::RawNmDevice {
            ip: "127.0.0.2".into(),
            name: Some("nmminer-lotto".into()),
        }];
    }
    raw.pools = vec![config::RawPool {
        url: "solo.ckpool.org".into(),
        port: 3333,
        user: "bc1qdemo.lotto".into(),
        password: None,
    }];
    raw.energy = Some(demo_energy(&octopus.base_url()));
    // A benchmark sweep that ends in minutes rather than hours (shorter settle and window).
    raw.benchmark.settle = Duration::from_secs(5);
    raw.benchmark.window = Duration::from_secs(30);
    raw.benchmark.sample_every = Duration::from_secs(5);
    // bitaxe-supra hangs on a simulated Tasmota plug on the same broker (not where the broker
    // wants credentials: the plug has none), so the strategy's "off" switches its power.
    let plugged = names.iter().position(|n| *n == PLUGGED);
    let plug = match plugged {
        Some(i) if raw.mqtt.username.is_none() => {
            let (command_topic, state_topic) = crate::sim::plug::topics(DEMO_PLUG);
            match crate::sim::plug::start(
                &raw.mqtt.host,
                raw.mqtt.port,
                DEMO_PLUG,
                devices[i].clone(),
                cancel.clone(),
            )
            .await
            {
                Ok(()) => {
                    raw.miners[i].power = Some(crate::power::RawPower {
                        mqtt: Some(crate::power::RawMqttPlug {
                            command_topic,
                            payload_on: "ON".into(),
                            payload_off: "OFF".into(),
                            state_topic: Some(state_topic),
                            state_on: None,
                            state_off: None,
                            state_key: None,
                        }),
                        ha: None,
                    });
                    true
                }
                Err(e) => {
                    eprintln!("demo: running without the simulated plug: {e}");
                    false
                }
            }
        }
        _ => false,
    };
    let config: Config = config::from_figment(&Figment::from(Serialized::defaults(raw)))?;
    let base = config.mqtt.base_topic.clone();

    println!("miner2mqtt demo");
    println!(
        "  MQTT broker: {broker} ({})",
        if embedded {
            "embedded, started by the demo"
        } else if given {
            "from your mqtt settings"
        } else {
            "already running"
        }
    );
    println!("  Point Home Assistant's MQTT integration at this broker: each simulated miner appears as a device.");
    for (name, d) in names.iter().zip(&devices) {
        println!(
            "  {name:<18} {} {:<8} http://{}/",
            d.spec.chip.model,
            format!("{:?}", d.spec.firmware),
            d.addr
        );
    }
    println!("  avalon-nano3s      Nano 3S  cgminer {}", avalon.addr);
    println!("  avalon-q           Q        cgminer {}", avalon_q.addr);
    println!(
        "  antminer-s19       S19 Pro  cgminer {} (read-only)",
        s19.addr
    );
    if plug {
        println!("  {PLUGGED} is powered through a simulated Tasmota plug (cmnd/{DEMO_PLUG}/POWER): the strategy switches it off when power is dear");
    }
    if let Ok((nm_listen, _)) = &nm {
        println!("  nmminer-lotto      NMLotto  UDP broadcasts from 127.0.0.2 to {nm_listen}");
    }
    println!(
        "  Energy: a simulated Octopus Agile day at {}, on a clock running {DEMO_SPEED}× from 05:40 UK time (a compressed day: bands change every minute or two, the champion is chosen as the morning price rises)",
        octopus.base_url()
    );
    println!(
        "  Try: mosquitto_pub -h {} -p {} -t {base}/bitaxe-gamma/set/frequency -m 600",
        config.mqtt.host, config.mqtt.port
    );
    println!(
        "  or a benchmark sweep (short steps in the demo, about 10 minutes): the Start benchmark button, or -t {base}/bitaxe-gamma/set/benchmark -m START"
    );
    println!("  Ctrl-C stops the demo.\n");

    let daemon_cancel = cancel.child_token();
    let watcher = crate::mqtt::connect_options(
        &config.mqtt,
        &format!("miner2mqtt-demo-view-{}", std::process::id()),
    )?;
    let daemon = tokio::spawn(crate::daemon::run_with_clock(
        config,
        daemon_cancel.clone(),
        None,
        clock,
    ));
    if opts.table {
        watch_table(watcher, &base, &names, cancel.clone()).await;
    } else {
        cancel.cancelled().await;
    }
    daemon_cancel.cancel();
    let result = daemon.await;
    let _ = std::fs::remove_dir_all(&store_dir);
    result.context("the daemon task panicked")??;
    Ok(())
}

/// The Tasmota topic of the demo's simulated plug.
const DEMO_PLUG: &str = "bitaxe-supra-plug";

/// How much faster than real time the demo's energy clock runs.
pub const DEMO_SPEED: f64 = 60.0;

/// 05:40 UK time today: the simulated Agile morning is cheap, then rises into the champion band.
fn demo_day_start() -> chrono::DateTime<chrono::Utc> {
    let today = crate::energy::prices::uk_day(chrono::Utc::now()).0;
    crate::energy::prices::uk_time_on_day(today, 5) + chrono::Duration::minutes(40)
}

/// The demo's bands (p/kWh), fitted to the simulator's Agile day.
pub(crate) fn demo_energy(base_url: &str) -> crate::energy::config::RawEnergy {
    serde_json::from_value(serde_json::json!({
        "source": "octopus",
        "octopus": { "region": "J", "base_url": base_url },
        "safe_band": "expensive",
        "bands": [
            { "name": "negative", "below": 0, "target": { "default": "turbo", "avalon": "high" } },
            { "name": "cheap", "below": 12, "target": { "default": "standard", "avalon": "medium" } },
            { "name": "normal", "below": 18, "target": { "default": "eco", "avalon": "low" } },
            { "name": "expensive", "below": 30, "target": { "default": "off" }, "champion": true },
            { "name": "peak", "target": { "default": "off" } },
        ],
    }))
    .expect("the demo's energy section is valid")
}

/// Subscribes like Home Assistant would and prints the fleet every two seconds.
async fn watch_table(
    mut options: MqttOptions,
    base: &str,
    names: &[&str],
    cancel: CancellationToken,
) {
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    for topic in ["+/state", "+/availability", "bridge/event", "bridge/energy"] {
        let _ = client
            .subscribe(format!("{base}/{topic}"), QoS::AtMostOnce)
            .await;
    }
    let mut states: BTreeMap<String, Value> = BTreeMap::new();
    let mut online: BTreeMap<String, String> = BTreeMap::new();
    let mut last_event = String::new();
    let mut energy = Value::Null;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => print_table(names, &states, &online, &last_event, &energy),
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let parts: Vec<&str> = p.topic.split('/').collect();
                    match parts.as_slice() {
                        [_, "bridge", "event"] => last_event = String::from_utf8_lossy(&p.payload).into_owned(),
                        [_, "bridge", "energy"] => energy = serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
                        [_, name, "state"] => { if let Ok(v) = serde_json::from_slice(&p.payload) { states.insert(name.to_string(), v); } }
                        [_, name, "availability"] => { online.insert(name.to_string(), String::from_utf8_lossy(&p.payload).into_owned()); }
                        _ => {}
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            },
        }
    }
}

fn print_table(
    names: &[&str],
    states: &BTreeMap<String, Value>,
    online: &BTreeMap<String, String>,
    last_event: &str,
    energy: &Value,
) {
    let num = |v: &Value, k: &str, d: usize| {
        v.get(k)
            .and_then(Value::as_f64)
            .map_or("—".to_string(), |x| format!("{x:.d$}"))
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{:<18} {:<8} {:>10} {:>8} {:>8} {:>7} {:>6} {:>9} {:>9}  {}\n",
        "miner", "status", "GH/s", "W", "J/TH", "°C", "fan%", "MHz", "mV", "mode"
    ));
    for name in names {
        let status = online.get(*name).map_or("…", String::as_str);
        let empty = Value::Null;
        let s = states.get(*name).unwrap_or(&empty);
        out.push_str(&format!(
            "{:<18} {:<8} {:>10} {:>8} {:>8} {:>7} {:>6} {:>9} {:>9}  {}\n",
            name,
            status,
            num(s, "hashrate", 1),
            num(s, "power", 1),
            num(s, "efficiency", 1),
            num(s, "asic_temp", 1),
            num(s, "fan_speed", 0),
            num(s, "frequency", 0),
            num(s, "core_voltage", 0),
            s.get("mode").and_then(Value::as_str).unwrap_or("—")
        ));
    }
    if let Some(price) = energy.get("price_now").and_then(Value::as_f64) {
        out.push_str(&format!(
            "price {:.2} p/kWh, band {}, champion {}\n",
            price * 100.0,
            energy["band"].as_str().unwrap_or("—"),
            energy["champion"].as_str().unwrap_or("—"),
        ));
    }
    if !last_event.is_empty() {
        out.push_str(&format!("last event: {last_event}\n"));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{out}");
    let _ = stdout.flush();
}

/// Starts the demo's NMMiner; returns the daemon's listen address and the device's config port.
async fn start_demo_nmminer(cancel: &CancellationToken) -> std::io::Result<(SocketAddr, u16)> {
    let listen = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let config_port = std::net::UdpSocket::bind("127.0.0.2:0")?
        .local_addr()?
        .port();
    crate::sim::nmminer::start(
        crate::sim::nmminer::NmSpec {
            ip: "127.0.0.2".parse().expect("an IP"),
            board: "NMLotto".into(),
            config_port,
            interval: Duration::from_secs(2),
        },
        listen,
        cancel.clone(),
    )
    .await?;
    Ok((listen, config_port))
}
