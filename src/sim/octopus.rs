//! A simulated Octopus Energy API: the products list (paginated, with the Bulb-brand and export
//! Agile products a real list holds), and `standard-unit-rates` for any Agile tariff, newest
//! first, paginated with absolute `next` links, `period_from`/`period_to` honoured. Prices follow
//! a realistic Agile day (cheap nights, negative slots in the early afternoon on windy days, the
//! 16:00–19:00 peak); tomorrow's appear only after 16:00 UK time by the simulator's clock, as the
//! real ones do. Faults on demand: 5xx, or a CDN's HTML 403 page.
//!
//! Shares no code with the adapter (`energy::octopus`): its JSON is written here by hand.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Europe::London;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The product the simulator serves as the current Octopus Agile import product.
pub const PRODUCT: &str = "AGILE-24-10-01";

/// A fault to answer every request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// 503 with a JSON body.
    Unavailable,
    /// 403 with an HTML page, as a CDN in front of the API sends.
    ForbiddenHtml,
}

/// How prices are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Curve {
    /// The realistic Agile day.
    Agile,
    /// Every slot at this price (p/kWh inc VAT).
    Flat(f64),
}

struct Shared {
    fault: Mutex<Fault>,
    curve: Mutex<Curve>,
    /// The simulator's "now", for late publication: offset from the wall clock and speed.
    clock: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    addr: SocketAddr,
    page_size: usize,
    requests: AtomicU64,
}

/// A running simulator.
#[derive(Clone)]
pub struct OctopusSim {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl OctopusSim {
    /// `http://127.0.0.1:port`, for `energy.octopus.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }
    /// Requests answered so far (faults included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

/// Starts the simulator on `addr` (port 0 for a free one). `clock` is its idea of now;
/// `page_size` is the results per page (the real API's is 100).
pub async fn start(
    addr: SocketAddr,
    curve: Curve,
    page_size: usize,
    clock: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    cancel: CancellationToken,
) -> std::io::Result<OctopusSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        fault: Mutex::new(Fault::None),
        curve: Mutex::new(curve),
        clock,
        addr,
        page_size: page_size.max(1),
        requests: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/products/", get(products))
        .route(
            "/v1/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/",
            get(rates),
        )
        .with_state(shared.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    });
    Ok(OctopusSim { addr, shared })
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.replace("%3A", ":").replace("%2B", "+"))
    })
}

fn fault_response(shared: &Shared) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    match *shared.fault.lock().unwrap() {
        Fault::None => None,
        Fault::Unavailable => Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "application/json")],
                r#"{"detail":"Service temporarily unavailable"}"#,
            )
                .into_response(),
        ),
        Fault::ForbiddenHtml => Some(
            (
                StatusCode::FORBIDDEN,
                [("content-type", "text/html; charset=UTF-8")],
                "<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body><h1>403 Forbidden</h1><p>Request blocked.</p></body></html>",
            )
                .into_response(),
        ),
    }
}

/// One page of `items` with absolute `next`/`previous` links, as the API pages.
fn page(shared: &Shared, uri: &Uri, items: Vec<Value>) -> Value {
    let n: usize = query(uri, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size = shared.page_size;
    let count = items.len();
    let link = |p: usize| {
        let mut q: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
            .map(str::to_string)
            .collect();
        q.push(format!("page={p}"));
        format!("http://{}{}?{}", shared.addr, uri.path(), q.join("&"))
    };
    let results: Vec<Value> = items.into_iter().skip((n - 1) * size).take(size).collect();
    json!({
        "count": count,
        "next": (n * size < count).then(|| link(n + 1)),
        "previous": (n > 1).then(|| link(n - 1)),
        "results": results,
    })
}

async fn products(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    if let Some(r) = fault_response(&shared) {
        return r;
    }
    let product = |code: &str, direction: &str, brand: &str, from: &str, to: Option<&str>| {
        json!({
            "code": code,
            "direction": direction,
            "full_name": format!("Agile Octopus ({code})"),
            "display_name": "Agile Octopus",
            "description": "Half-hourly prices tied to wholesale prices, updated daily.",
            "is_variable": true, "is_green": true, "is_tracker": false, "is_prepay": false,
            "is_business": false, "is_restricted": false, "term": 12,
            "available_from": from,
            "available_to": to,
            "links": [{"href": format!("https://api.octopus.energy/v1/products/{code}/"), "method": "GET", "rel": "self"}],
            "brand": brand,
        })
    };
    let items = vec![
        product(
            "VAR-22-11-01",
            "IMPORT",
            "OCTOPUS_ENERGY",
            "2023-03-28T00:00:00+01:00",
            None,
        ),
        product(
            "AGILE-FLEX-22-11-25",
            "IMPORT",
            "OCTOPUS_ENERGY",
            "2022-11-25T00:00:00Z",
            Some("2024-10-01T00:00:00+01:00"),
        ),
        product(
            "AGILE-BB-24-10-01",
            "IMPORT",
            "BULB",
            "2024-10-01T00:00:00+01:00",
            None,
        ),
        product(
            "AGILE-OUTGOING-19-05-13",
            "EXPORT",
            "OCTOPUS_ENERGY",
            "2018-01-01T00:00:00Z",
            None,
        ),
        product(
            PRODUCT,
            "IMPORT",
            "OCTOPUS_ENERGY",
            "2024-10-01T00:00:00+01:00",
            None,
        ),
    ];
    axum::Json(page(&shared, &uri, items)).into_response()
}

/// A deterministic number in [0, 1) from a slot's start.
fn noise(t: DateTime<Utc>) -> f64 {
    let mut x = t.timestamp() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 10_000) as f64 / 10_000.0
}

