//! Octopus Agile over the public Octopus REST API (no key needed): the product code from the
//! products list, then the tariff's `standard-unit-rates`, page by page.
//!
//! Facts: rates come newest first, `value_inc_vat` in p/kWh (negative allowed), `valid_from` /
//! `valid_to` in UTC; the tariff code is `E-1R-<product>-<region>`; tomorrow's prices appear at
//! about 16:00 UK time; the API sits behind a CDN that can answer with an HTML 403 page.

use super::prices::{check_slot, uk_time_on_day, PriceSlot, SlotKind};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

/// The Agile regions (GSP groups), by letter.
pub const REGIONS: &str = "ABCDEFGHJKLMNP";

/// Why prices could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("{url}: cannot reach the Octopus API: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: the Octopus API answered HTTP {status}{detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: unexpected answer from the Octopus API: {reason}")]
    Malformed { url: String, reason: String },
    #[error("no Agile import product is open now in the Octopus products list; set energy.octopus.product (for example AGILE-24-10-01)")]
    NoProduct,
}

#[derive(Deserialize)]
struct RatesPage {
    #[serde(default)]
    next: Option<String>,
    results: Vec<Rate>,
}

#[derive(Deserialize)]
struct Rate {
    value_inc_vat: f64,
    valid_from: DateTime<Utc>,
    valid_to: Option<DateTime<Utc>>,
}

/// One page of `standard-unit-rates`: its slots in time order and the next page's URL.
pub fn parse_rates_page(body: &[u8]) -> Result<(Vec<PriceSlot>, Option<String>), String> {
    let page: RatesPage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut slots = Vec::with_capacity(page.results.len());
    for r in page.results {
        let end = r.valid_to.ok_or_else(|| {
            format!(
                "the rate from {} has no valid_to: not a half-hourly tariff",
                r.valid_from
            )
        })?;
        let slot = PriceSlot {
            start: r.valid_from,
            end,
            p_per_kwh: r.value_inc_vat,
            kind: SlotKind::Actual,
        };
        check_slot(&slot)?;
        slots.push(slot);
    }
    // The API answers newest first.
    slots.sort_by_key(|s| s.start);
    Ok((slots, page.next.filter(|n| !n.is_empty())))
}

#[derive(Deserialize)]
struct ProductsPage {
    #[serde(default)]
    next: Option<String>,
    results: Vec<Product>,
}

#[derive(Deserialize)]
struct Product {
    code: String,
    direction: String,
    #[serde(default)]
    brand: Option<String>,
    available_from: Option<DateTime<Utc>>,
    available_to: Option<DateTime<Utc>>,
    #[serde(default)]
    is_business: bool,
    #[serde(default)]
    is_prepay: bool,
}

/// A product code and when it opened.
pub type OpenProduct = (String, DateTime<Utc>);

