//! The energy controller: a task of its own beside the hub. It keeps the price book (fetched,
//! from the config's schedule, or pushed over MQTT; cached in the store), runs the strategy every
//! minute of its clock, meters every miner's energy, and tells the hub what to send and publish.
//! It never publishes to MQTT itself.

use super::config::{EnergyConfig, Source};
use super::meter::Meter;
use super::octopus::{next_refresh, Octopus};
use super::prices::{uk_day, PriceBook, PriceSlot};
use super::strategy::{Action, MinerInfo, MinerStatus, Strategy};
use crate::store::Store;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the controller's time comes from: the wall clock, or a faster one (the demo, replays).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// How many clock seconds pass per real second.
    fn speed(&self) -> f64 {
        1.0
    }
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock running `speed` times faster than real time from `start` (the demo's compressed day).
pub struct FastClock {
    real_start: std::time::Instant,
    start: DateTime<Utc>,
    speed: f64,
}

impl FastClock {
    pub fn new(start: DateTime<Utc>, speed: f64) -> FastClock {
        FastClock {
            real_start: std::time::Instant::now(),
            start,
            speed: speed.max(1.0),
        }
    }
}

impl Clock for FastClock {
    fn now(&self) -> DateTime<Utc> {
        let real = self.real_start.elapsed().as_secs_f64() * self.speed;
        self.start + Duration::milliseconds((real * 1000.0) as i64)
    }
    fn speed(&self) -> f64 {
        self.speed
    }
}

/// What the hub tells the controller.
#[derive(Debug)]
pub enum Input {
    /// What a miner is, when first read and whenever that changes; `key` is its hardware id
    /// (energy totals follow it).
    Info { info: MinerInfo, key: String },
    /// A reading or availability change.
    Status(MinerStatus),
    /// The arbiter's hold on a miner changed.
    Hold {
        index: usize,
        until: Option<DateTime<Utc>>,
    },
    /// The watchdog's safety hold on a miner started or ended.
    SafetyHold { index: usize, held: bool },
    /// A command the strategy sent was refused or failed.
    CommandFailed { index: usize },
    /// Prices fetched by the price source or pushed to `bridge/prices/set`.
    Prices(Vec<PriceSlot>),
    /// One of the bridge's switches turned on or off.
    Switch(Switch, bool),
    /// The price source's first attempt failed (the strategy may start on what is known).
    FetchFailed,
}

/// The bridge's energy switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Strategy,
    Champion,
}

impl Switch {
    /// Its bridge request (and the store setting that keeps it).
    pub fn request(self) -> &'static str {
        match self {
            Switch::Strategy => "strategy",
            Switch::Champion => "champion_mode",
        }
    }
}

/// What the controller asks of the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A command with origin `strategy`.
    Command {
        index: usize,
        property: &'static str,
        value: String,
    },
    Event(Value),
    /// The bridge's energy state (`<base>/bridge/energy`).
    Bridge(Value),
    /// Upcoming slots (`<base>/bridge/prices`), for a chart card.
    Slots(Value),
    /// A miner's energy figures after a sample.
    Meter {
        index: usize,
        kwh: f64,
        cost_today: f64,
    },
}

/// The sending side, for the hub.
#[derive(Clone)]
pub struct Handle {
    inbox: crate::control::Inbox<Input>,
}

impl Handle {
    /// Hands something to the controller; when it is busy a reading may be dropped (the next
    /// one carries the same news), nothing else.
    pub fn send(&self, input: Input) {
        match input {
            Input::Status(_) => self.inbox.offer(input),
            other => self.inbox.deliver(other),
        }
    }
}

/// The controller's state outside the strategy.
struct Controller {
    strategy: Strategy,
    store: Store,
    meters: HashMap<usize, (String, Meter)>,
    out: mpsc::Sender<Output>,
    source_label: String,
    last_bridge: Option<Value>,
    last_slots: Option<Value>,
}