/// The realistic Agile price of the slot starting at `t`, p/kWh inc VAT.
pub fn agile_price(t: DateTime<Utc>) -> f64 {
    let local = t.with_timezone(&London);
    let h = local.hour() as f64 + local.minute() as f64 / 60.0;
    let base = match h {
        h if h < 4.0 => 14.0 - h * 1.5,
        h if h < 7.0 => 9.0 + (h - 4.0) * 3.0,
        h if h < 12.0 => 21.0 - (h - 7.0) * 0.8,
        h if h < 16.0 => 16.0,
        h if h < 19.0 => 34.0 + (h - 16.0) * 2.0,
        h if h < 21.0 => 26.0,
        _ => 20.0 - (h - 21.0) * 2.0,
    };
    // One day in three is windy: negative slots in the early afternoon.
    let windy = local.ordinal() % 3 == 0;
    let price = if windy && (12.5..15.0).contains(&h) {
        -1.0 - 4.0 * noise(t)
    } else {
        base + (noise(t) - 0.5) * 3.0
    };
    (price * 100.0).round() / 100.0
}

async fn rates(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path((product, tariff)): axum::extract::Path<(String, String)>,
    uri: Uri,
) -> Response {
    if let Some(r) = fault_response(&shared) {
        return r;
    }
    let region_ok = tariff
        .strip_prefix(&format!("E-1R-{product}-"))
        .is_some_and(|r| r.len() == 1 && "ABCDEFGHJKLMNP".contains(r));
    if !product.starts_with("AGILE") || !region_ok {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "No EnergyTariff matches the given query."})),
        )
            .into_response();
    }
    let parse = |k: &str| {
        query(&uri, k).and_then(|v| {
            DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(&v, "%Y-%m-%dT%H:%MZ")
                        .map(|t| t.and_utc())
                })
                .ok()
        })
    };
    let now = (shared.clock)();
    // Published: up to 23:00 UK today, or tomorrow after 16:00 UK.
    let local = now.with_timezone(&London);
    let day = if local.hour() >= 16 {
        local.date_naive().succ_opt().unwrap_or(local.date_naive())
    } else {
        local.date_naive()
    };
    let published_until = London
        .with_ymd_and_hms(day.year(), day.month(), day.day(), 23, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    let to = parse("period_to")
        .unwrap_or(published_until)
        .min(published_until);
    let from = parse("period_from").unwrap_or(to - Duration::days(2));
    let curve = *shared.curve.lock().unwrap();
    let mut items = Vec::new();
    let mut t = Utc
        .timestamp_opt(from.timestamp() - from.timestamp().rem_euclid(1800), 0)
        .single()
        .unwrap_or(from);
    while t < to {
        let inc = match curve {
            Curve::Agile => agile_price(t),
            Curve::Flat(p) => p,
        };
        items.push(json!({
            "value_exc_vat": ((inc / 1.05) * 10_000.0).round() / 10_000.0,
            "value_inc_vat": inc,
            "valid_from": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "valid_to": (t + Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "payment_method": null,
        }));
        t += Duration::minutes(30);
    }
    items.reverse(); // newest first, as the API answers
    axum::Json(page(&shared, &uri, items)).into_response()
}
