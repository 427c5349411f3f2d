//! An NMMiner lottery miner: broadcasts its status datagram (the shape of the captured v0.3.01
//! NMLotto datagram, sent compact as on the wire) to a UDP target every interval, and listens on
//! its configuration port for the controller's JSON datagram, applying the pool fields when the
//! datagram names its IP or `0.0.0.0`. Can be silenced to test expiry.

use rand::Rng;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct NmSpec {
    /// The device's own address: it broadcasts from it and reports it as `IP`.
    pub ip: IpAddr,
    pub board: String,
    /// The configuration port it listens on (12347 on real devices).
    pub config_port: u16,
    pub interval: Duration,
}

/// A running simulated NMMiner.
#[derive(Clone)]
pub struct SimNm {
    pub spec: NmSpec,
    silent: Arc<AtomicBool>,
    pool: Arc<Mutex<String>>,
}

impl SimNm {
    /// Stops (or resumes) broadcasting, as a device that lost power or Wi-Fi.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::Relaxed);
    }

    /// The pool in use, `host:port`.
    pub fn pool(&self) -> String {
        self.pool.lock().unwrap().clone()
    }
}

/// Starts broadcasting to `target` and listening for configuration.
pub async fn start(
    spec: NmSpec,
    target: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<SimNm> {
    let sender = UdpSocket::bind(SocketAddr::new(spec.ip, 0)).await?;
    let config = UdpSocket::bind(SocketAddr::new(spec.ip, spec.config_port)).await?;
    let sim = SimNm {
        spec: spec.clone(),
        silent: Arc::new(AtomicBool::new(false)),
        pool: Arc::new(Mutex::new("public-pool.io:21496".into())),
    };
    let (silent, pool, stop) = (sim.silent.clone(), sim.pool.clone(), cancel.clone());
    let booted = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(spec.interval);
        let mut accepted = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if silent.load(Ordering::Relaxed) {
                continue;
            }
            accepted += 1;
            let up = booted.elapsed().as_secs() + 5026;
            let khs = 113.13 * (1.0 + rand::rng().random_range(-0.02..0.02));
            let datagram = json!({
                "IP": spec.ip.to_string(), "BoardType": spec.board, "HashRate": format!("{khs:.2}K"),
                "Share": format!("0/{accepted}"), "NetDiff": "89.47T", "PoolDiff": "0.001", "LastDiff": "0.001",
                "BestDiff": "4.021M", "Valid": 0, "Progress": 0.167, "Temp": 48.5, "RSSI": -62, "FreeHeap": 8203.9,
                "Uptime": format!("{:02}d {:02}:{:02}:{:02}", up / 86400, up / 3600 % 24, up / 60 % 60, up % 60),
                "Version": "v0.3.01", "PoolInUse": pool.lock().unwrap().clone(),
            });
            let _ = sender
                .send_to(datagram.to_string().as_bytes(), target)
                .await;
        }
    });
    let (pool, own_ip) = (sim.pool.clone(), spec.ip.to_string());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => break,
                r = config.recv_from(&mut buf) => match r { Ok((n, _)) => n, Err(_) => continue },
            };
            let Ok(v) = serde_json::from_slice::<Value>(&buf[..n]) else {
                continue;
            };
            let ip = v["IP"].as_str().unwrap_or("");
            if ip != own_ip && ip != "0.0.0.0" {
                continue;
            }
            if let Some(url) = v["PrimaryPool"].as_str() {
                let host = url.split("://").last().unwrap_or(url).to_string();
                *pool.lock().unwrap() = host;
            }
        }
    });
    Ok(sim)
}
