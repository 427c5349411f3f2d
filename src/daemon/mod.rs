//! The daemon: starts the pollers and the MQTT session, and runs the hub that owns all fleet
//! state. The hub is the only place that decides what to publish, so no lock guards fleet state:
//! pollers and the MQTT session talk to it through channels.
//!
//! Shutdown order: cancel the pollers, publish `offline`, disconnect MQTT, wait for the tasks
//! (bounded), flush the store.

pub(crate) mod energy;
mod power;
mod requests;
mod tuning;
mod watch;

use crate::config::{Config, MinerConfig, MinerKind, LOG_LEVELS};
use crate::control::alerts::Kind as AlertKind;
use crate::control::task::Input as WatchInput;
use crate::control::{Arbiter, Change, HoldChange, Origin};
use crate::energy::task::{self as energy_task, Clock, Input as EnergyInput, Switch, SystemClock};
use crate::fleet::{spawn_poller, FleetEvent, MinerHandle};
use crate::hass::discovery::{self, MinerDevice};
use crate::hass::{command, state, Topics};
use crate::miner::avalon::AvalonClient;
use crate::miner::axeos::AxeOsClient;
use crate::miner::{Command, MinerClient, Reading};
use crate::mqtt::{self, Mqtt, MqttEvent};
use crate::safety::{Limits, ModeTarget};
use crate::store::{Sample, Store};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by a signal or the caller's token.
    Stopped,
    /// Asked to restart through `bridge/request/restart`: the caller runs it again.
    Restart,
}

/// Changes the process's log filter; `main` passes one built on tracing-subscriber's reload.
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How long after publishing new discovery a miner's state goes out again, for the entities
/// Home Assistant has created from it in the meantime.
const RESTATE_AFTER_DISCOVERY: Duration = Duration::from_secs(5);

/// How long a command may wait for its miner's first reading.
const PENDING_FOR: Duration = Duration::from_secs(60);

/// How long a running daemon has to answer the start-up check for another instance.
const INSTANCE_CHECK_WAIT: Duration = Duration::from_millis(1200);

/// How long retained discovery may take to arrive after a ConnAck before we compare with it.
const RETAINED_SETTLE: Duration = Duration::from_millis(750);
/// How often bridge/info and bridge/miners may be republished when they change; a large fleet's
/// miner list is megabytes, so it waits longer.
fn info_every(miners: usize) -> Duration {
    if miners > 1000 {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    }
}

struct Slot {
    config: MinerConfig,
    handle: MinerHandle,
    reading: Option<Reading>,
    /// What the miner's availability topic says now (`None` before the first publish).
    online: Option<bool>,
    failures: u32,
    limits: Option<Limits>,
    hardware_id: Option<String>,
    store_number: Option<u32>,
    warned: HashSet<String>,
    /// When to publish state again after new discovery: Home Assistant subscribes to the state
    /// topic only once it has created the entities, and state is not retained.
    restate_at: Option<Instant>,
    /// Commands that arrived before the miner's first reading (its limits unknown), newest per
    /// property: a persistent session delivers what was sent while the daemon was away at once,
    /// before the first poll. Checked and sent once the miner is read; refused after a while.
    pending: Vec<(String, bytes::Bytes, Instant)>,
    /// Who may change this miner now (origins and holds).
    arbiter: Arbiter,
    /// Energy (kWh) and today's cost (£), from the energy controller.
    meter: Option<(f64, f64)>,
    /// Its smart plug, when it has one.
    plug: Option<power::PlugView>,
    /// Switched on at its plug and booting until then: failed polls are expected.
    boot_until: Option<Instant>,
    /// The alert conditions holding now (its Problem sensor).
    problems: Vec<AlertKind>,
    /// Its last benchmark's most efficient and fastest clocks: its eco and turbo modes.
    learned: (Option<ModeTarget>, Option<ModeTarget>),
}

impl Slot {
    /// A miner not read yet; its hardware id as the store last knew it.
    fn new(config: MinerConfig, handle: MinerHandle, store: &Store) -> Slot {
        Slot {
            hardware_id: store.hardware_id_of(&config.name),
            plug: config.power.as_ref().map(|_| power::PlugView::default()),
            config,
            handle,
            reading: None,
            online: None,
            failures: 0,
            limits: None,
            store_number: None,
            warned: HashSet::new(),
            restate_at: None,
            pending: Vec::new(),
            arbiter: Arbiter::default(),
            meter: None,
            boot_until: None,
            problems: Vec::new(),
            learned: (None, None),
        }
    }
}

struct Hub {
    config: Config,
    topics: Topics,
    mqtt: Mqtt,
    store: Store,
    slots: Vec<Slot>,
    connected: bool,
    /// Set once the retained discovery of a fresh session has had time to arrive.
    synced: bool,
    sync_at: Option<Instant>,
    republish_at: Option<Instant>,
    info_dirty: bool,
    info_at: Instant,
    /// Hash of the retained payload on each of our discovery topics, as the broker has it.
    retained: HashMap<String, u64>,
    /// Miners with a held command or a state to publish again, looked at on every tick.
    timed: BTreeSet<usize>,
    /// The discovery topics this daemon has published (kept in the store): stale clearing
    /// never touches any other, whoever else publishes under the same prefix.
    owned: HashSet<String>,
    log_level: String,
    log_control: Option<LogControl>,
    exit: Option<Exit>,
    /// Puts the samples into the store on a thread of its own.
    history_writer: crate::store::writer::Writer,
    /// Successful and failed polls since start, for health checks and the benchmark.
    polls_ok: u64,
    polls_failed: u64,
    /// For miners created at run time (NMMiner), and their command tasks.
    fleet_tx: mpsc::Sender<FleetEvent>,
    tracker: TaskTracker,
    pollers: CancellationToken,
    /// When each broadcasting miner was last heard.
    last_heard: HashMap<usize, Instant>,
    /// NMMiner IPs heard but not accepted, logged once each.
    ignored: HashSet<String>,
    /// Who this daemon is (host, pid, start time), told to whoever asks for a health check, so
    /// a second instance can say which one holds the base topic.
    instance: Value,
    /// The energy controller (prices, strategy, meters).
    energy: energy_task::Handle,
    /// The smart plugs, and which miners each plug state topic speaks for.
    power: crate::power::task::Handle,
    plug_topics: HashMap<String, Vec<usize>>,
    clock: Arc<dyn Clock>,
    /// The watchdog and alert rules.
    watch: crate::control::task::Handle,
    /// The benchmark sweeps, and the miners whose settings from before a sweep are on their
    /// way back.
    tuning: crate::tuning::task::Handle,
    restoring: HashSet<usize>,
    /// Miners whose restore after a benchmark is to be tried again, and from when.
    restore_retry: HashMap<usize, std::time::Instant>,
}

