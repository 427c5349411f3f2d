//! Simulators of the devices miner2mqtt talks to, over real sockets on loopback. They share no
//! code with the adapters they exercise (no parser, no payload struct), so a misunderstanding of a
//! protocol cannot hide in both.

pub mod axeos;
pub mod cgminer;
pub mod ha;
pub mod nmminer;
pub mod octopus;
pub mod plug;

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Starts one simulated ESP-Miner device per spec on loopback, on free ports (or consecutive
/// ports from `base_port`).
pub async fn start_axeos_fleet(
    specs: Vec<axeos::DeviceSpec>,
    base_port: Option<u16>,
    cancel: &CancellationToken,
) -> std::io::Result<Vec<axeos::SimDevice>> {
    let mut devices = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let port = base_port.map_or(0, |p| p.saturating_add(i as u16));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        devices.push(axeos::start(spec, addr, cancel.clone()).await?);
    }
    Ok(devices)
}

/// The one-line JSON a `simulate` run prints per device, so scripts can find them.
pub fn describe(device: &axeos::SimDevice) -> serde_json::Value {
    serde_json::json!({
        "kind": "axeos",
        "firmware": device.spec.firmware,
        "asic": device.spec.chip.model,
        "chips": device.spec.chips,
        "mac": device.spec.mac_string(),
        "host": device.addr.to_string(),
    })
}
