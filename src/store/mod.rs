//! The history: every sample of every miner, tagged with the clock config it was taken at, in
//! sled 0.34 (pinned). The store knows nothing of MQTT.
//!
//! Layout: a few trees, not one per miner. `miners` maps a hardware id to a 4-byte number given
//! out once; `samples` is keyed `[miner u32 BE][timestamp ms u64 BE]` so one miner's window is
//! one ordered range scan; values are compact postcard records. `names` remembers which hardware
//! id each configured name had, so discovery of removed miners can be cleared after a restart.
//! `prices` keeps price slots, `energy` each miner's energy meter, `settings` run-time switches,
//! `decisions` what the strategy and the watchdog decided, `tuning` each miner's sweep under way
//! (so a restart can put its settings back) and its last sweep's results. `rollups` and
//! `aggregates` are the older tiers of the samples ([`history`]). The raw samples live in a
//! second sled database beside the first (`<store.path>.samples`): pruned every day, they would
//! otherwise share a log with trees that only grow, and sled would not give their space back.

pub mod history;
pub mod writer;

use crate::energy::meter::MeterRecord;
use crate::energy::prices::{PriceSlot, SlotKind};
use crate::miner::{ClockConfig, Telemetry};
use crate::safety::ModeTarget;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why the store could not be opened or used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store {path} is locked by another process: is another miner2mqtt running with the same store.path? Stop it or give this one another path")]
    Locked { path: PathBuf },
    #[error("history store {path} is corrupt ({detail}): move it aside (the daemon will start a new, empty history) and keep the old copy if you want to recover it")]
    Corrupt { path: PathBuf, detail: String },
    #[error("history store {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

/// One stored sample. Numbers are f32: plenty for sensor readings, half the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub clock: Option<ClockConfig>,
    pub hashrate: Option<f32>,
    pub power: Option<f32>,
    pub asic_temp: Option<f32>,
    pub vr_temp: Option<f32>,
    pub fan_speed: Option<f32>,
    pub fan_rpm: Option<f32>,
    pub input_voltage: Option<f32>,
    pub current: Option<f32>,
    pub core_voltage_actual: Option<f32>,
    pub shares_accepted: Option<u64>,
    pub shares_rejected: Option<u64>,
}

impl Sample {
    pub fn from_telemetry(at_ms: u64, t: &Telemetry) -> Sample {
        let f = |v: Option<f64>| v.map(|x| x as f32);
        Sample {
            at_ms,
            clock: t.clock(),
            hashrate: f(t.hashrate),
            power: f(t.power),
            asic_temp: f(t.asic_temp),
            vr_temp: f(t.vr_temp),
            fan_speed: f(t.fan_speed),
            fan_rpm: f(t.fan_rpm),
            input_voltage: f(t.input_voltage),
            current: f(t.current),
            core_voltage_actual: f(t.core_voltage_actual),
            shares_accepted: t.shares_accepted,
            shares_rejected: t.shares_rejected,
        }
    }

    /// A sample of the headline readings only (the history benchmark, tests).
    pub fn basic(
        at_ms: u64,
        clock: Option<ClockConfig>,
        hashrate: f32,
        power: f32,
        asic_temp: f32,
    ) -> Sample {
        Sample {
            at_ms,
            clock,
            hashrate: Some(hashrate),
            power: Some(power),
            asic_temp: Some(asic_temp),
            vr_temp: None,
            fan_speed: None,
            fan_rpm: None,
            input_voltage: None,
            current: None,
            core_voltage_actual: None,
            shares_accepted: None,
            shares_rejected: None,
        }
    }

    /// J/TH of this sample.
    pub fn efficiency(&self) -> Option<f32> {
        match (self.power, self.hashrate) {
            (Some(p), Some(h)) if h > 0.0 => Some(p / (h / 1000.0)),
            _ => None,
        }
    }
}

/// The open history.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    miners: sled::Tree,
    /// In a database of their own (`raw`): sled reclaims the space of pruned samples only
    /// when they do not share its log with trees that keep growing (docs/BENCHMARKS.md).
    samples: sled::Tree,
    names: sled::Tree,
    /// The retained discovery topics this daemon has published: the only ones it may ever clear.
    owned: sled::Tree,
    /// Price slots by start (ms, big-endian): a restart or a supplier outage keeps them.
    prices: sled::Tree,
    /// Energy meters by hardware id.
    energy: sled::Tree,
    /// Small settings the user changes at run time (the strategy's switches).
    settings: sled::Tree,
    /// The strategy's and the watchdog's decisions (band and champion changes, thermal actions,
    /// alerts), by time.
    decisions: sled::Tree,
    /// `running/<hwid>`: the clock to restore for a sweep under way; `result/<hwid>`: the last
    /// sweep's summary; `hold/<hwid>`: the watchdog's safety hold.
    tuning: sled::Tree,
    /// 5-minute rollups, keyed `[miner u32][bucket start ms u64][MHz u16][mV u16]`.
    rollups: sled::Tree,
    /// Per-clock-config aggregates, keyed `[miner u32][MHz u16][mV u16]`, and the compactor's
    /// progress per miner.
    aggregates: sled::Tree,
    /// The raw samples' database, at `<path>.samples`.
    raw: sled::Db,
}

