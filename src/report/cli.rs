//! `miner2mqtt report` and `miner2mqtt export`. They read the history directly when no daemon
//! has it open; while one runs (it holds the store's lock) they ask it over MQTT instead, with
//! the bridge requests `report` and `export`, and print the same thing.

use super::{build, parse_since, Format, Query, Report};
use crate::config::Config;
use crate::hass::Topics;
use crate::store::{Sample, Store, StoreError};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// How long the daemon has to answer one request.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Samples asked for per export request.
const EXPORT_PAGE: u64 = 5000;

/// Arguments of `miner2mqtt report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// One miner, by its name in the config (all of them when omitted).
    #[arg(long, short)]
    pub miner: Option<String>,
    /// From when: a duration back from now (7d, 24h) or a time (2026-11-01, RFC 3339). All of
    /// history when omitted.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// Also draw hashrate against power with the Pareto front into this .svg or .png file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Configs with fewer samples are listed but not recommended.
    #[arg(long, default_value_t = 20)]
    pub min_samples: u64,
    /// The daemon's configuration (store path, broker, miners).
    #[arg(long, short, env = "MINER2MQTT_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Arguments of `miner2mqtt export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The miner, by its name in the config.
    #[arg(long, short)]
    pub miner: String,
    /// From when: a duration back from now (7d, 24h) or a time (2026-11-01, RFC 3339). Every
    /// raw sample kept when omitted.
    #[arg(long)]
    pub since: Option<String>,
    /// csv or json.
    #[arg(long, default_value = "csv")]
    pub format: Format,
    #[arg(long, short, env = "MINER2MQTT_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The history of the config, opened without waiting for a lock: `None` when a daemon holds it.