/// The Agile import products of the Octopus brand open at `now`, from one products page, and
/// the next page's URL.
pub fn agile_products(
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(Vec<OpenProduct>, Option<String>), String> {
    let page: ProductsPage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let open = page
        .results
        .into_iter()
        .filter(|p| {
            p.code.starts_with("AGILE")
                && p.direction == "IMPORT"
                && p.brand.as_deref() == Some("OCTOPUS_ENERGY")
                && !p.is_business
                && !p.is_prepay
                && p.available_from.is_some_and(|f| f <= now)
                && p.available_to.is_none_or(|t| t > now)
        })
        .filter_map(|p| p.available_from.map(|f| (p.code, f)))
        .collect();
    Ok((open, page.next.filter(|n| !n.is_empty())))
}

/// Picks the product: the newest `available_from`.
pub fn newest_product(products: &[OpenProduct]) -> Option<String> {
    products
        .iter()
        .max_by_key(|(code, from)| (*from, code.clone()))
        .map(|(c, _)| c.clone())
}

/// The Octopus Agile price source.
pub struct Octopus {
    http: reqwest::Client,
    base_url: String,
    region: char,
    /// Configured, or discovered on first use.
    product: Option<String>,
}

/// Pages followed at most per fetch: a day is 46–50 slots and a page holds 100.
const MAX_PAGES: usize = 20;

impl Octopus {
    pub fn new(base_url: &str, region: char, product: Option<String>) -> Octopus {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .user_agent(concat!("miner2mqtt/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Octopus {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            region,
            product,
        }
    }

    pub fn tariff(&self, product: &str) -> String {
        format!("E-1R-{product}-{}", self.region)
    }

    async fn get(&self, url: &str) -> Result<bytes::Bytes, PriceError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| PriceError::Unreachable {
                url: url.to_string(),
                reason: error_chain(&e),
            })?;
        let status = resp.status();
        let html = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("html"));
        let body = resp.bytes().await.map_err(|e| PriceError::Unreachable {
            url: url.to_string(),
            reason: error_chain(&e),
        })?;
        if !status.is_success() {
            let detail = if html || body.trim_ascii_start().starts_with(b"<") {
                " with an HTML page (a CDN or proxy block, usually temporary)".to_string()
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                format!(": {}", text.trim())
            };
            return Err(PriceError::Http {
                url: url.to_string(),
                status: status.as_u16(),
                detail,
            });
        }
        Ok(body)
    }

    /// The configured product, or the newest open Agile import product from the products list.
    pub async fn discover_product(&mut self, now: DateTime<Utc>) -> Result<String, PriceError> {
        if let Some(p) = &self.product {
            return Ok(p.clone());
        }
        let mut url = format!(
            "{}/v1/products/?brand=OCTOPUS_ENERGY&is_business=false",
            self.base_url
        );
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let body = self.get(&url).await?;
            let (products, next) =
                agile_products(&body, now).map_err(|reason| PriceError::Malformed {
                    url: url.clone(),
                    reason,
                })?;
            found.extend(products);
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        let product = newest_product(&found).ok_or(PriceError::NoProduct)?;
        tracing::info!(%product, "Agile product found in the Octopus products list");
        self.product = Some(product.clone());
        Ok(product)
    }

    /// The slots in `[from, to)`.
    pub async fn fetch(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<PriceSlot>, PriceError> {
        let product = self.discover_product(now).await?;
        let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%MZ").to_string();
        let mut url = format!(
            "{}/v1/products/{product}/electricity-tariffs/{}/standard-unit-rates/?period_from={}&period_to={}",
            self.base_url,
            self.tariff(&product),
            fmt(from),
            fmt(to)
        );
        let mut slots = Vec::new();
        for _ in 0..MAX_PAGES {
            let body = self.get(&url).await?;
            let (page, next) = parse_rates_page(&body).map_err(|reason| PriceError::Malformed {
                url: url.clone(),
                reason,
            })?;
            slots.extend(page);
            match next {
                Some(n) => url = n,
                None => {
                    url.clear();
                    break;
                }
            }
        }
        if !url.is_empty() {
            // The API answers newest first: what is left unread is the oldest.
            tracing::warn!(pages = MAX_PAGES, %url, "Octopus rates run to more pages than miner2mqtt reads; the oldest slots of the window are missing");
        }
        slots.sort_by_key(|s| s.start);
        slots.dedup_by_key(|s| s.start);
        Ok(slots)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// When to ask again. After `failures` failed attempts in a row: 1, 2, 4 … minutes, at most 30.
/// Otherwise every 10 minutes from 16:00 UK time until tomorrow's prices up to 23:00 UK are
/// known, and hourly (jittered by `jitter`, ±5 min) the rest of the time.
pub fn next_refresh(
    now: DateTime<Utc>,
    known_until: Option<DateTime<Utc>>,
    failures: u32,
    jitter: f64,
) -> Duration {
    if failures > 0 {
        let minutes = 1i64 << failures.saturating_sub(1).min(5);
        return Duration::minutes(minutes.min(30));
    }
    let publication = uk_time_on_day(now, 16);
    let wanted = uk_time_on_day(now + Duration::days(1), 23);
    if now >= publication && known_until.is_none_or(|k| k < wanted) {
        return Duration::minutes(10);
    }
    let jitter = (jitter.clamp(-1.0, 1.0) * 300.0) as i64;
    Duration::seconds(3600 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../shared/fixtures/octopus/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_captured_rates_page_parses_in_time_order_with_its_next_page() {
        // chattersley/sunsynk-api-client capture, region H: 100 slots newest first, count 11518.
        let (slots, next) = parse_rates_page(&fixture(
            "agile_24_10_01_H_2025-05-11_to_13_page1_with_next_standard_unit_rates.json",
        ))
        .unwrap();
        assert_eq!(slots.len(), 100);
        assert_eq!(slots[0].start, t("2025-05-11T20:00:00Z"));
        assert_eq!(slots[99].start, t("2025-05-13T21:30:00Z"));
        assert_eq!(slots[99].p_per_kwh, 17.283);
        assert!(slots.windows(2).all(|w| w[0].end == w[1].start));
        assert!(next.unwrap().ends_with("?page=2"));
    }

    #[test]
    fn negative_prices_are_kept_and_a_zero_price_is_a_price() {
        // MattJeanes/TeslaMateAgile plunge capture (older shape, no payment_method).
        let (slots, next) = parse_rates_page(&fixture(
            "agile_negative_plunge_2020-05-23_standard_unit_rates.json",
        ))
        .unwrap();
        assert_eq!(slots.len(), 11);
        assert!(next.is_none());
        let min = slots.iter().map(|s| s.p_per_kwh).fold(f64::MAX, f64::min);
        assert_eq!(min, -8.82);
        assert!(slots.iter().any(|s| s.p_per_kwh == 0.0));
    }

    #[test]
    fn whole_real_days_have_46_48_and_50_slots() {
        for (day, count) in [
            ("2023-03-26", 46),
            ("2023-07-02", 48),
            ("2023-10-29", 50),
            ("2023-11-29", 48),
            ("2024-01-08", 48),
            ("2024-01-09", 48),
        ] {
            let (slots, _) = parse_rates_page(&fixture(&format!(
                "days/agile_AGILE-FLEX-22-11-25_J_{day}.json"
            )))
            .unwrap();
            assert_eq!(slots.len(), count, "{day}");
            let mut book = super::super::prices::PriceBook::new();
            book.insert(slots.iter().copied());
            let noon = uk_time_on_day(slots[0].start + Duration::hours(1), 12);
            assert_eq!(book.day_stats(noon).unwrap().slots, count, "{day}");
            assert_eq!(
                super::super::prices::uk_day(noon).0,
                slots[0].start,
                "{day}"
            );
        }
    }

    #[test]
    fn the_newest_open_octopus_agile_import_product_is_chosen() {
        // ryanw-mobile/OctoMeter products list (May 2024): AGILE-24-04-03 (Octopus),
        // AGILE-BB-24-04-03 (Bulb brand) and the AGILE-OUTGOING export products.
        let body = fixture("products_list_2024-05.json");
        let (open, next) = agile_products(&body, t("2024-05-28T12:00:00Z")).unwrap();
        assert!(next.is_none());
        assert_eq!(newest_product(&open).as_deref(), Some("AGILE-24-04-03"));
        // Before it opened there was no Octopus-brand Agile import product in this list.
        let (open, _) = agile_products(&body, t("2024-04-01T12:00:00Z")).unwrap();
        assert!(newest_product(&open).is_none());
    }

    #[test]
    fn an_error_page_or_a_broken_rate_is_refused_with_the_reason() {
        assert!(parse_rates_page(b"<html>403 Forbidden</html>").is_err());
        let no_end = br#"{"count":1,"next":null,"results":[{"value_inc_vat":1.0,"valid_from":"2024-01-01T00:00:00Z","valid_to":null}]}"#;
        assert!(parse_rates_page(no_end)
            .unwrap_err()
            .contains("no valid_to"));
        let backwards = br#"{"results":[{"value_inc_vat":1.0,"valid_from":"2024-01-01T00:30:00Z","valid_to":"2024-01-01T00:00:00Z"}]}"#;
        assert!(parse_rates_page(backwards).unwrap_err().contains("ends at"));
    }

    #[test]
    fn refresh_is_hourly_then_every_ten_minutes_after_four_until_tomorrow_is_known() {
        // 2024-01-08 is winter: UK time is UTC.
        let morning = t("2024-01-08T09:00:00Z");
        assert_eq!(
            next_refresh(morning, Some(t("2024-01-08T23:00:00Z")), 0, 0.0),
            Duration::hours(1)
        );
        let after_four = t("2024-01-08T16:05:00Z");
        assert_eq!(
            next_refresh(after_four, Some(t("2024-01-09T00:00:00Z")), 0, 0.0),
            Duration::minutes(10)
        );
        assert_eq!(
            next_refresh(after_four, Some(t("2024-01-09T23:00:00Z")), 0, 0.0),
            Duration::hours(1)
        );
        assert_eq!(next_refresh(morning, None, 1, 0.0), Duration::minutes(1));
        assert_eq!(next_refresh(morning, None, 3, 0.0), Duration::minutes(4));
        assert_eq!(next_refresh(morning, None, 40, 0.0), Duration::minutes(30));
    }
}