/// A stored price slot.
#[derive(Serialize, Deserialize)]
struct StoredSlot {
    end_ms: i64,
    p_per_kwh: f64,
    estimated: bool,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Opens one sled database, retrying a held lock until `deadline`.
///
/// New databases are compressed (zstd): half the disk for about twice the CPU per write
/// (docs/BENCHMARKS.md). sled refuses to open a database with another setting than it was made
/// with, so an existing one keeps its own.
fn open_db(
    path: &Path,
    cache_bytes: u64,
    deadline: std::time::Instant,
) -> Result<sled::Db, StoreError> {
    // (The file ends in a binary checksum: read it as bytes.)
    let compressed = match std::fs::read(path.join("conf")) {
        Ok(conf) => conf
            .split(|b| *b == b'\n')
            .any(|l| l.trim_ascii() == b"use_compression: true"),
        Err(_) => true,
    };
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes.max(1 << 20))
            .mode(sled::Mode::LowSpace)
            .use_compression(compressed)
            .open()
            .map_err(|e| Store::open_error(path, e));
        match opened {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn key(miner: u32, at_ms: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&miner.to_be_bytes());
    k[4..].copy_from_slice(&at_ms.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the store at `path` with an explicit page cache size.
    /// A lock held by this same process (an in-process restart) is released by sled's flusher
    /// thread shortly after the old handle drops, so a held lock is retried for a few seconds.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Self::open_waiting(path, cache_bytes, std::time::Duration::from_secs(3))
    }

    /// Opens the store, retrying a held lock for up to `wait`.
    pub fn open_waiting(
        path: &Path,
        cache_bytes: u64,
        wait: std::time::Duration,
    ) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + wait;
        let db = open_db(path, cache_bytes / 2, deadline)?;
        let raw_path = Self::raw_path(path);
        let raw = open_db(&raw_path, cache_bytes / 2, deadline)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| Self::open_error(path, e));
        let store = Store {
            path: path.to_path_buf(),
            miners: tree("miners")?,
            samples: raw
                .open_tree("samples")
                .map_err(|e| Self::open_error(&raw_path, e))?,
            names: tree("names")?,
            owned: tree("owned_discovery")?,
            prices: tree("prices")?,
            energy: tree("energy")?,
            settings: tree("settings")?,
            decisions: tree("decisions")?,
            tuning: tree("tuning")?,
            rollups: tree("rollups")?,
            aggregates: tree("aggregates")?,
            db,
            raw,
        };
        store.move_old_samples()?;
        Ok(store)
    }

    /// Where the raw samples are kept: beside the store, `<store.path>.samples`.
    pub fn raw_path(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".samples");
        path.with_file_name(name)
    }

    /// Stores from before the raw samples had a database of their own kept them in the main
    /// one: they move over once.
    fn move_old_samples(&self) -> Result<(), StoreError> {
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"samples")
        {
            return Ok(());
        }
        let old = self.db.open_tree("samples").map_err(|e| self.io(e))?;
        let mut moved = 0usize;
        loop {
            let chunk: Vec<(sled::IVec, sled::IVec)> =
                old.iter().take(10_000).filter_map(Result::ok).collect();
            if chunk.is_empty() {
                break;
            }
            let (mut add, mut remove) = (sled::Batch::default(), sled::Batch::default());
            for (k, v) in &chunk {
                add.insert(k.clone(), v.clone());
                remove.remove(k.clone());
            }
            self.samples.apply_batch(add).map_err(|e| self.io(e))?;
            old.apply_batch(remove).map_err(|e| self.io(e))?;
            moved += chunk.len();
        }
        self.raw.flush().map_err(|e| self.io(e))?;
        self.db.drop_tree("samples").map_err(|e| self.io(e))?;
        if moved > 0 {
            tracing::info!(moved, path = %Self::raw_path(&self.path).display(), "raw samples moved to their own database");
        }
        Ok(())
    }

    fn open_error(path: &Path, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.raw_os_error() == Some(11)
                    || io.to_string().contains("could not acquire lock") =>
            {
                StoreError::Locked { path: path.into() }
            }
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                path: path.into(),
                detail: format!("bad data at {at:?}"),
            },
            other => {
                let detail = other.to_string();
                if detail.contains("corrupt") || detail.contains("Corrupt") {
                    StoreError::Corrupt {
                        path: path.into(),
                        detail,
                    }
                } else {
                    StoreError::Io {
                        path: path.into(),
                        detail,
                    }
                }
            }
        }
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// The 4-byte number of a hardware id, given out on first sight.
    pub fn miner_number(&self, hardware_id: &str) -> Result<u32, StoreError> {
        if let Some(n) = self.known_number(hardware_id)? {
            return Ok(n);
        }
        let n = self.db.generate_id().map_err(|e| self.io(e))? as u32;
        self.miners
            .insert(hardware_id, &n.to_be_bytes())
            .map_err(|e| self.io(e))?;
        Ok(n)
    }

    /// The number a hardware id was given, without giving out a new one.
    pub fn known_number(&self, hardware_id: &str) -> Result<Option<u32>, StoreError> {
        let v = self.miners.get(hardware_id).map_err(|e| self.io(e))?;
        Ok(v.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes))
    }

    /// Appends a sample for a miner.
    pub fn record(&self, miner: u32, sample: &Sample) -> Result<(), StoreError> {
        let value = postcard::to_stdvec(sample).map_err(|e| self.io(e))?;
        self.samples
            .insert(key(miner, sample.at_ms), value)
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Records many samples at once (one sled batch), each of its store miner number.
    pub fn record_all(&self, samples: &[(u32, Sample)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (miner, sample) in samples {
            let value = postcard::to_stdvec(sample).map_err(|e| self.io(e))?;
            batch.insert(&key(*miner, sample.at_ms)[..], value);
        }
        self.samples.apply_batch(batch).map_err(|e| self.io(e))
    }

    /// The samples of one miner with `from_ms <= at < to_ms`, oldest first. A record that does
    /// not decode is skipped and counted, not fatal.
    pub fn window(&self, miner: u32, from_ms: u64, to_ms: u64) -> Result<Vec<Sample>, StoreError> {
        let mut out = Vec::new();
        let mut skipped = 0usize;
        for item in self.samples.range(key(miner, from_ms)..key(miner, to_ms)) {
            let (_, v) = item.map_err(|e| self.io(e))?;
            match postcard::from_bytes::<Sample>(&v) {
                Ok(s) => out.push(s),
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(miner, skipped, path = %self.path.display(), "undecodable history records skipped");
        }
        Ok(out)
    }

    /// At most `limit` samples of one miner from `from_ms` (before `to_ms`), oldest first.
    pub fn window_page(
        &self,
        miner: u32,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        let mut out = Vec::new();
        for item in self.samples.range(key(miner, from_ms)..key(miner, to_ms)) {
            let (_, v) = item.map_err(|e| self.io(e))?;
            if let Ok(s) = postcard::from_bytes::<Sample>(&v) {
                out.push(s);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Remembers that `name` is the miner with `hardware_id`.
    pub fn remember_name(&self, name: &str, hardware_id: &str) -> Result<(), StoreError> {
        if self.names.get(name).map_err(|e| self.io(e))?.as_deref() != Some(hardware_id.as_bytes())
        {
            self.names
                .insert(name, hardware_id.as_bytes())
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// The hardware id a name had when last seen.
    pub fn hardware_id_of(&self, name: &str) -> Option<String> {
        self.names
            .get(name)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Forgets a name (a miner removed from the config).
    pub fn forget_name(&self, name: &str) -> Result<(), StoreError> {
        self.names.remove(name).map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Every name the store remembers, with its hardware id.
    pub fn names(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    /// Records that we published retained discovery on `topic`.
    pub fn own_discovery(&self, topic: &str) -> Result<(), StoreError> {
        self.owned.insert(topic, &[]).map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Records that `topic` has been cleared.
    pub fn disown_discovery(&self, topic: &str) -> Result<(), StoreError> {
        self.owned.remove(topic).map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Every retained discovery topic we published and have not cleared.
    pub fn owned_discovery(&self) -> Vec<String> {
        self.owned
            .iter()
            .keys()
            .filter_map(Result::ok)
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect()
    }

    /// Keeps price slots (newer replace older for the same start).
    pub fn save_prices(&self, slots: &[PriceSlot]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for s in slots {
            let value = StoredSlot {
                end_ms: s.end.timestamp_millis(),
                p_per_kwh: s.p_per_kwh,
                estimated: s.kind == SlotKind::Estimated,
            };
            let bytes = postcard::to_stdvec(&value).map_err(|e| self.io(e))?;
            batch.insert(&s.start.timestamp_millis().to_be_bytes(), bytes);
        }
        self.prices.apply_batch(batch).map_err(|e| self.io(e))
    }

    /// The kept slots starting at or after `from`, in order.
    pub fn load_prices(&self, from: DateTime<Utc>) -> Vec<PriceSlot> {
        let from = from.timestamp_millis().to_be_bytes();
        self.prices
            .range(from..)
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let start = i64::from_be_bytes(<[u8; 8]>::try_from(k.as_ref()).ok()?);
                let s: StoredSlot = postcard::from_bytes(&v).ok()?;
                Some(PriceSlot {
                    start: DateTime::from_timestamp_millis(start)?,
                    end: DateTime::from_timestamp_millis(s.end_ms)?,
                    p_per_kwh: s.p_per_kwh,
                    kind: if s.estimated {
                        SlotKind::Estimated
                    } else {
                        SlotKind::Actual
                    },
                })
            })
            .collect()
    }

    /// Keeps a miner's energy meter.
    pub fn save_meter(&self, hardware_id: &str, record: &MeterRecord) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(record).map_err(|e| self.io(e))?;
        self.energy
            .insert(hardware_id, bytes)
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// A miner's kept energy meter.
    pub fn load_meter(&self, hardware_id: &str) -> Option<MeterRecord> {
        let v = self.energy.get(hardware_id).ok()??;
        postcard::from_bytes(&v).ok()
    }

    /// A boolean setting kept across restarts.
    pub fn setting(&self, name: &str) -> Option<bool> {
        let v = self.settings.get(name).ok()??;
        v.first().map(|b| *b != 0)
    }

    pub fn set_setting(&self, name: &str, value: bool) -> Result<(), StoreError> {
        self.settings
            .insert(name, &[u8::from(value)])
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Keeps a decision of the strategy (an event as published), at `at_ms`.
    pub fn record_decision(&self, at_ms: i64, event: &serde_json::Value) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(|e| self.io(e))?;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(at_ms.max(0) as u64).to_be_bytes());
        key[8..].copy_from_slice(&id.to_be_bytes());
        let mut event = event.clone();
        event["at"] = at_ms.into();
        let bytes = serde_json::to_vec(&event).map_err(|e| self.io(e))?;
        self.decisions.insert(key, bytes).map_err(|e| self.io(e))?;
        Ok(())
    }

    /// The decisions kept from `from_ms` up to `to_ms`, oldest first.
    pub fn decisions(&self, from_ms: i64, to_ms: i64) -> Vec<serde_json::Value> {
        let (from, to) = (from_ms.max(0) as u64, to_ms.max(0) as u64);
        self.decisions
            .range(from.to_be_bytes()..to.to_be_bytes())
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// A sweep starts on the miner: the settings to put back whatever happens, written to disk at
    /// once (a kill must not lose it).
    pub fn begin_sweep(&self, hardware_id: &str, previous: ModeTarget) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&previous).map_err(|e| self.io(e))?;
        self.tuning
            .insert(format!("running/{hardware_id}"), bytes)
            .map_err(|e| self.io(e))?;
        self.tuning.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// The settings to put back on a miner whose sweep did not end (the daemon stopped under
    /// it). A record from before work-mode sweeps holds a bare clock.
    pub fn sweep_under_way(&self, hardware_id: &str) -> Option<ModeTarget> {
        let v = self.tuning.get(format!("running/{hardware_id}")).ok()??;
        serde_json::from_slice(&v)
            .ok()
            .or_else(|| serde_json::from_slice(&v).ok().map(ModeTarget::Clock))
    }

    /// The miner is back on known-good settings.
    pub fn end_sweep(&self, hardware_id: &str) -> Result<(), StoreError> {
        self.tuning
            .remove(format!("running/{hardware_id}"))
            .map_err(|e| self.io(e))?;
        self.tuning.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// The watchdog's safety hold on a miner (its reason), or `None` when it ends: a restart
    /// does not release a hot miner.
    pub fn keep_safety_hold(
        &self,
        hardware_id: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = format!("hold/{hardware_id}");
        match reason {
            Some(r) => self.tuning.insert(key, r.as_bytes()).map(|_| ()),
            None => self.tuning.remove(key).map(|_| ()),
        }
        .map_err(|e| self.io(e))
    }

    /// The safety hold a miner was in when the daemon stopped.
    pub fn safety_hold(&self, hardware_id: &str) -> Option<String> {
        let v = self.tuning.get(format!("hold/{hardware_id}")).ok()??;
        String::from_utf8(v.to_vec()).ok()
    }

    /// Keeps a sweep's summary as the miner's latest.
    pub fn save_sweep_result(
        &self,
        hardware_id: &str,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(summary).map_err(|e| self.io(e))?;
        self.tuning
            .insert(format!("result/{hardware_id}"), bytes)
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// The miner's latest sweep summary.
    pub fn sweep_result(&self, hardware_id: &str) -> Option<serde_json::Value> {
        let v = self.tuning.get(format!("result/{hardware_id}")).ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// Writes everything to disk; called on shutdown.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let raw = self.raw.flush().map_err(|e| self.io(e))?;
        Ok(raw + self.db.flush().map_err(|e| self.io(e))?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(h: f64) -> Telemetry {
        Telemetry {
            hashrate: Some(h),
            power: Some(20.0),
            frequency: Some(525.0),
            core_voltage: Some(1150.0),
            ..Default::default()
        }
    }

    #[test]
    fn window_returns_one_miners_samples_in_order_with_their_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h"), 1 << 20).unwrap();
        let a = store.miner_number("aa").unwrap();
        let b = store.miner_number("bb").unwrap();
        assert_ne!(a, b);
        assert_eq!(store.miner_number("aa").unwrap(), a);
        for i in 0..10u64 {
            store
                .record(
                    a,
                    &Sample::from_telemetry(1000 + i, &telemetry(1000.0 + i as f64)),
                )
                .unwrap();
            store
                .record(b, &Sample::from_telemetry(1000 + i, &telemetry(1.0)))
                .unwrap();
        }
        let w = store.window(a, 1002, 1005).unwrap();
        assert_eq!(
            w.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            [1002, 1003, 1004]
        );
        assert_eq!(w[0].hashrate, Some(1002.0));
        assert_eq!(
            w[0].clock,
            Some(ClockConfig {
                frequency_mhz: 525,
                core_voltage_mv: 1150
            })
        );
        assert!((w[0].efficiency().unwrap() - 20.0 / 1.002).abs() < 0.01);
    }

    #[test]
    fn history_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        {
            let store = Store::open(&path, 1 << 20).unwrap();
            let a = store.miner_number("aa").unwrap();
            store
                .record(a, &Sample::from_telemetry(5, &telemetry(1.0)))
                .unwrap();
            store.remember_name("bitaxe-1", "aa").unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&path, 1 << 20).unwrap();
        let a = store.miner_number("aa").unwrap();
        assert_eq!(store.window(a, 0, u64::MAX).unwrap().len(), 1);
        assert_eq!(store.hardware_id_of("bitaxe-1").as_deref(), Some("aa"));
    }

    /// Stores made before compression was turned on keep opening (sled refuses a store opened
    /// with another compression setting than it was made with), and their samples move to the
    /// raw database.
    #[test]
    fn an_uncompressed_store_from_before_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        {
            let old = sled::Config::new().path(&path).open().unwrap();
            old.open_tree("miners")
                .unwrap()
                .insert("aa", &7u32.to_be_bytes())
                .unwrap();
            // Its samples were in the main database then.
            let sample = Sample::from_telemetry(5, &telemetry(1.0));
            old.open_tree("samples")
                .unwrap()
                .insert(key(7, 5), postcard::to_stdvec(&sample).unwrap())
                .unwrap();
            old.flush().unwrap();
        }
        let store = Store::open(&path, 1 << 20).unwrap();
        assert_eq!(store.miner_number("aa").unwrap(), 7);
        assert_eq!(
            store.window(7, 0, 10).unwrap().len(),
            1,
            "moved to the raw database"
        );
        drop(store);
        let store = Store::open(&path, 1 << 20).unwrap();
        assert_eq!(store.window(7, 0, 10).unwrap().len(), 1, "and moved once");
        let fresh = dir.path().join("new");
        drop(Store::open(&fresh, 1 << 20).unwrap());
        let conf = std::fs::read(fresh.join("conf")).unwrap();
        let conf = String::from_utf8_lossy(&conf);
        assert!(conf.contains("use_compression: true"), "{conf}");
    }

    #[test]
    fn an_unusable_path_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = Store::open(&file, 1 << 20)
            .err()
            .expect("a file is not a store");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    }
}