fn open(config: &Config) -> anyhow::Result<Option<Store>> {
    if !config.store_path.exists() {
        anyhow::bail!(
            "no history at {} (store.path): has miner2mqtt run with this config?",
            config.store_path.display()
        );
    }
    match Store::open_waiting(&config.store_path, config.store_cache_bytes, Duration::ZERO) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A miner's store number from its name, without giving out a new one.
fn number(store: &Store, name: &str) -> Result<Option<u32>, StoreError> {
    match store.hardware_id_of(name) {
        Some(hwid) => store.known_number(&hwid),
        None => Ok(None),
    }
}

fn check_name(config: &Config, name: &str) -> anyhow::Result<()> {
    if config.miners.iter().any(|m| m.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = config.miners.iter().map(|m| m.name.as_str()).collect();
    anyhow::bail!(
        "no miner is named {name:?} in the config; there are: {}",
        names.join(", ")
    )
}

/// The reports the arguments ask for, from the store or from the running daemon.
pub async fn reports(config: &Config, args: &ReportArgs) -> anyhow::Result<Vec<Report>> {
    let now = crate::store::now_ms();
    let since_ms = match &args.since {
        Some(s) => Some(parse_since(s, now).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if let Some(name) = &args.miner {
        check_name(config, name)?;
    }
    let names: Vec<String> = match &args.miner {
        Some(m) => vec![m.clone()],
        None => config.miners.iter().map(|m| m.name.clone()).collect(),
    };
    let query = Query {
        since_ms,
        now_ms: now,
        min_samples: args.min_samples,
    };
    match open(config)? {
        Some(store) => {
            let mut out = Vec::new();
            for name in &names {
                match number(&store, name)? {
                    Some(n) => out.push(build(&store, name, n, &query)?),
                    None if args.miner.is_some() => anyhow::bail!(
                        "{name} has no history yet: the daemon has not read it since it was configured"
                    ),
                    None => {}
                }
            }
            Ok(out)
        }
        None => {
            let mut bridge = Bridge::connect(config).await?;
            let mut request = json!({ "min_samples": args.min_samples });
            if let Some(m) = &args.miner {
                request["miner"] = m.clone().into();
            }
            if let Some(s) = since_ms {
                request["since"] = s.into();
            }
            let data = bridge.ask("report", request).await?;
            bridge.close().await;
            Ok(serde_json::from_value(data)?)
        }
    }
}

/// `miner2mqtt report`: the printed report (and the plot, when asked for).
pub async fn report(config: &Config, args: &ReportArgs) -> anyhow::Result<String> {
    let reports = reports(config, args).await?;
    if let Some(path) = &args.plot {
        super::plot::draw(&reports, path)?;
    }
    let mut out = match args.format {
        Format::Table => reports
            .iter()
            .map(super::table)
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Csv => super::csv(&reports),
        Format::Json => serde_json::to_string_pretty(&reports)?,
    };
    if reports.is_empty() && args.format == Format::Table {
        out = "no miner has history yet\n".into();
    }
    if let Some(path) = &args.plot {
        eprintln!("plot written to {}", path.display());
    }
    Ok(out)
}

/// `miner2mqtt export`: a miner's raw samples as CSV or JSON.
pub async fn export(config: &Config, args: &ExportArgs) -> anyhow::Result<String> {
    check_name(config, &args.miner)?;
    let now = crate::store::now_ms();
    let since = match &args.since {
        Some(s) => parse_since(s, now).map_err(anyhow::Error::msg)?,
        None => 0,
    };
    let samples: Vec<Sample> = match open(config)? {
        Some(store) => {
            let n = number(&store, &args.miner)?
                .ok_or_else(|| anyhow::anyhow!("{} has no history yet", args.miner))?;
            store.window(n, since, now + 1)?
        }
        None => {
            let mut bridge = Bridge::connect(config).await?;
            let mut out = Vec::new();
            let mut from = since;
            loop {
                let page = bridge
                    .ask(
                        "export",
                        json!({ "miner": args.miner, "since": from, "until": now + 1, "limit": EXPORT_PAGE }),
                    )
                    .await?;
                let samples: Vec<Sample> = serde_json::from_value(page["samples"].clone())?;
                out.extend(samples);
                match page["next"].as_u64() {
                    Some(next) if next > from => from = next,
                    _ => break,
                }
            }
            bridge.close().await;
            out
        }
    };
    Ok(match args.format {
        Format::Json => serde_json::to_string_pretty(&samples)?,
        _ => super::samples_csv(&samples),
    })
}

/// A request/response session with the running daemon.
struct Bridge {
    client: AsyncClient,
    eventloop: EventLoop,
    topics: Topics,
    where_: String,
}

impl Bridge {
    async fn connect(config: &Config) -> anyhow::Result<Bridge> {
        let options = crate::mqtt::cli_options(&config.mqtt, "report")?;
        let (client, eventloop) = AsyncClient::new(options, 16);
        let topics = Topics::new(&config.mqtt.base_topic, &config.mqtt.discovery_prefix);
        let mut bridge = Bridge {
            client,
            eventloop,
            topics,
            where_: format!(
                "{}:{} (base topic {:?})",
                config.mqtt.host, config.mqtt.port, config.mqtt.base_topic
            ),
        };
        bridge
            .wait_for(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))))
            .await?;
        Ok(bridge)
    }

    async fn wait_for(&mut self, mut done: impl FnMut(&Event) -> bool) -> anyhow::Result<Event> {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.eventloop.poll())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the store is in use by a running miner2mqtt, and it did not answer on {} within {}",
                        self.where_,
                        humantime::format_duration(ANSWER_WAIT)
                    )
                })?
                .map_err(|e| anyhow::anyhow!("the broker at {}: {e}", self.where_))?;
            if done(&event) {
                return Ok(event);
            }
        }
    }

    /// Sends a bridge request and returns its `data`, or the daemon's error.
    async fn ask(&mut self, action: &str, mut request: Value) -> anyhow::Result<Value> {
        let response = self.topics.bridge_response(action);
        self.client.subscribe(&response, QoS::AtLeastOnce).await?;
        self.wait_for(|e| matches!(e, Event::Incoming(Packet::SubAck(_))))
            .await?;
        let tx = format!("{:x}", rand::random::<u64>());
        request["transaction"] = tx.clone().into();
        self.client
            .publish(
                self.topics.bridge_request(action),
                QoS::AtLeastOnce,
                false,
                request.to_string(),
            )
            .await?;
        let mut answer = Value::Null;
        self.wait_for(|e| match e {
            Event::Incoming(Packet::Publish(p)) if p.topic == response => {
                match serde_json::from_slice::<Value>(&p.payload) {
                    Ok(v) if v["transaction"] == tx.as_str() => {
                        answer = v;
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        })
        .await?;
        self.client.unsubscribe(&response).await?;
        if answer["status"] == "ok" {
            Ok(answer["data"].take())
        } else {
            anyhow::bail!(
                "miner2mqtt refused the {action} request: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            )
        }
    }

    async fn close(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while self.eventloop.poll().await.is_ok() {}
        })
        .await;
    }
}