/// The events kept in the store as decisions.
const DECISIONS: [&str; 3] = ["band_changed", "champion_changed", "price_missing"];

impl Controller {
    /// Runs the strategy now and publishes what changed.
    async fn evaluate(&mut self, now: DateTime<Utc>) {
        let actions = self.strategy.tick(now);
        self.actions(actions, now).await;
        self.publish(now).await;
    }

    async fn emit(&self, o: Output) {
        let _ = self.out.send(o).await;
    }

    /// Hands the strategy's actions to the hub; its decisions (band and champion changes, a
    /// missing price) are also kept in the store, for the record.
    async fn actions(&self, actions: Vec<Action>, now: DateTime<Utc>) {
        for a in actions {
            match a {
                Action::Command {
                    index,
                    property,
                    value,
                } => {
                    self.emit(Output::Command {
                        index,
                        property,
                        value,
                    })
                    .await
                }
                Action::Event(e) => {
                    if DECISIONS.contains(&e["type"].as_str().unwrap_or_default()) {
                        if let Err(err) = self.store.record_decision(now.timestamp_millis(), &e) {
                            tracing::error!(error = %err, "cannot keep a decision in the store");
                        }
                    }
                    self.emit(Output::Event(e)).await
                }
            }
        }
    }

    fn add_prices(&mut self, slots: Vec<PriceSlot>, now: DateTime<Utc>) {
        if let Err(e) = self.store.save_prices(&slots) {
            tracing::error!(error = %e, "cannot keep prices in the store");
        }
        let book = self.strategy.book_mut();
        book.insert(slots);
        book.prune_before(now - Duration::days(2));
    }

    /// Publishes the bridge's energy state and the upcoming slots when they changed.
    async fn publish(&mut self, now: DateTime<Utc>) {
        let bridge = bridge_state(&self.strategy, now, &self.source_label);
        if self.last_bridge.as_ref() != Some(&bridge) {
            self.last_bridge = Some(bridge.clone());
            self.emit(Output::Bridge(bridge)).await;
        }
        let slots = upcoming_slots(self.strategy.book(), now);
        if self.last_slots.as_ref() != Some(&slots) {
            self.last_slots = Some(slots.clone());
            self.emit(Output::Slots(slots)).await;
        }
    }

    /// Keeps the meters that changed (once a minute, and at shutdown).
    fn save_meters(&mut self) {
        for (key, meter) in self.meters.values_mut() {
            if meter.dirty {
                meter.dirty = false;
                if let Err(e) = self.store.save_meter(key, &meter.record) {
                    tracing::error!(error = %e, "cannot keep energy totals in the store");
                }
            }
        }
    }

    /// A miner seen for the first time, or a different miner behind the same name, meters on
    /// from its own kept totals.
    fn meter_for(&mut self, index: usize, key: String) {
        if self.meters.get(&index).is_some_and(|(k, _)| *k == key) {
            return;
        }
        let record = self.store.load_meter(&key).unwrap_or_default();
        let replaced = self.meters.insert(index, (key, Meter::from_record(record)));
        // The totals of the miner that was behind this name are kept before they are dropped.
        if let Some((old, meter)) = replaced.filter(|(_, m)| m.dirty) {
            if let Err(e) = self.store.save_meter(&old, &meter.record) {
                tracing::error!(error = %e, "cannot keep energy totals in the store");
            }
        }
    }

    /// Meters a sample of miner `index` and tells the hub.
    async fn meter(&mut self, index: usize, at: DateTime<Utc>, power: Option<f64>) {
        let Some((_, meter)) = self.meters.get_mut(&index) else {
            return;
        };
        meter.add(at, power, self.strategy.book());
        let (kwh, cost_today) = (meter.record.kwh, meter.record.cost_today);
        self.emit(Output::Meter {
            index,
            kwh,
            cost_today,
        })
        .await;
    }
}

fn gbp(p: f64) -> f64 {
    (p / 100.0 * 100_000.0).round() / 100_000.0
}

