//! The hub's bridge requests that read the history: `history` (a miner's recent samples),
//! `decisions` (what the strategy and the watchdog did), `report` (per-config figures and
//! recommendations, as `miner2mqtt report` prints them) and `export` (raw samples, a page at a
//! time). `report` and `export` run on a blocking thread and answer from there.

use super::{millis, Hub};
use crate::hass::{command, Topics};
use crate::mqtt::Mqtt;
use crate::report::{self, Query};
use crate::store::Store;
use serde_json::{json, Value};
use std::time::SystemTime;

/// Export pages hold at most this many samples.
const MAX_EXPORT_PAGE: u64 = 10_000;

/// Publishes a bridge response (`{data, status, error, transaction}`), logging a refusal.
pub(super) fn respond(
    mqtt: &Mqtt,
    topics: &Topics,
    action: &str,
    transaction: Option<Value>,
    result: Result<Value, String>,
) {
    if let Err(error) = &result {
        tracing::warn!(action = %command::quote(action.as_bytes()), %error, "bridge request refused");
    }
    let mut response = match result {
        Ok(data) => json!({ "data": data, "status": "ok" }),
        Err(error) => json!({ "data": {}, "status": "error", "error": error }),
    };
    if let Some(tx) = transaction {
        response["transaction"] = tx;
    }
    mqtt.publish(topics.bridge_response(action), response.to_string(), false);
}

type Job = Box<dyn FnOnce(&Store) -> Result<Value, String> + Send>;

/// A time in a request: ms since the epoch, or text `parse_since` reads (`7d`, a date).
fn time_field(req: &Value, key: &str, now: u64) -> Result<Option<u64>, String> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => report::parse_since(s, now).map(Some),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            format!(
                "\"{key}\" must be ms since 1970 or text such as \"7d\" or \"2026-11-01\", got {v}"
            )
        }),
    }
}

/// A whole number in a request: `default` when absent, else within `range` (`what` says the
/// range in words for the error).
fn whole_number(
    req: &Value,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<u64, String> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .ok_or_else(|| format!("\"{key}\" must be a whole number {what}, got {v}")),
    }
}

impl Hub {
    /// A miner's name and store number.
    fn history_number(&self, name: &str) -> Result<u32, String> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.config.name == name)
            .ok_or_else(|| format!("no miner is named {name:?}"))?;
        if let Some(n) = slot.store_number {
            return Ok(n);
        }
        let hwid = slot
            .hardware_id
            .as_deref()
            .ok_or_else(|| format!("{name:?} has not been identified yet"))?;
        self.store.miner_number(hwid).map_err(|e| e.to_string())
    }

    fn report_job(&self, req: &Value) -> Result<Job, String> {
        let now = millis(SystemTime::now());
        let since_ms = time_field(req, "since", now)?;
        let min_samples = whole_number(req, "min_samples", 20, 0..=u64::MAX, "(0 or more)")?;
        let miners: Vec<(String, u32)> = match req.get("miner") {
            None | Some(Value::Null) => self
                .slots
                .iter()
                .filter(|s| s.hardware_id.is_some())
                .filter_map(|s| {
                    let n = self.history_number(&s.config.name).ok()?;
                    Some((s.config.name.clone(), n))
                })
                .collect(),
            Some(Value::String(name)) => vec![(name.clone(), self.history_number(name)?)],
            Some(v) => return Err(format!("\"miner\" must be a miner's name, got {v}")),
        };
        let query = Query {
            since_ms,
            now_ms: now,
            min_samples,
        };
        Ok(Box::new(move |store: &Store| {
            let mut out = Vec::new();
            for (name, n) in &miners {
                out.push(report::build(store, name, *n, &query).map_err(|e| e.to_string())?);
            }
            serde_json::to_value(out).map_err(|e| e.to_string())
        }))
    }

    /// `{"miner", "since", "until", "limit"}` → `{"samples": [...], "next": ms | null}`.
    fn export_job(&self, req: &Value) -> Result<Job, String> {
        let now = millis(SystemTime::now());
        let name = req
            .get("miner")
            .and_then(Value::as_str)
            .ok_or("export needs \"miner\": the miner's name")?;
        let n = self.history_number(name)?;
        let since = time_field(req, "since", now)?.unwrap_or(0);
        let until = time_field(req, "until", now)?.unwrap_or(now + 1);
        let limit = whole_number(
            req,
            "limit",
            2000,
            1..=MAX_EXPORT_PAGE,
            &format!("from 1 to {MAX_EXPORT_PAGE}"),
        )?;
        Ok(Box::new(move |store: &Store| {
            let samples = store
                .window_page(n, since, until, limit as usize)
                .map_err(|e| e.to_string())?;
            let next = (samples.len() as u64 == limit)
                .then(|| samples.last().map(|s| s.at_ms + 1))
                .flatten();
            Ok(json!({ "samples": samples, "next": next }))
        }))
    }

    /// `report` and `export`: checked here, answered from a blocking thread.
    pub(super) fn history_request(&self, action: &str, req: &Value, transaction: Option<Value>) {
        let job = if action == "report" {
            self.report_job(req)
        } else {
            self.export_job(req)
        };
        match job {
            Err(e) => respond(&self.mqtt, &self.topics, action, transaction, Err(e)),
            Ok(job) => {
                let (mqtt, topics, store) =
                    (self.mqtt.clone(), self.topics.clone(), self.store.clone());
                let action = action.to_string();
                tokio::task::spawn_blocking(move || {
                    respond(&mqtt, &topics, &action, transaction, job(&store));
                });
            }
        }
    }

    /// `{"miner": "bitaxe-1", "minutes": 60}` → that miner's samples, newest last (at most 2000).
    pub(super) fn history(&self, req: &Value) -> Result<Value, String> {
        let name = req
            .get("miner")
            .and_then(Value::as_str)
            .ok_or("history needs \"miner\": the miner's name")?;
        const MAX_MINUTES: u64 = 60 * 24 * 31;
        let minutes = whole_number(
            req,
            "minutes",
            60,
            1..=MAX_MINUTES,
            &format!("from 1 to {MAX_MINUTES} (31 days)"),
        )?;
        let n = self.history_number(name)?;
        let now = millis(SystemTime::now());
        let mut samples = self
            .store
            .window(n, now.saturating_sub(minutes * 60_000), now + 1)
            .map_err(|e| e.to_string())?;
        let skip = samples.len().saturating_sub(2000);
        samples.drain(..skip);
        serde_json::to_value(samples).map_err(|e| e.to_string())
    }

    /// `{"hours": 24}` → the strategy's decisions (band and champion changes, missing prices)
    /// over that many hours of its clock, oldest first (at most 1000).
    pub(super) fn decisions(&self, req: &Value) -> Result<Value, String> {
        let hours = whole_number(req, "hours", 24, 1..=24 * 366, "from 1 to 8784 (a year)")?;
        let now = self.clock.now().timestamp_millis();
        let mut list = self
            .store
            .decisions(now - hours as i64 * 3_600_000, now + 1);
        let skip = list.len().saturating_sub(1000);
        list.drain(..skip);
        Ok(Value::Array(list))
    }
}
