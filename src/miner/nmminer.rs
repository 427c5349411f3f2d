//! NMMiner (and NMAxe) lottery miners: telemetry arrives as JSON datagrams broadcast on UDP
//! 12345; pool configuration goes out as a JSON datagram to the device on UDP 12347. There is
//! nothing to poll and no power or clock control.
//!
//! Field formats seen in the field: hashrate `"113.13K"` (H/s with an SI suffix) or
//! `"1.0154MH/s"`, shares `"1/138"` or `"0/0/0.0%"`, uptime `"00d 01:23:46"`, `Temp` 0 meaning no
//! sensor, difficulties like `"4.021M"`.

use super::{Capabilities, ExtraSensor, Identity, PoolChoice, Reading, Telemetry};
use serde_json::Value;
use std::collections::BTreeMap;

/// A parsed status datagram.
#[derive(Debug, Clone)]
pub struct Status {
    /// The address the device reports for itself (`IP`).
    pub ip: String,
    pub board: String,
    pub reading: Reading,
}

pub use super::si_number;

/// `"1/138"` and `"0/0/0.0%"` → (accepted, rejected). The two-number form is rejected/accepted;
/// when a rate is given, the order that agrees with it wins.
pub fn shares(text: &str) -> Option<(u64, u64)> {
    let parts: Vec<&str> = text.trim().split('/').map(str::trim).collect();
    let a: u64 = parts.first()?.parse().ok()?;
    let b: u64 = parts.get(1)?.parse().ok()?;
    if let Some(pct) = parts
        .get(2)
        .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
    {
        if a + b > 0 {
            let as_rejected_first = a as f64 / (a + b) as f64 * 100.0;
            let as_accepted_first = b as f64 / (a + b) as f64 * 100.0;
            if (as_accepted_first - pct).abs() < (as_rejected_first - pct).abs() {
                return Some((a, b));
            }
        }
    }
    Some((b, a))
}

/// `"00d 01:23:46"` → seconds.
pub fn uptime(text: &str) -> Option<u64> {
    let (days, clock) = match text.trim().split_once(' ') {
        Some((d, c)) => (d.trim_end_matches('d').parse::<u64>().ok()?, c),
        None => (0, text.trim()),
    };
    let hms: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    Some(days * 86400 + h * 3600 + m * 60 + s)
}

/// Parses one status datagram. `pools` are the pools offered for selection.
pub fn parse_status(datagram: &[u8], pools: &[String]) -> Result<Status, String> {
    let v: Value = serde_json::from_slice(datagram).map_err(|e| format!("not JSON: {e}"))?;
    let ip = v["IP"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("no IP field")?
        .to_string();
    let board = v["BoardType"].as_str().unwrap_or("NMMiner").to_string();
    let text = |k: &str| v[k].as_str().map(str::to_string);
    let num = |k: &str| match &v[k] {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => si_number(s),
        _ => None,
    };
    let hs = text("HashRate").as_deref().and_then(si_number);
    let (accepted, rejected) = text("Share").as_deref().and_then(shares).unzip();
    let mut extra = BTreeMap::new();
    extra.insert(
        "hashrate_khs".to_string(),
        hs.map(|h| (h / 1e3 * 100.0).round() / 100.0),
    );
    let telemetry = Telemetry {
        hashrate: hs.map(|h| h / 1e9),
        asic_temp: num("Temp").filter(|t| *t > 0.0),
        shares_accepted: accepted,
        shares_rejected: rejected,
        best_difficulty: text("BestDiff").as_deref().and_then(si_number),
        uptime: text("Uptime").as_deref().and_then(uptime),
        rssi: num("RSSI"),
        pool: text("PoolInUse").filter(|p| !p.is_empty()),
        extra,
        ..Telemetry::default()
    };
    let identity = Identity {
        hardware_id: Some(object_id(&ip, &board)),
        mac: None,
        manufacturer: "NMMiner".into(),
        model: board.clone(),
        hostname: None,
        firmware: text("Version"),
        asic_model: None,
        asic_count: 0,
    };
    let capabilities = Capabilities {
        pools: pools
            .iter()
            .map(|p| PoolChoice { label: p.clone() })
            .collect(),
        absent_sensors: vec![
            "hashrate",
            "expected_hashrate",
            "power",
            "efficiency",
            "vr_temp",
            "fan_speed",
            "fan_rpm",
            "input_voltage",
            "current",
            "error_percent",
        ],
        extra_sensors: vec![ExtraSensor {
            key: "hashrate_khs".into(),
            name: "Hashrate".into(),
            unit: Some("kH/s"),
            device_class: None,
        }],
        ..Capabilities::default()
    };
    Ok(Status {
        ip,
        board,
        reading: Reading {
            identity,
            telemetry,
            capabilities,
        },
    })
}

/// The hardware id of a device: its IP and board, e.g. `nm_192_168_1_101_nmlotto`.
pub fn object_id(ip: &str, board: &str) -> String {
    format!("nm_{}_{}", super::slug(ip), super::slug(board))
}

/// The configuration datagram that points a device at a pool. Only pool fields are sent:
/// Wi-Fi settings are never touched.
pub fn pool_datagram(ip: &str, url: &str, user: &str, password: &str) -> Vec<u8> {
    serde_json::json!({
        "IP": ip,
        "PrimaryPool": url,
        "PrimaryPassword": password,
        "PrimaryAddress": user,
    })
    .to_string()
    .into_bytes()
}

/// Binds the broadcast listener; the error names the port and the likely cause.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::UdpSocket, String> {
    tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another program already listens there (NMController, or a second miner2mqtt?)"
            }
            std::io::ErrorKind::PermissionDenied => "ports below 1024 need root",
            std::io::ErrorKind::AddrNotAvailable => "that address is not one of this machine's",
            _ => "check nmminer.listen",
        };
        format!("cannot listen for NMMiner broadcasts on UDP {addr}: {e}; {cause}. NMMiner devices stay unavailable, everything else runs on")
    })
}

