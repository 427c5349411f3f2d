//! A simulated Home Assistant REST API, for plugs that are HA switch entities: `GET
//! /api/states/<entity_id>` and `POST /api/services/<domain>/turn_on|turn_off` with a bearer
//! token, as HA answers them (401 without the token, 404 for an unknown entity). Each switch can
//! power a simulated ESP-Miner device.

use super::axeos::SimDevice;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Switch {
    on: bool,
    device: Option<SimDevice>,
}

struct Shared {
    token: String,
    switches: Mutex<HashMap<String, Switch>>,
    calls: Mutex<Vec<String>>,
}

/// The running simulator.
#[derive(Clone)]
pub struct SimHa {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SimHa {
    /// Adds a switch entity, on, powering `device` if given.
    pub fn add_switch(&self, entity_id: &str, device: Option<SimDevice>) {
        self.shared
            .switches
            .lock()
            .unwrap()
            .insert(entity_id.to_string(), Switch { on: true, device });
    }

    /// Flips a switch as a user in HA would (the device follows).
    pub fn set(&self, entity_id: &str, on: bool) {
        if let Some(s) = self.shared.switches.lock().unwrap().get_mut(entity_id) {
            s.on = on;
            if let Some(d) = &s.device {
                d.set_power(on);
            }
        }
    }

    pub fn is_on(&self, entity_id: &str) -> Option<bool> {
        self.shared
            .switches
            .lock()
            .unwrap()
            .get(entity_id)
            .map(|s| s.on)
    }

    /// The service calls received, as `domain/service entity_id`.
    pub fn calls(&self) -> Vec<String> {
        self.shared.calls.lock().unwrap().clone()
    }
}

fn authorised(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(shared.token.as_str())
}

fn unauthorised() -> Response {
    (StatusCode::UNAUTHORIZED, "401: Unauthorized").into_response()
}

async fn state(
    State(shared): State<Arc<Shared>>,
    Path(entity_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&shared, &headers) {
        return unauthorised();
    }
    match shared.switches.lock().unwrap().get(&entity_id) {
        Some(s) => Json(json!({
            "entity_id": entity_id,
            "state": if s.on { "on" } else { "off" },
            "attributes": { "friendly_name": entity_id },
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Entity not found." })),
        )
            .into_response(),
    }
}

async fn service(
    State(shared): State<Arc<Shared>>,
    Path((domain, service)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if !authorised(&shared, &headers) {
        return unauthorised();
    }
    let on = match service.as_str() {
        "turn_on" => true,
        "turn_off" => false,
        _ => return (StatusCode::BAD_REQUEST, "Service not found.").into_response(),
    };
    let entity_id = body
        .as_ref()
        .and_then(|b| b.get("entity_id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    shared
        .calls
        .lock()
        .unwrap()
        .push(format!("{domain}/{service} {entity_id}"));
    let mut switches = shared.switches.lock().unwrap();
    let Some(s) = switches.get_mut(&entity_id) else {
        // HA answers a service call for an unknown entity with an empty list of changes.
        return Json(json!([])).into_response();
    };
    s.on = on;
    if let Some(d) = &s.device {
        d.set_power(on);
    }
    Json(json!([{ "entity_id": entity_id, "state": if on { "on" } else { "off" } }]))
        .into_response()
}

/// Starts the simulator on `addr` accepting `token`.
pub async fn start(
    addr: SocketAddr,
    token: &str,
    cancel: CancellationToken,
) -> std::io::Result<SimHa> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        token: token.to_string(),
        switches: Mutex::new(HashMap::new()),
        calls: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/states/{entity_id}", get(state))
        .route("/api/services/{domain}/{service}", post(service))
        .with_state(shared.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
    });
    Ok(SimHa { addr, shared })
}
