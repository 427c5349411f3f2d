//! Test harness: a real Mosquitto on a free port, an MQTT observer that sees what Home Assistant
//! would, and the daemon started against simulated miners on loopback.
#![allow(dead_code)]

use figment::{providers::Serialized, Figment};
use miner2mqtt::config::{self, Config, MinerKind, RawConfig, RawMiner};
use miner2mqtt::daemon::{self, Exit};
use miner2mqtt::sim::axeos::SimDevice;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto broker owned by one test.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Keeps sessions and retained messages across restarts, as the HA add-on's broker does.
    persistent: bool,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with(false)
    }

    /// A broker that saves its sessions on a graceful stop and loads them when started again.
    pub fn start_persistent() -> Mosquitto {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Mosquitto {
        let mut m = Mosquitto {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let persistence = if self.persistent {
            // Mosquitto started as root writes as the `mosquitto` user: let it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o777))
                .unwrap();
            format!(
                "persistence true\npersistence_location {}/\n",
                self.dir.path().display()
            )
        } else {
            "persistence false\n".to_string()
        };
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\n{persistence}",
                self.port
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install -y mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker and starts a new one on the same port (retained messages are lost).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops the broker as a service manager would (SIGTERM: a persistent broker saves its
    /// sessions) and waits for it to exit.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the process we started, by its PID.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Starts the broker again after `stop_gracefully`.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn mosquitto_binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "mosquitto".into()
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An MQTT client that records everything, as Home Assistant would see it.
#[derive(Clone)]
pub struct Observer {
    pub client: AsyncClient,
    log: Arc<Mutex<Vec<Msg>>>,
}

impl Observer {
    pub async fn connect(port: u16, filters: &[&str]) -> Observer {
        Self::connect_as(port, None, filters).await
    }

    /// Connects with a username and password.
    pub async fn connect_as(
        port: u16,
        credentials: Option<(&str, &str)>,
        filters: &[&str],
    ) -> Observer {
        let id = format!("observer-{}", rand_id());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((user, pass)) = credentials {
            options.set_credentials(user, pass);
        }
        // Large enough for whatever a test sends past it (oversized-message tests).
        options.set_max_packet_size(64 << 20, 64 << 20);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let mut suback = 0;
        let wanted = filters.len();
        let resubscribe = client.clone();
        let owned: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push(Msg {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                        at: Instant::now(),
                    }),
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        suback += 1;
                        if suback >= wanted {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if ready.is_none() => {
                        // Reconnected after a broker restart: subscribe again.
                        for f in &owned {
                            let _ = resubscribe.subscribe(f.clone(), QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("observer subscribed")
            .unwrap();
        Observer { client, log }
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Waits until a message on `topic` satisfies `pred`; returns it.
    pub async fn wait_for(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.topic == topic && pred(m))
            {
                return m.clone();
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .messages()
                    .iter()
                    .filter(|m| m.topic == topic)
                    .map(|m| m.text().chars().take(300).collect())
                    .collect();
                panic!("no matching message on {topic} within {timeout:?}; seen there: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a message after `since` on `topic` satisfying `pred`.
    pub async fn wait_after(
        &self,
        since: Instant,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        self.wait_for(topic, timeout, move |m| m.at >= since && pred(m))
            .await
    }

    /// How many messages on `topic` since `since` satisfy `pred`.
    pub fn count_after(&self, since: Instant, topic: &str, pred: impl Fn(&Msg) -> bool) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.at >= since && m.topic == topic && pred(m))
            .count()
    }

    pub async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }
}

pub fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// A simulated miner's hardware id as the daemon derives it (its MAC, lower case, no colons).
pub fn hwid(d: &SimDevice) -> String {
    d.spec.mac_string().replace(':', "").to_ascii_lowercase()
}

/// The discovery topic of a miner with hardware id `hwid`.
pub fn disco(hwid: &str) -> String {
    format!("homeassistant/device/miner2mqtt/{hwid}/config")
}

/// A configuration pointing at `broker` with the given simulated miners.
pub fn config_for(
    port: u16,
    miners: &[(&str, &SimDevice)],
    store: &Path,
    tweak: impl FnOnce(&mut RawConfig),
) -> Config {
    let raw = raw_config_for(port, miners, store, tweak);
    config::from_figment(&Figment::from(Serialized::defaults(raw))).unwrap()
}

/// As `config_for`, before validation (to write to a file for the binary).
pub fn raw_config_for(
    port: u16,
    miners: &[(&str, &SimDevice)],
    store: &Path,
    tweak: impl FnOnce(&mut RawConfig),
) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.mqtt.port = port;
    raw.mqtt.client_id = format!("miner2mqtt-test-{}", rand_id());
    raw.mqtt.keepalive = Duration::from_secs(5);
    raw.poll_interval = Duration::from_secs(1);
    raw.request_timeout = Duration::from_millis(800);
    raw.retries = 0;
    raw.offline_after = 2;
    raw.store.path = store.to_path_buf();
    raw.miners = miners
        .iter()
        .map(|(name, d)| RawMiner::new(name, MinerKind::Axeos, &d.addr.to_string()))
        .collect();
    tweak(&mut raw);
    raw
}

/// Writes `raw` into `dir/config.yaml` for the binary (JSON is YAML) and returns its path.
pub fn config_file(dir: &Path, raw: &RawConfig) -> PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(&file, serde_json::to_string(raw).unwrap()).unwrap();
    file
}

/// A daemon running inside the test.
pub struct Daemon {
    pub token: CancellationToken,
    pub task: JoinHandle<anyhow::Result<Exit>>,
}

impl Daemon {
    pub fn start(config: Config) -> Daemon {
        let token = CancellationToken::new();
        let task = tokio::spawn(daemon::run(config, token.clone(), None));
        Daemon { token, task }
    }

    pub async fn stop(self) -> Exit {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("daemon stops")
            .unwrap()
            .unwrap()
    }
}

pub const WAIT: Duration = Duration::from_secs(15);

/// A test's world: its own broker, simulated miners, a history directory and an observer.
pub struct Rig {
    pub broker: Mosquitto,
    pub cancel: CancellationToken,
    pub devs: Vec<SimDevice>,
    pub store: tempfile::TempDir,
    pub ha: Observer,
}

impl Rig {
    /// Everything but the daemon, which each test starts with its own configuration.
    pub async fn start(specs: Vec<miner2mqtt::sim::axeos::DeviceSpec>) -> Rig {
        let broker = Mosquitto::start();
        let cancel = CancellationToken::new();
        let devs = miner2mqtt::sim::start_axeos_fleet(specs, None, &cancel)
            .await
            .unwrap();
        let ha = Observer::connect(broker.port, &["miner2mqtt/#", "homeassistant/#"]).await;
        Rig {
            broker,
            cancel,
            devs,
            store: tempfile::tempdir().unwrap(),
            ha,
        }
    }

    /// A configuration naming the simulated miners in order.
    pub fn config(&self, names: &[&str], tweak: impl FnOnce(&mut RawConfig)) -> Config {
        let miners: Vec<(&str, &SimDevice)> = names.iter().copied().zip(self.devs.iter()).collect();
        config_for(
            self.broker.port,
            &miners,
            &self.store.path().join("h"),
            tweak,
        )
    }

    /// The retained discovery of simulated miner `i`, once it is published.
    pub async fn discovery(&self, i: usize) -> Value {
        self.ha
            .wait_for(&disco(&hwid(&self.devs[i])), WAIT, |_| true)
            .await
            .json()
    }

    pub fn history_path(&self) -> PathBuf {
        self.store.path().join("h")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A simulated Avalon of `spec` on a free loopback port, stopped with the rig, and the miner
/// entry for it in a config.
pub async fn avalon_beside(
    rig: &Rig,
    spec: miner2mqtt::sim::cgminer::AvalonSpec,
    name: &str,
) -> (
    miner2mqtt::sim::cgminer::SimAvalon,
    miner2mqtt::config::RawMiner,
) {
    let sim =
        miner2mqtt::sim::cgminer::start(spec, "127.0.0.1:0".parse().unwrap(), rig.cancel.clone())
            .await
            .unwrap();
    let miner = miner2mqtt::config::RawMiner::new(
        name,
        miner2mqtt::config::MinerKind::Avalon,
        &sim.addr.to_string(),
    );
    (sim, miner)
}
