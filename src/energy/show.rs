//! `miner2mqtt prices`: the slots of one UK day, from the configured source (fetched when it is
//! Octopus, else what the store keeps), with the current slot marked and each slot's band.

use super::bands::band_of;
use super::config::Source;
use super::octopus::Octopus;
use super::prices::{uk_day, PriceBook, PriceSlot};
use crate::config;
use chrono::{DateTime, Utc};
use chrono_tz::Europe::London;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Runs the command.
pub async fn run(
    path: Option<PathBuf>,
    at: Option<DateTime<Utc>>,
    format: Format,
) -> anyhow::Result<()> {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from("config.yaml"));
    let config = config::load(&path, explicit)?;
    let now = Utc::now();
    let at = at.unwrap_or(now);
    let (from, to) = uk_day(at);
    let energy = &config.energy;
    let slots: Vec<PriceSlot> = match &energy.source {
        None => anyhow::bail!(
            "{} has no energy: section, so there are no prices to show; add energy: with source: octopus and your region (see config.yaml)",
            path.display()
        ),
        Some(Source::Octopus {
            region,
            product,
            base_url,
        }) => {
            let mut octopus = Octopus::new(base_url, *region, product.clone());
            match octopus.fetch(from, to, now).await {
                Ok(slots) => slots,
                Err(e) => {
                    let kept = kept(&config, from, to);
                    if kept.is_empty() {
                        return Err(e.into());
                    }
                    eprintln!("miner2mqtt: {e}; showing the prices kept in the store");
                    kept
                }
            }
        }
        Some(Source::Schedule { price, periods }) => super::schedule::day_slots(at, *price, periods),
        Some(Source::Mqtt) => kept(&config, from, to),
    };
    let mut book = PriceBook::new();
    book.insert(slots);
    let day: Vec<&PriceSlot> = book.range(from, to).collect();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = day
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "start": s.start.to_rfc3339(),
                        "end": s.end.to_rfc3339(),
                        "p_per_kwh": s.p_per_kwh,
                        "band": (!energy.bands.is_empty()).then(|| energy.bands[band_of(&energy.bands, s.p_per_kwh)].name.clone()),
                        "current": s.contains(now),
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
        Format::Table => {
            let date = from.with_timezone(&London).format("%A %-d %B %Y");
            writeln!(out, "{date} (UK time), {} slots", day.len())?;
            if day.is_empty() {
                writeln!(out, "  no prices are known for this day yet (Agile publishes tomorrow's at about 16:00)")?;
            }
            for s in &day {
                let band = if energy.bands.is_empty() {
                    String::new()
                } else {
                    energy.bands[band_of(&energy.bands, s.p_per_kwh)]
                        .name
                        .clone()
                };
                let mark = if s.contains(now) { "  ← now" } else { "" };
                writeln!(
                    out,
                    "  {}–{}  {:>7.2} p/kWh  {band:<10}{mark}",
                    s.start.with_timezone(&London).format("%H:%M"),
                    s.end.with_timezone(&London).format("%H:%M"),
                    s.p_per_kwh
                )?;
            }
            if let Some(st) = book.day_stats(at) {
                writeln!(
                    out,
                    "  min {:.2}  max {:.2}  mean {:.2} p/kWh",
                    st.min, st.max, st.mean
                )?;
            }
        }
    }
    Ok(())
}

/// What the store keeps for the day (empty when the store is in use by a running daemon).
fn kept(config: &config::Config, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<PriceSlot> {
    match crate::store::Store::open(&config.store_path, 1 << 20) {
        Ok(store) => store
            .load_prices(from)
            .into_iter()
            .filter(|s| s.start < to)
            .collect(),
        Err(e) => {
            eprintln!("miner2mqtt: {e}");
            Vec::new()
        }
    }
}