/// Forwards every datagram to the daemon until `stop`. A full queue drops datagrams: the next
/// broadcast carries the same information.
pub async fn listen(
    socket: tokio::net::UdpSocket,
    to_daemon: tokio::sync::mpsc::Sender<Vec<u8>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, _)) => { let _ = to_daemon.try_send(buf[..n].to_vec()); }
                Err(e) => {
                    tracing::warn!(error = %e, "NMMiner listener error");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_formats_seen_in_the_field() {
        assert_eq!(si_number("113.13K"), Some(113130.0));
        assert!((si_number("1.0154MH/s").unwrap() - 1015400.0).abs() < 1e-6);
        assert_eq!(si_number("89.47T"), Some(89.47e12));
        assert_eq!(si_number("0.001"), Some(0.001));
        assert_eq!(si_number("fast"), None);
        assert_eq!(shares("1/138"), Some((138, 1)));
        assert_eq!(shares("0/0/0.0%"), Some((0, 0)));
        assert_eq!(shares("95/5/5.0%"), Some((95, 5)));
        assert_eq!(shares("5/95/5.0%"), Some((95, 5)));
        assert_eq!(shares("x/1"), None);
        assert_eq!(uptime("00d 01:23:46"), Some(5026));
        assert_eq!(uptime("2d 00:00:01"), Some(172801));
        assert_eq!(uptime("01:00"), None);
    }

    #[tokio::test]
    async fn a_taken_port_is_named_with_its_likely_cause() {
        let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = first.local_addr().unwrap();
        let e = bind(addr).await.unwrap_err();
        assert!(
            e.contains(&addr.to_string()) && e.contains("already listens"),
            "{e}"
        );
    }

    #[test]
    fn temp_zero_is_no_sensor_and_garbage_is_an_error() {
        let s = parse_status(
            br#"{"IP":"10.0.0.2","BoardType":"CYD","HashRate":"1.0154MH/s","Temp":0}"#,
            &[],
        )
        .unwrap();
        assert_eq!(s.reading.telemetry.asic_temp, None);
        assert!((s.reading.telemetry.hashrate.unwrap() - 0.0010154).abs() < 1e-12);
        assert!(parse_status(b"{\"IP\":", &[]).is_err());
        assert!(parse_status(br#"{"BoardType":"x"}"#, &[]).is_err());
    }
}