fn payload_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Samples one compaction call rolls up (and keys it prunes) before it lets go of the thread.
const COMPACT_BUDGET: usize = 2000;

/// Runs the daemon until `cancel` fires or a restart is requested.
pub async fn run(
    config: Config,
    cancel: CancellationToken,
    log_control: Option<LogControl>,
) -> anyhow::Result<Exit> {
    run_with_clock(config, cancel, log_control, Arc::new(SystemClock)).await
}

/// As `run`, with the energy controller on `clock` (the demo's compressed day).
pub async fn run_with_clock(
    config: Config,
    cancel: CancellationToken,
    log_control: Option<LogControl>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Exit> {
    let topics = Topics::new(&config.mqtt.base_topic, &config.mqtt.discovery_prefix);
    if config.miners.is_empty() && config.nmminer.is_none() {
        anyhow::bail!("the configuration lists no miners, so there is nothing to do: add them under miners: (or nmminer.devices, or nmminer.accept_all: true for NMMiner broadcasts); nothing was published or cleared");
    }
    // Another daemon on the same base topic would have every command applied twice, and the
    // two would mark each other's bridge offline: refuse to be the second.
    if let Some(live) =
        mqtt::find_live_instance(&config.mqtt, &topics.base, INSTANCE_CHECK_WAIT).await?
    {
        let other = &live.answer["data"]["instance"];
        let who = match (other["host"].as_str(), other["pid"].as_u64()) {
            (Some(host), Some(pid)) => format!(" (on {host}, process {pid})"),
            _ => String::new(),
        };
        anyhow::bail!(
            "another miner2mqtt{who} is already running on base topic {:?} at {}:{}; stop it first, or, to run two (for example to split a large fleet), give each its own mqtt.base_topic and mqtt.client_id",
            topics.base,
            config.mqtt.host,
            config.mqtt.port
        );
    }
    let store = Store::open(&config.store_path, config.store_cache_bytes)?;

    let tracker = TaskTracker::new();
    // Not a child of `cancel`: at shutdown a benchmark's restore still needs its miner's poller
    // (the shutdown below cancels them in order). Dropped without that (a panic, an aborted
    // task), the guard stops them all the same.
    let pollers = CancellationToken::new();
    let _stop_pollers_on_drop = pollers.clone().drop_guard();
    let mqtt_stop = CancellationToken::new();
    let (mqtt, mut mqtt_rx) = mqtt::start(
        &config.mqtt,
        &topics.bridge_state(),
        &tracker,
        mqtt_stop.clone(),
    )?;

    let http = reqwest::Client::builder()
        // ESP32 web servers have few sockets: never keep idle connections open to them.
        .pool_max_idle_per_host(0)
        .connect_timeout(config.request_timeout)
        .build()?;
    let (fleet_tx, mut fleet_rx) = mpsc::channel::<FleetEvent>(4096);
    let mut slots = Vec::with_capacity(config.miners.len());
    // First polls spread over ~2 ms per miner (at least 2 s, at most one interval), so a large
    // fleet does not start with every miner polled in the same second.
    let first_spread = (Duration::from_millis(2) * config.miners.len() as u32)
        .max(Duration::from_secs(2))
        .min(config.poll_interval);
    for m in &config.miners {
        let i = slots.len();
        let client = match m.kind {
            MinerKind::Axeos => {
                let totp = m
                    .totp_secret
                    .as_ref()
                    .and_then(|s| crate::miner::axeos::totp(s.expose()).ok());
                MinerClient::AxeOs(Box::new(AxeOsClient::new(
                    http.clone(),
                    &m.host,
                    config.request_timeout,
                    config.retries,
                    totp,
                    config.pools.clone(),
                )))
            }
            MinerKind::Antminer => MinerClient::Antminer(
                crate::miner::antminer::AntminerClient::new(&m.address(), config.request_timeout),
            ),
            // Found from broadcasts, never listed (the config refuses it).
            MinerKind::Nmminer => continue,
            MinerKind::Avalon => MinerClient::Avalon(AvalonClient::new(
                &m.address(),
                config.request_timeout,
                m.admin_password.as_ref().map(|p| p.expose().to_string()),
            )),
        };
        let handle = spawn_poller(
            i,
            m.name.clone(),
            client,
            config.poll_interval,
            first_spread,
            fleet_tx.clone(),
            &tracker,
            pollers.clone(),
        );
        slots.push(Slot::new(m.clone(), handle, &store));
    }
    // What we published before; miners known by name from earlier runs were ours too.
    let mut owned: HashSet<String> = store.owned_discovery().into_iter().collect();
    for (_, hwid) in store.names() {
        owned.insert(topics.discovery(&discovery::object_id(&hwid)));
    }
    let (energy, mut energy_rx) = energy_task::spawn(
        config.energy.clone(),
        store.clone(),
        clock.clone(),
        &tracker,
        pollers.clone(),
    );
    let plug_topics = power::state_topics(&slots);
    let plugs = slots
        .iter()
        .enumerate()
        .filter_map(|(index, s)| {
            s.config
                .power
                .clone()
                .map(|plug| crate::power::task::PlugSpec {
                    index,
                    name: s.config.name.clone(),
                    plug,
                })
        })
        .collect();
    let (power, mut power_rx) = crate::power::task::spawn(
        plugs,
        config.ha.clone(),
        mqtt.clone(),
        http.clone(),
        store.clone(),
        config.power_keepalive,
        &tracker,
        pollers.clone(),
    );
    let (watch, mut watch_rx) = crate::control::task::spawn(
        config.safety.clone(),
        config.alerts.clone(),
        config.poll_interval,
        store.clone(),
        clock.clone(),
        &tracker,
        pollers.clone(),
    );
    let (tuning, mut tuning_rx) =
        crate::tuning::task::spawn(config.benchmark.clone(), &tracker, pollers.clone());
    tracing::info!(miners = slots.len(), broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port), "miner2mqtt started");

    let history = crate::store::writer::Writer::spawn(store.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the history writer thread: {e}"))?;
    let mut hub = Hub {
        log_level: config.log_level.clone(),
        config,
        topics,
        mqtt,
        store,
        slots,
        connected: false,
        synced: false,
        sync_at: None,
        republish_at: None,
        info_dirty: true,
        info_at: Instant::now(),
        retained: HashMap::new(),
        timed: BTreeSet::new(),
        owned,
        log_control,
        exit: None,
        history_writer: history,
        polls_ok: 0,
        polls_failed: 0,
        fleet_tx,
        tracker: tracker.clone(),
        pollers: pollers.clone(),
        last_heard: HashMap::new(),
        ignored: HashSet::new(),
        instance: json!({
            "host": std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            "pid": std::process::id(),
            "started": millis(SystemTime::now()),
        }),
        energy,
        power,
        plug_topics,
        clock,
        watch,
        tuning,
        restoring: HashSet::new(),
        restore_retry: HashMap::new(),
    };

    // NMMiner telemetry arrives as broadcasts; a bind failure is reported and the rest runs on.
    let (nm_tx, mut nm_rx) = mpsc::channel::<Vec<u8>>(1024);
    if let Some(nm) = &hub.config.nmminer {
        match crate::miner::nmminer::bind(nm.listen).await {
            Ok(socket) => {
                tracing::info!(listen = %nm.listen, "listening for NMMiner broadcasts");
                let stop = pollers.clone();
                tracker.spawn(crate::miner::nmminer::listen(socket, nm_tx, stop));
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    // Older samples into rollups and aggregates, in the background.
    tracker.spawn(crate::store::history::run_compactor(
        hub.store.clone(),
        hub.config.store_retention,
        hub.config.store_compact_every,
        COMPACT_BUDGET,
        pollers.clone(),
    ));

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = fleet_rx.recv() => hub.on_fleet(ev),
            Some(ev) = mqtt_rx.recv() => hub.on_mqtt(ev),
            Some(datagram) = nm_rx.recv() => hub.on_broadcast(&datagram),
            Some(out) = energy_rx.recv() => hub.on_energy(out),
            Some(out) = power_rx.recv() => hub.on_power(out),
            Some(out) = watch_rx.recv() => hub.on_watch(out),
            Some(out) = tuning_rx.recv() => hub.on_tuning(out),
            _ = tick.tick() => hub.on_tick(),
        }
        if hub.exit.is_some() {
            break;
        }
    }

    // Shutdown, in order. A sweep under way puts the miner's settings back first (for a few
    // seconds at most; what does not make it is put back at the next start).
    if hub.stop_sweeps() > 0 {
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        while !hub.restoring.is_empty() {
            tokio::select! {
                _ = &mut deadline => break,
                Some(ev) = fleet_rx.recv() => hub.on_fleet(ev),
            }
        }
    }
    pollers.cancel();
    hub.mqtt.publish(hub.topics.bridge_state(), "offline", true);
    hub.mqtt.disconnect();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 5 s; stopping the MQTT session anyway");
        mqtt_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
    hub.history_writer.finish();
    match hub.store.flush() {
        Ok(_) => tracing::info!(path = %hub.store.path().display(), "history flushed"),
        Err(e) => tracing::error!(error = %e, "history flush failed"),
    }
    Ok(hub.exit.unwrap_or(Exit::Stopped))
}

impl Hub {
    fn on_fleet(&mut self, ev: FleetEvent) {
        match ev {
            FleetEvent::Polled { miner, at, reading } => self.on_reading(miner, at, *reading),
            FleetEvent::PollFailed { miner, error } => {
                self.polls_failed += 1;
                // Off on purpose (a poll that was under way), or booting after switching on.
                if self.off_on_purpose(miner) || self.booting(miner) {
                    return;
                }
                let slot = &mut self.slots[miner];
                slot.failures += 1;
                if slot.failures >= self.config.offline_after && slot.online != Some(false) {
                    tracing::warn!(miner = %slot.config.name, failures = slot.failures, %error, "miner offline");
                    let name = slot.config.name.clone();
                    self.set_availability(miner, false);
                    self.watch.send(WatchInput::Offline {
                        index: miner,
                        error: error.clone(),
                    });
                    self.tuning_offline(miner);
                    self.event(json!({ "type": "miner_offline", "miner": name, "error": error }));
                }
            }
            FleetEvent::CommandDone {
                miner,
                command,
                origin,
                result,
            } => {
                let name = self.slots[miner].config.name.clone();
                let origin_name = origin.as_str();
                if origin == Origin::Benchmark {
                    self.benchmark_command_done(miner, &command, &result);
                }
                match result {
                    Ok(()) => self.event(json!({ "type": "command_applied", "miner": name, "command": command.describe(), "origin": origin_name })),
                    Err(reason) => {
                        if origin == Origin::Strategy {
                            self.energy.send(EnergyInput::CommandFailed { index: miner });
                        }
                        self.event(json!({ "type": "command_failed", "miner": name, "command": command.describe(), "origin": origin_name, "reason": reason }));
                        // Show the device's real value again.
                        self.publish_state(miner);
                    }
                }
            }
        }
    }

    fn on_reading(&mut self, i: usize, at: SystemTime, mut reading: Reading) {
        self.polls_ok += 1;
        if self.off_on_purpose(i) {
            // A poll that was under way when the plug went off.
            return;
        }
        self.slots[i].boot_until = None;
        // Its first reading since start (or since it was switched on).
        let first = self.slots[i].reading.is_none();
        // A select's state must be one of its options: the pool the device is really on belongs
        // in the list even when it is not one the user configured (selecting it changes nothing).
        reading
            .capabilities
            .include_current_pool(reading.telemetry.pool.as_deref());
        let slot = &mut self.slots[i];
        slot.failures = 0;
        let hwid = reading
            .identity
            .hardware_id
            .clone()
            .unwrap_or_else(|| format!("name_{}", slot.config.name));
        if reading.identity.hardware_id.is_none() && slot.warned.insert("mac".into()) {
            tracing::warn!(miner = %slot.config.name, "the miner reports no MAC address; identifying it by its configured name");
        }
        let identity_changed = slot.hardware_id.as_deref() != Some(&hwid);
        if identity_changed {
            if let Err(e) = self.store.remember_name(&slot.config.name, &hwid) {
                tracing::error!(error = %e, "cannot record the miner's identity");
            }
            slot.hardware_id = Some(hwid.clone());
            slot.store_number = None;
            slot.learned = self
                .store
                .sweep_result(&hwid)
                .map(|s| tuning::learned(&s))
                .unwrap_or_default();
            self.info_dirty = true;
        }
        let caps_changed = slot
            .reading
            .as_ref()
            .map(|r| (&r.capabilities, &r.identity.asic_model))
            != Some((&reading.capabilities, &reading.identity.asic_model));
        if caps_changed || slot.limits.is_none() {
            let (limits, warnings) = Limits::resolve(
                &self.config,
                &slot.config,
                reading.identity.asic_model.as_deref(),
                &reading.capabilities,
            );
            for w in warnings {
                if slot.warned.insert(w.clone()) {
                    tracing::warn!("{w}");
                }
            }
            let mut limits = limits;
            limits.learn(slot.learned.0, slot.learned.1);
            slot.limits = Some(limits);
        }
        // History: every sample, tagged with its clock config.
        if slot.store_number.is_none() {
            slot.store_number = self.store.miner_number(&hwid).ok();
        }
        if let Some(n) = slot.store_number {
            self.history_writer
                .record(n, Sample::from_telemetry(millis(at), &reading.telemetry));
        }
        let limits_changed = caps_changed || identity_changed;
        if limits_changed {
            self.energy_info(i);
        }
        if identity_changed {
            self.clear_stale();
        }
        let slot = &mut self.slots[i];
        slot.reading = Some(reading);
        if slot.online != Some(true) {
            if slot.online == Some(false) {
                tracing::info!(miner = %slot.config.name, "miner back online");
                let name = slot.config.name.clone();
                self.event(json!({ "type": "miner_online", "miner": name }));
                self.watch.send(WatchInput::Online { index: i });
            }
            self.info_dirty = true;
            self.publish_discovery(i, false);
            self.set_availability(i, true);
            self.roll_back_sweep(i);
        } else if caps_changed || identity_changed {
            self.publish_discovery(i, false);
        }
        self.publish_state(i);
        self.energy_status(i, true);
        if limits_changed {
            self.watch_info(i);
        }
        if first {
            self.resume_safety_hold(i);
        }
        self.watch_reading(i);
        self.tuning_reading(i);
        // Commands that waited for this first reading are checked and sent now, in order.
        let pending = std::mem::take(&mut self.slots[i].pending);
        if !pending.is_empty() {
            let name = self.slots[i].config.name.clone();
            for (property, payload, _) in pending {
                self.on_set(&name, &property, &payload);
            }
        }
    }

    /// One NMMiner datagram: the device's reading, creating the miner on first hearing if it is
    /// accepted.
    fn on_broadcast(&mut self, datagram: &[u8]) {
        let Some(nm) = self.config.nmminer.clone() else {
            return;
        };
        let labels: Vec<String> = self.config.pools.iter().map(|p| p.label()).collect();
        let status = match crate::miner::nmminer::parse_status(datagram, &labels) {
            Ok(s) => s,
            Err(reason) => {
                tracing::debug!(%reason, "unreadable NMMiner broadcast ignored");
                return;
            }
        };
        let existing = self
            .slots
            .iter()
            .position(|s| s.config.kind == MinerKind::Nmminer && s.config.host == status.ip);
        let i = match existing {
            Some(i) => i,
            None => {
                let Some(name) = nm.name_for(&status.ip) else {
                    if self.ignored.insert(status.ip.clone()) {
                        tracing::info!(ip = %status.ip, board = %status.board, "ignoring an NMMiner that is not in nmminer.devices (accept_all: true accepts every device)");
                    }
                    return;
                };
                let i = self.slots.len();
                let config = MinerConfig {
                    name: name.clone(),
                    kind: MinerKind::Nmminer,
                    host: status.ip.clone(),
                    totp_secret: None,
                    admin_password: None,
                    limits: Default::default(),
                    power: None,
                };
                let handle = crate::fleet::spawn_datagram_commander(
                    i,
                    status.ip.clone(),
                    nm.config_port,
                    self.config.pools.clone(),
                    self.fleet_tx.clone(),
                    &self.tracker,
                    self.pollers.clone(),
                );
                tracing::info!(miner = %name, ip = %status.ip, board = %status.board, "NMMiner found");
                self.slots.push(Slot::new(config, handle, &self.store));
                i
            }
        };
        self.last_heard.insert(i, Instant::now());
        self.on_reading(i, SystemTime::now(), status.reading);
    }

    fn on_mqtt(&mut self, ev: MqttEvent) {
        match ev {
            MqttEvent::Connected => {
                self.connected = true;
                self.synced = false;
                self.retained.clear();
                let t = &self.topics;
                let mut filters = vec![
                    t.discovery_wildcard(),
                    format!("{}/+/set/+", t.base),
                    format!("{}/bridge/request/+", t.base),
                    t.bridge_prices_set(),
                    t.ha_status(),
                ];
                filters.extend(self.plug_topics.keys().cloned());
                self.mqtt.subscribe(filters);
                self.mqtt.publish(t.bridge_state(), "online", true);
                self.info_dirty = true;
                self.sync_at = Some(Instant::now() + RETAINED_SETTLE);
            }
            MqttEvent::Disconnected(_) => {
                self.connected = false;
                self.synced = false;
            }
            MqttEvent::Message {
                topic,
                payload,
                retain: _,
            } => self.on_message(&topic, &payload),
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let t = &self.topics;
        if let Some(rest) =
            topic.strip_prefix(&format!("{}/device/{}/", t.discovery_prefix, t.node))
        {
            if rest.ends_with("/config") {
                if payload.is_empty() {
                    self.retained.remove(topic);
                } else {
                    self.retained
                        .insert(topic.to_string(), payload_hash(payload));
                }
            }
            return;
        }
        if self.on_plug_message(topic, payload) {
            return;
        }
        let t = &self.topics;
        if topic == t.ha_status() {
            if payload == b"online" {
                let delay = Duration::from_millis(rand::rng().random_range(500..2500));
                tracing::info!(?delay, "Home Assistant came online; republishing");
                self.republish_at = Some(Instant::now() + delay);
            }
            return;
        }
        let Some(rest) = topic.strip_prefix(&format!("{}/", t.base)) else {
            return;
        };
        if rest == "bridge/prices/set" {
            self.on_prices_set(payload);
            return;
        }
        if let Some(action) = rest.strip_prefix("bridge/request/") {
            let action = action.to_string();
            self.on_request(&action, payload);
            return;
        }
        let mut parts = rest.splitn(3, '/');
        if let (Some(name), Some("set"), Some(property)) =
            (parts.next(), parts.next(), parts.next())
        {
            let (name, property) = (name.to_string(), property.to_string());
            self.on_set(&name, &property, payload);
        }
    }

    /// A user's command from a set topic.
    fn on_set(&mut self, name: &str, property: &str, payload: &[u8]) {
        let Some(i) = self.slots.iter().position(|s| s.config.name == name) else {
            self.event(
                json!({ "type": "command_rejected", "miner": name, "property": property,
                "value": command::clip(payload), "reason": format!("no miner is named {name:?}") }),
            );
            return;
        };
        self.command(i, name, property, payload, Origin::User);
    }

    /// Every command, whatever its origin, takes this path: parsed, checked against the safety
    /// limits, admitted by the miner's arbiter, queued.
    fn command(&mut self, i: usize, name: &str, property: &str, payload: &[u8], origin: Origin) {
        let value = command::clip(payload);
        if payload.len() > command::MAX_PAYLOAD {
            let reason = format!(
                "a {property} command is a short value, not {} bytes",
                payload.len()
            );
            self.refuse_from(i, name, property, &value, &reason, origin);
            return;
        }
        if property == "power" {
            self.power_command(i, name, payload, origin);
            return;
        }
        if self.off_on_purpose(i) {
            let reason = format!("{name} is switched off at its plug; switch it on first");
            self.refuse_from(i, name, property, &value, &reason, origin);
            return;
        }
        if self.booting(i) && self.slots[i].reading.is_none() {
            let reason = format!(
                "{name} was just switched on and is still starting; try again when it shows a hashrate"
            );
            self.refuse_from(i, name, property, &value, &reason, origin);
            return;
        }
        let Some(limits) = &self.slots[i].limits else {
            if origin == Origin::Strategy {
                return;
            }
            // Not read yet (the daemon has just started): hold it until the miner is.
            self.timed.insert(i);
            let pending = &mut self.slots[i].pending;
            pending.retain(|(p, _, _)| p != property);
            pending.push((
                property.to_string(),
                bytes::Bytes::copy_from_slice(payload),
                Instant::now(),
            ));
            tracing::info!(miner = %name, property, value = %value, "command held until the miner has been read");
            return;
        };
        let text = match std::str::from_utf8(payload) {
            Ok(t) => t.trim(),
            Err(_) => {
                let reason = "the payload is not UTF-8 text";
                self.refuse_from(i, name, property, &value, reason, origin);
                return;
            }
        };
        let parsed = match property {
            "benchmark" => {
                self.benchmark_command(i, name, text, origin);
                return;
            }
            "profile" => self.profile_of(i, text),
            _ => command::parse(property, text, limits),
        };
        match parsed {
            Ok(cmd) => {
                self.send(i, name, property, &value, cmd, origin);
            }
            Err(reason) => self.refuse_from(i, name, property, &value, &reason, origin),
        }
    }

    /// A parsed command of any origin, for a miner that has been read: checked against its
    /// limits, sent only while it is online, admitted by its arbiter, queued. Says whether it
    /// was queued (or needed nothing sending).
    fn send(
        &mut self,
        i: usize,
        name: &str,
        property: &str,
        value: &str,
        cmd: Command,
        origin: Origin,
    ) -> bool {
        let Some(limits) = &self.slots[i].limits else {
            self.refuse_from(
                i,
                name,
                property,
                value,
                "the miner has not been read yet",
                origin,
            );
            return false;
        };
        let verdict = limits.check(&cmd).map(|()| cmd);
        let verdict = verdict.and_then(|cmd: Command| {
            if self.slots[i].online != Some(true) {
                return Err("the miner is offline".to_string());
            }
            Ok(cmd)
        });
        match verdict {
            Ok(Command::SelectPool(label))
                if self.slots[i]
                    .reading
                    .as_ref()
                    .and_then(|r| r.telemetry.pool.as_deref())
                    == Some(label.as_str()) =>
            {
                // Already on it: nothing to send, and no restart for nothing.
                tracing::info!(miner = %name, pool = %label, "already on that pool");
                self.publish_state(i);
                true
            }
            Ok(cmd) => {
                let change = Change {
                    setting: crate::control::is_setting(&cmd),
                    raises: crate::control::raises(
                        &cmd,
                        self.slots[i].reading.as_ref().map(|r| &r.telemetry),
                        self.slots[i].limits.as_ref(),
                    ),
                };
                let hold = match self.admit(i, origin, change, &cmd.describe()) {
                    Ok(hold) => hold,
                    Err(reason) => {
                        self.not_admitted(i, name, property, value, &reason, origin);
                        return false;
                    }
                };
                match self.slots[i].handle.submit(cmd.clone(), origin) {
                    Ok(()) => {
                        tracing::info!(miner = %name, command = %cmd.describe(), origin = origin.as_str(), "command queued");
                        self.hold_changed(i, hold);
                        true
                    }
                    Err(reason) => {
                        self.refuse_from(i, name, property, value, &reason, origin);
                        false
                    }
                }
            }
            Err(reason) => {
                self.refuse_from(i, name, property, value, &reason, origin);
                false
            }
        }
    }

    /// The arbiter's verdict on a change to miner `i`: `Ok` with what it changed about the
    /// strategy's hold, or why it may not go. The strategy is told of its own refusals. Without
    /// a strategy a user change holds nothing.
    fn admit(
        &mut self,
        i: usize,
        origin: Origin,
        change: Change,
        what: &str,
    ) -> Result<HoldChange, String> {
        let manual_hold = if self.config.energy.has_strategy() {
            self.config.energy.manual_hold
        } else {
            Duration::ZERO
        };
        let now = self.clock.now();
        let verdict = self.slots[i]
            .arbiter
            .admit(origin, change, now, manual_hold);
        if let Err(reason) = &verdict {
            tracing::debug!(miner = %self.slots[i].config.name, what, origin = origin.as_str(), %reason, "not admitted");
        }
        verdict
    }

    /// A change that went out held the strategy off: the controller and the hold sensor learn
    /// until when.
    fn hold_changed(&mut self, i: usize, hold: HoldChange) {
        if let HoldChange::HeldUntil(until) = hold {
            self.energy.send(EnergyInput::Hold {
                index: i,
                until: Some(until),
            });
            self.publish_state(i);
        }
    }

    /// The arbiter said no: the user is told why (and the entity snaps back); the strategy only
    /// learns it failed, since it would meet the same refusal at every reconciliation.
    fn not_admitted(
        &mut self,
        i: usize,
        name: &str,
        property: &str,
        value: &str,
        reason: &str,
        origin: Origin,
    ) {
        if origin == Origin::Strategy {
            self.energy.send(EnergyInput::CommandFailed { index: i });
        } else {
            self.refuse_from(i, name, property, value, reason, origin);
        }
    }

    /// As `refuse`, for a command of any origin; a strategy's refusal is also reported to it.
    fn refuse_from(
        &mut self,
        i: usize,
        name: &str,
        property: &str,
        value: &str,
        reason: &str,
        origin: Origin,
    ) {
        if origin == Origin::Strategy {
            self.energy.send(EnergyInput::CommandFailed { index: i });
        }
        tracing::warn!(miner = %name, property, value, reason, origin = origin.as_str(), "command refused");
        self.event(json!({ "type": "command_rejected", "miner": name, "property": property, "value": value, "origin": origin.as_str(), "reason": reason }));
        self.publish_state(i);
    }

    /// Tells the user why a command was not sent, and snaps the entity back to the device's value.
    fn refuse(&mut self, i: usize, name: &str, property: &str, value: &str, reason: &str) {
        self.refuse_from(i, name, property, value, reason, Origin::User);
    }

    fn on_request(&mut self, action: &str, payload: &[u8]) {
        // A JSON object, a JSON string, or a bare value (the bridge's select and button send
        // plain text); nothing of a payload larger than any request is looked at.
        let oversized = payload.len() > command::MAX_PAYLOAD;
        let json: Option<Value> = if oversized {
            None
        } else {
            serde_json::from_slice(payload).ok()
        };
        let request: Option<Value> = json.clone().filter(Value::is_object);
        let text = match &json {
            Some(Value::String(s)) => s.trim().to_string(),
            _ if oversized => String::new(),
            _ => String::from_utf8_lossy(payload).trim().to_string(),
        };
        let parsed = request.clone().unwrap_or_else(|| {
            if text.is_empty() {
                json!({})
            } else {
                json!({ "value": text })
            }
        });
        let transaction = parsed.get("transaction").cloned();
        if !oversized && matches!(action, "report" | "export") {
            // Read from the store on a blocking thread: a year of rollups takes a while.
            self.history_request(action, &parsed, transaction);
            return;
        }
        let value = parsed.get("value").cloned();
        let result: Result<Value, String> = match action {
            _ if oversized => Err(format!(
                "a request is a small JSON object, not {} bytes",
                payload.len()
            )),
            "log_level" => {
                let asked = value
                    .as_ref()
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase);
                match asked.as_deref() {
                    Some(level) if LOG_LEVELS.contains(&level) => {
                        let applied = match &self.log_control {
                            Some(ctl) => ctl(level),
                            None => Ok(()),
                        };
                        applied.map(|()| {
                            tracing::info!(level, "log level changed");
                            self.log_level = level.to_string();
                            self.info_dirty = true;
                            json!({ "value": level })
                        })
                    }
                    Some(_) => Err(format!(
                        "log_level takes one of {}, got {}",
                        LOG_LEVELS.join(", "),
                        command::quote(payload)
                    )),
                    None => Err(format!(
                        "log_level takes one of {} (as the payload, or {{\"value\": \"debug\"}})",
                        LOG_LEVELS.join(", ")
                    )),
                }
            }
            "restart" => {
                let pressed =
                    text.eq_ignore_ascii_case("press") || text.eq_ignore_ascii_case("restart");
                if request.is_some() || pressed {
                    tracing::info!("restart requested over MQTT");
                    self.exit = Some(Exit::Restart);
                    Ok(json!({}))
                } else {
                    Err(format!(
                        "restart takes PRESS (the button's payload) or a JSON request such as {{}}, got {}",
                        command::quote(payload)
                    ))
                }
            }
            "health_check" => {
                use std::sync::atomic::Ordering::Relaxed;
                let counts = self.history_writer.counts();
                Ok(json!({
                "healthy": true,
                "instance": self.instance,
                "miners": self.slots.len(),
                "miners_online": self.slots.iter().filter(|s| s.online == Some(true)).count(),
                "polls_ok": self.polls_ok,
                "polls_failed": self.polls_failed,
                "history": {
                    "written": counts.written.load(Relaxed),
                    "dropped": counts.dropped.load(Relaxed),
                    "failed": counts.failed.load(Relaxed),
                },
            }))
            }
            "history" => self.history(&parsed),
            "decisions" => self.decisions(&parsed),
            "strategy" => self.energy_switch(Switch::Strategy, &text),
            "champion_mode" => self.energy_switch(Switch::Champion, &text),
            other => Err(format!(
                "unknown request {}; known: log_level, restart, health_check, history, report, export, decisions, strategy, champion_mode",
                command::quote(other.as_bytes())
            )),
        };
        requests::respond(&self.mqtt, &self.topics, action, transaction, result);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if let Some(expire) = self.config.nmminer.as_ref().map(|n| n.expire_after) {
            let silent: Vec<usize> = self
                .last_heard
                .iter()
                .filter(|(i, heard)| {
                    now.duration_since(**heard) > expire && self.slots[**i].online == Some(true)
                })
                .map(|(i, _)| *i)
                .collect();
            for i in silent {
                let name = self.slots[i].config.name.clone();
                tracing::warn!(miner = %name, ?expire, "NMMiner silent; shown unavailable");
                self.set_availability(i, false);
                self.event(json!({ "type": "miner_offline", "miner": name,
                    "error": format!("no broadcast for {}", humantime::format_duration(expire)) }));
            }
        }
        if self.connected && !self.synced && self.sync_at.is_some_and(|t| now >= t) {
            self.sync_at = None;
            self.synced = true;
            self.full_publish(false);
            // The retained copies have been compared; from here on `retained` tracks what we
            // publish, and the echo of every discovery payload would only cost bandwidth.
            self.mqtt.unsubscribe(self.topics.discovery_wildcard());
        }
        if self.synced && self.republish_at.is_some_and(|t| now >= t) {
            self.republish_at = None;
            self.full_publish(true);
        }
        // Only the miners with something timed (a held command, a state to send again): a
        // fleet of thousands is not scanned ten times a second.
        let timed: Vec<usize> = self.timed.iter().copied().collect();
        for i in timed {
            let held = std::mem::take(&mut self.slots[i].pending);
            let (expired, kept): (Vec<_>, Vec<_>) = held
                .into_iter()
                .partition(|(_, _, at)| now.duration_since(*at) > PENDING_FOR);
            self.slots[i].pending = kept;
            if !expired.is_empty() {
                let name = self.slots[i].config.name.clone();
                let reason = format!(
                    "the miner has not answered since miner2mqtt started, so nothing was sent (the command waited {})",
                    humantime::format_duration(PENDING_FOR)
                );
                for (property, payload, _) in expired {
                    self.refuse(i, &name, &property, &command::clip(&payload), &reason);
                }
            }
            if self.slots[i].restate_at.is_some_and(|t| now >= t) {
                self.slots[i].restate_at = None;
                self.publish_state(i);
            }
            if self.slots[i].restate_at.is_none() && self.slots[i].pending.is_empty() {
                self.timed.remove(&i);
            }
        }
        if self.connected && self.info_dirty && now >= self.info_at {
            self.info_dirty = false;
            self.info_at = now + info_every(self.slots.len());
            self.publish_info();
        }
    }

    /// Everything a fresh session (or a restarted Home Assistant) needs: discovery where the
    /// retained copy differs (all of it when `force`), stale discovery cleared, availability
    /// and state.
    fn full_publish(&mut self, force: bool) {
        let (topic, payload) = discovery::bridge_discovery(&self.topics, self.energy_features());
        self.publish_retained_if_changed(topic.clone(), payload, force);
        self.clear_stale();
        for i in 0..self.slots.len() {
            if self.slots[i].reading.is_some() {
                self.publish_discovery(i, force);
            }
            if let Some(online) = self.slots[i].online {
                self.mqtt.publish(
                    self.topics.availability(&self.slots[i].config.name),
                    if online { "online" } else { "offline" },
                    true,
                );
            }
            self.publish_state(i);
        }
    }

    /// Clears retained discovery that no configured miner claims, and the availability of
    /// miners removed from the config. Only once every configured miner's hardware id is known:
    /// until then an unidentified miner might own a retained entry, and clearing it would make
    /// Home Assistant delete the device and its customisations.
    fn clear_stale(&mut self) {
        if !self.synced || self.slots.iter().any(|s| s.hardware_id.is_none()) {
            return;
        }
        let mut expected: BTreeSet<String> =
            BTreeSet::from([self.topics.discovery(self.topics.bridge_object_id())]);
        for slot in &self.slots {
            if let Some(h) = &slot.hardware_id {
                expected.insert(self.topics.discovery(&discovery::object_id(h)));
            }
        }
        if let Some(nm) = &self.config.nmminer {
            // Listed NMMiner devices that have not broadcast yet keep their discovery.
            for (_, name) in &nm.devices {
                if let Some(h) = self.store.hardware_id_of(name) {
                    expected.insert(self.topics.discovery(&discovery::object_id(&h)));
                }
            }
        }
        let keep_all_nm = self.config.nmminer.as_ref().is_some_and(|n| n.accept_all);
        let nm_prefix = self.topics.discovery("nm_");
        let nm_prefix = nm_prefix.trim_end_matches("/config");
        let stale: Vec<String> = self
            .retained
            .keys()
            .filter(|t| !expected.contains(*t))
            // Only what we published ourselves: another tool's (or another install's) devices
            // under the same prefix are not ours to delete.
            .filter(|t| self.owned.contains(*t))
            // With accept_all, any NMMiner may still be out there: never cleared at start.
            .filter(|t| !(keep_all_nm && t.starts_with(nm_prefix)))
            .cloned()
            .collect();
        for topic in stale {
            tracing::info!(%topic, "clearing discovery of a miner that is no longer configured");
            self.mqtt.publish(topic.clone(), Vec::<u8>::new(), true);
            self.retained.remove(&topic);
            self.owned.remove(&topic);
            if let Err(e) = self.store.disown_discovery(&topic) {
                tracing::error!(error = %e, "cannot record a cleared discovery topic");
            }
        }
        let mut configured: HashSet<&str> =
            self.slots.iter().map(|s| s.config.name.as_str()).collect();
        if let Some(nm) = &self.config.nmminer {
            configured.extend(nm.devices.iter().map(|(_, n)| n.as_str()));
        }
        for (name, _) in self.store.names() {
            let kept =
                configured.contains(name.as_str()) || (keep_all_nm && name.starts_with("nmminer-"));
            if !kept {
                self.mqtt
                    .publish(self.topics.availability(&name), Vec::<u8>::new(), true);
                let _ = self.store.forget_name(&name);
            }
        }
    }

    /// Publishes retained discovery unless the broker already holds exactly this; says whether
    /// it published.
    fn publish_retained_if_changed(&mut self, topic: String, payload: Value, force: bool) -> bool {
        let bytes = payload.to_string().into_bytes();
        let h = payload_hash(&bytes);
        if !force && self.retained.get(&topic) == Some(&h) {
            return false;
        }
        self.retained.insert(topic.clone(), h);
        if self.owned.insert(topic.clone()) {
            if let Err(e) = self.store.own_discovery(&topic) {
                tracing::error!(error = %e, "cannot record a published discovery topic");
            }
        }
        self.mqtt.publish(topic, bytes, true);
        true
    }

    fn publish_discovery(&mut self, i: usize, force: bool) {
        if !self.synced {
            return;
        }
        let slot = &self.slots[i];
        let (Some(reading), Some(limits), Some(hwid)) =
            (&slot.reading, &slot.limits, &slot.hardware_id)
        else {
            return;
        };
        let (topic, payload) = discovery::miner_discovery(
            &self.topics,
            &MinerDevice {
                name: &slot.config.name,
                host: &slot.config.host,
                hardware_id: hwid,
                identity: &reading.identity,
                capabilities: &reading.capabilities,
                limits,
                expire_after: (slot.config.kind == MinerKind::Nmminer)
                    .then(|| {
                        self.config
                            .nmminer
                            .as_ref()
                            .map(|n| n.expire_after.as_secs())
                    })
                    .flatten(),
                energy: self.energy_features(),
                plug: slot.config.power.is_some(),
            },
        );
        if self.publish_retained_if_changed(topic, payload, force) {
            self.slots[i].restate_at = Some(Instant::now() + RESTATE_AFTER_DISCOVERY);
            self.timed.insert(i);
        }
    }

    fn set_availability(&mut self, i: usize, online: bool) {
        self.slots[i].online = Some(online);
        self.info_dirty = true;
        if !online {
            // Coming online is told with the reading that brought it.
            self.energy_status(i, false);
        }
        if self.connected {
            let topic = self.topics.availability(&self.slots[i].config.name);
            self.mqtt
                .publish(topic, if online { "online" } else { "offline" }, true);
        }
    }

    fn publish_state(&mut self, i: usize) {
        if !self.synced {
            return;
        }
        let off = self.off_on_purpose(i);
        let slot = &self.slots[i];
        // Before a reading only a plugged miner has something to say: its plug's state.
        if slot.reading.is_none() && slot.plug.is_none() {
            return;
        }
        let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
        let priced = self.energy_features().priced;
        let extras = state::Extras {
            energy: slot.meter.map(|(kwh, _)| round(kwh, 6)),
            cost_today: slot.meter.filter(|_| priced).map(|(_, gbp)| round(gbp, 6)),
            strategy_hold: slot
                .arbiter
                .held_until(self.clock.now())
                .map(|t| t.to_rfc3339()),
            // A miner that answers has power, whatever its plug has (not yet) said.
            plug_power: slot
                .plug
                .and_then(|p| {
                    p.shown()
                        .or((slot.online == Some(true) && slot.reading.is_some()).then_some(true))
                })
                .map(|on| if on { "ON" } else { "OFF" }),
            problem: !slot.problems.is_empty(),
            problems: slot.problems.iter().map(|k| k.as_str()).collect(),
            safety_hold: slot.arbiter.safety_held(),
        };
        // Off on purpose: no hashrate, no power, nothing else known.
        let off_telemetry;
        let telemetry = if off {
            off_telemetry = crate::miner::Telemetry {
                hashrate: Some(0.0),
                power: Some(0.0),
                ..Default::default()
            };
            Some(&off_telemetry)
        } else {
            slot.reading.as_ref().map(|r| &r.telemetry)
        };
        let body = state::state_payload(
            telemetry,
            slot.reading
                .as_ref()
                .and_then(|r| r.identity.firmware.as_deref()),
            slot.limits.as_ref(),
            &self.config.safety.thermal(slot.config.kind),
            &extras,
        );
        self.mqtt
            .publish_volatile(self.topics.state(&slot.config.name), body);
    }

    fn publish_info(&mut self) {
        let miners: Vec<Value> = self
            .slots
            .iter()
            .map(|s| {
                json!({
                    "name": s.config.name,
                    "kind": s.config.kind,
                    "host": s.config.host,
                    "hardware_id": s.hardware_id,
                    "online": s.online == Some(true),
                    "model": s.reading.as_ref().map(|r| r.identity.model.clone()),
                })
            })
            .collect();
        let online = self.slots.iter().filter(|s| s.online == Some(true)).count();
        let info = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "log_level": self.log_level,
            "miners_online": online,
            "miners": miners,
            "config": self.config.public_view(),
        });
        self.mqtt
            .publish(self.topics.bridge_info(), info.to_string(), true);
    }

    fn event(&mut self, mut event: Value) {
        event["time"] = millis(SystemTime::now()).into();
        if self.connected {
            self.mqtt
                .publish(self.topics.bridge_event(), event.to_string(), false);
        }
    }
}