/// The bridge's energy state: prices in GBP/kWh (the unit HA's energy dashboard takes for a
/// current-price entity), today's figures, the cheapest windows ahead, band and champion.
pub fn bridge_state(s: &Strategy, now: DateTime<Utc>, source: &str) -> Value {
    let book = s.book();
    let stats = book.day_stats(now);
    let window = |h: i64| {
        book.cheapest_window(now, Duration::hours(h))
            .map(|(t, _)| t.to_rfc3339())
    };
    json!({
        "price_now": book.at(now).map(|x| gbp(x.p_per_kwh)),
        "price_next": book.next(now).map(|x| gbp(x.p_per_kwh)),
        "price_min_today": stats.map(|d| gbp(d.min)),
        "price_max_today": stats.map(|d| gbp(d.max)),
        "price_mean_today": stats.map(|d| gbp(d.mean)),
        "cheapest_1h": window(1),
        "cheapest_3h": window(3),
        "band": s.band(),
        "strategy": if s.enabled { "ON" } else { "OFF" },
        "champion_mode": if s.champion_enabled { "ON" } else { "OFF" },
        "champion": s.champion(),
        "source": source,
        "known_until": book.known_until(now).map(|t| t.to_rfc3339()),
    })
}

/// The slots from the current one on, for a chart (`json_attributes_topic`).
pub fn upcoming_slots(book: &PriceBook, now: DateTime<Utc>) -> Value {
    let slots: Vec<Value> = book
        .range(now, now + Duration::days(2))
        .map(|s| {
            json!({
                "start": s.start.to_rfc3339(),
                "end": s.end.to_rfc3339(),
                "p_per_kwh": s.p_per_kwh,
            })
        })
        .collect();
    json!({ "slots": slots })
}

