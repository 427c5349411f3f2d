//! The daemon against a broker that wants a password, over TLS with a CA file.

mod common;

use common::*;
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
}

/// A broker with password authentication, a plain listener and a TLS listener.
struct SecureBroker {
    plain: u16,
    tls: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SecureBroker {
    fn start() -> SecureBroker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(
            d,
            &[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=miner2mqtt test CA",
            ],
        );
        run(
            d,
            &[
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(
            d,
            &[
                "openssl",
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        );
        run(
            d,
            &[
                "mosquitto_passwd",
                "-b",
                "-c",
                "passwords",
                "miner2mqtt",
                "1234",
            ],
        );
        // Mosquitto started as root reads its files as the `mosquitto` user: let it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in ["ca.crt", "server.crt", "server.key", "passwords"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let (plain, tls) = (free_port(), free_port());
        std::fs::write(
            d.join("mosquitto.conf"),
            format!(
                "per_listener_settings false\nallow_anonymous false\npassword_file {p}/passwords\npersistence false\n\
                 listener {plain} 127.0.0.1\n\
                 listener {tls} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/server.crt\nkeyfile {p}/server.key\n",
                p = d.display()
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", tls)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", plain)).is_err()
        {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        SecureBroker {
            plain,
            tls,
            dir,
            child,
        }
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_password_over_tls_with_a_ca_file_connects_and_a_wrong_one_does_not() {
    let broker = SecureBroker::start();
    let cancel = tokio_util::sync::CancellationToken::new();
    let devs = miner2mqtt::sim::start_axeos_fleet(
        vec![DeviceSpec::gamma(40, Firmware::V2_12)],
        None,
        &cancel,
    )
    .await
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let ha = Observer::connect_as(
        broker.plain,
        Some(("miner2mqtt", "1234")),
        &["miner2mqtt/#"],
    )
    .await;
    let ca = broker.dir.path().join("ca.crt");

    // The wrong password: the daemon keeps running and retrying, and never comes online.
    let wrong = Daemon::start(config_for(
        broker.tls,
        &[("gamma", &devs[0])],
        &store.path().join("a"),
        |r| {
            r.mqtt.tls = true;
            r.mqtt.ca_file = Some(ca.clone());
            r.mqtt.username = Some("miner2mqtt".into());
            r.mqtt.password = serde_json::from_value(serde_json::json!(4321)).ok();
        },
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !wrong.task.is_finished(),
        "a refused login must not stop the daemon"
    );
    assert!(!ha
        .messages()
        .iter()
        .any(|m| m.topic == "miner2mqtt/bridge/state" && m.text() == "online"));
    wrong.stop().await;

    // The right one, given as a number as YAML would parse it.
    let right = Daemon::start(config_for(
        broker.tls,
        &[("gamma", &devs[0])],
        &store.path().join("b"),
        |r| {
            r.mqtt.tls = true;
            r.mqtt.ca_file = Some(ca.clone());
            r.mqtt.username = Some("miner2mqtt".into());
            r.mqtt.password = serde_json::from_value(serde_json::json!(1234)).ok();
        },
    ));
    ha.wait_for("miner2mqtt/bridge/state", WAIT, |m| m.text() == "online")
        .await;
    ha.wait_for("miner2mqtt/gamma/state", WAIT, |m| {
        m.json()["hashrate"].is_number()
    })
    .await;
    right.stop().await;
    cancel.cancel();
}

/// Regression (6.14): the demo could only be pointed at a broker by address, so a user whose
/// broker wants a username and password could not see it in their own Home Assistant. It now
/// takes the `mqtt:` section of `--config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_uses_the_broker_and_credentials_from_the_config() {
    let broker = SecureBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {}\n  username: miner2mqtt\n  password: 1234\n",
            broker.plain
        ),
    )
    .unwrap();
    let ha = Observer::connect_as(
        broker.plain,
        Some(("miner2mqtt", "1234")),
        &["miner2mqtt/#"],
    )
    .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_miner2mqtt"))
        .args(["demo", "--no-table", "--poll-interval", "1s", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ha.wait_for("miner2mqtt/bitaxe-gamma/state", WAIT, |m| {
        m.json()["hashrate"].is_number()
    })
    .await;
    // SAFETY: signalling the process we started, by its PID.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}