/// Starts the controller. Returns its handle and the hub's receiving end.
pub fn spawn(
    config: EnergyConfig,
    store: Store,
    clock: Arc<dyn Clock>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> (Handle, mpsc::Receiver<Output>) {
    let (tx, mut rx) = mpsc::channel::<Input>(8192);
    let (out, out_rx) = mpsc::channel::<Output>(8192);
    let handle = Handle {
        inbox: crate::control::Inbox::new(tx.clone()),
    };
    let source_label = match &config.source {
        None => "none configured".into(),
        Some(Source::Octopus {
            region, product, ..
        }) => format!(
            "Octopus Agile, region {region}{}",
            product
                .as_deref()
                .map(|p| format!(", {p}"))
                .unwrap_or_default()
        ),
        Some(Source::Schedule { .. }) => "schedule from the config".into(),
        Some(Source::Mqtt) => "pushed over MQTT".into(),
    };
    let kept = store.load_prices(clock.now() - Duration::days(2));
    if let Some(Source::Octopus {
        region,
        product,
        base_url,
    }) = &config.source
    {
        let octopus = Octopus::new(base_url, *region, product.clone());
        let known = kept.iter().map(|s| s.end).max();
        tracker.spawn(fetch_loop(
            octopus,
            known,
            clock.clone(),
            tx.clone(),
            out.clone(),
            cancel.clone(),
        ));
    }
    let mut strategy = Strategy::new(config.clone());
    strategy.enabled = store.setting(Switch::Strategy.request()).unwrap_or(true);
    strategy.champion_enabled = store.setting(Switch::Champion.request()).unwrap_or(true);
    strategy.book_mut().insert(kept);
    let mut c = Controller {
        strategy,
        store,
        meters: HashMap::new(),
        out,
        source_label,
        last_bridge: None,
        last_slots: None,
    };
    // With Octopus prices the strategy waits for the first fetch (or its failure, or 30 s), so a
    // fresh install does not start in the safe band for the second before prices arrive.
    let mut ready = !matches!(config.source, Some(Source::Octopus { .. }));
    let started = std::time::Instant::now();
    tracker.spawn(async move {
        // A minute of the controller's clock, in real time.
        let minute = std::time::Duration::from_secs_f64(60.0 / clock.speed());
        let mut tick = tokio::time::interval(minute);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let now = clock.now();
                    if let Some(Source::Schedule { price, periods }) = c.strategy.config().source.clone() {
                        for day in [now, now + Duration::days(1)] {
                            if c.strategy.book().at(uk_day(day).0).is_none() {
                                let slots = super::schedule::day_slots(day, price, &periods);
                                c.add_prices(slots, now);
                            }
                        }
                    }
                    ready |= started.elapsed() >= std::time::Duration::from_secs(30);
                    c.save_meters();
                    if ready {
                        c.evaluate(now).await;
                    } else {
                        c.publish(now).await;
                    }
                }
                Some(input) = rx.recv() => {
                    let now = clock.now();
                    match input {
                        Input::Info { info, key } => {
                            c.meter_for(info.index, key);
                            c.strategy.on_info(info);
                        }
                        Input::Status(status) => {
                            if let Some((at, power, _)) = status.sample {
                                c.meter(status.index, at, power).await;
                            }
                            // A miner back online gets its target now.
                            if c.strategy.on_status(status) && ready {
                                c.evaluate(now).await;
                            }
                        }
                        Input::Hold { index, until } => c.strategy.on_hold(index, until),
                        Input::SafetyHold { index, held } => c.strategy.on_safety_hold(index, held),
                        Input::CommandFailed { index } => {
                            let actions = c.strategy.on_command_failed(index, now);
                            c.actions(actions, now).await;
                        }
                        Input::FetchFailed => {
                            if !ready {
                                ready = true;
                                c.evaluate(now).await;
                            }
                        }
                        Input::Prices(slots) => {
                            ready = true;
                            c.add_prices(slots, now);
                            c.evaluate(now).await;
                        }
                        Input::Switch(switch, on) => {
                            match switch {
                                Switch::Strategy => c.strategy.enabled = on,
                                Switch::Champion => c.strategy.champion_enabled = on,
                            }
                            if let Err(e) = c.store.set_setting(switch.request(), on) {
                                tracing::error!(error = %e, "cannot keep the switch in the store; it is back on after a restart");
                            }
                            c.emit(Output::Event(json!({"type": "switched", "switch": switch.request(), "enabled": on}))).await;
                            c.evaluate(now).await;
                        }
                    }
                }
            }
        }
        // Keep what was metered since the last minute.
        c.save_meters();
    });
    (handle, out_rx)
}

/// Fetches Octopus prices on the refresh schedule, with backoff on errors.
async fn fetch_loop(
    mut octopus: Octopus,
    mut known_until: Option<DateTime<Utc>>,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Input>,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let now = clock.now();
        let (from, _) = uk_day(now);
        let (_, to) = uk_day(now + Duration::days(1));
        match octopus.fetch(from, to, now).await {
            Ok(slots) => {
                if failures > 0 {
                    tracing::info!("Octopus prices are reachable again");
                }
                failures = 0;
                if let Some(end) = slots.iter().map(|s| s.end).max() {
                    known_until = known_until.max(Some(end));
                }
                tracing::debug!(slots = slots.len(), "Octopus prices fetched");
                if tx.send(Input::Prices(slots)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "cannot fetch Octopus prices; known prices are used meanwhile");
                if failures == 1 {
                    let _ = tx.send(Input::FetchFailed).await;
                    let _ = out
                        .send(Output::Event(json!({
                            "type": "price_fetch_failed",
                            "reason": e.to_string(),
                        })))
                        .await;
                }
            }
        }
        let jitter = rand::rng().random_range(-1.0..1.0);
        let wait = next_refresh(clock.now(), known_until, failures, jitter);
        let real = std::time::Duration::from_secs_f64(
            (wait.num_milliseconds().max(1000) as f64 / 1000.0) / clock.speed(),
        );
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(real) => {}
        }
    }
}
