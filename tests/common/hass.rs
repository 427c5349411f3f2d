//! A real Home Assistant Core for the tests (facts in ../shared/HA-TESTING.md): installed from
//! PyPI into a cached venv, started on loopback with the MQTT integration pointed at the test's
//! Mosquitto, onboarded for a token, and read through its REST and websocket APIs and its log.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The newest release that installs on Python 3.13.0 (2025.5 on needs 3.13.2).
pub const HA_VERSION: &str = "2025.4.4";
/// What a plain install lacks and HA would otherwise fetch at start.
const EXTRA: [&str; 2] = ["paho-mqtt==2.1.0", "home-assistant-frontend==20250411.0"];

/// The only lines a bare setup like this one logs at WARNING or above at every start.
const HARMLESS: [&str; 3] = [
    "Skipping pip installation of required modules",
    "zlib_ng and isal are not available",
    "Error loading libturbojpeg",
];

/// A Python 3.13 interpreter, or why there is none.
pub fn python313() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("MINER2MQTT_HA_PYTHON") {
        return Ok(p.into());
    }
    let works = |p: &Path| {
        Command::new(p).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("3.13")
        })
    };
    if works(Path::new("python3.13")) {
        return Ok("python3.13".into());
    }
    // pyenv keeps versions that are not the global one out of PATH.
    let home = std::env::var("HOME").unwrap_or_default();
    let pyenv = std::env::var("PYENV_ROOT").unwrap_or_else(|_| format!("{home}/.pyenv"));
    if let Ok(dir) = std::fs::read_dir(Path::new(&pyenv).join("versions")) {
        let mut found: Vec<PathBuf> = dir
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("3.13"))
            .map(|e| e.path().join("bin/python3.13"))
            .filter(|p| works(p))
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Ok(p);
        }
    }
    Err("no Python 3.13 (python3.13 on PATH, pyenv, or MINER2MQTT_HA_PYTHON)".into())
}

/// The cached venv with Home Assistant, made once per machine under a lock.
pub fn venv(python: &Path) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let cache = std::env::var("MINER2MQTT_HA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&home).join(".cache/miner2mqtt"));
    std::fs::create_dir_all(&cache).unwrap();
    let dir = cache.join(format!("ha-{HA_VERSION}"));
    let ready = dir.join(".miner2mqtt-ready");
    let lock = std::fs::File::create(cache.join(format!("ha-{HA_VERSION}.lock"))).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if !ready.exists() {
        eprintln!(
            "installing Home Assistant {HA_VERSION} into {} (once per machine, a few minutes)",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new(python)
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3.13 -m venv");
        assert!(status.success(), "creating the venv failed");
        let out = Command::new(dir.join("bin/pip"))
            .args(["install", "-q", &format!("homeassistant=={HA_VERSION}")])
            .args(EXTRA)
            .output()
            .expect("pip");
        assert!(
            out.status.success(),
            "pip install homeassistant=={HA_VERSION} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ready, HA_VERSION).unwrap();
    }
    drop(lock);
    dir
}

/// A running Home Assistant with an owner account.
pub struct HomeAssistant {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub token: String,
    venv: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

impl HomeAssistant {
    /// Writes a configuration for `mqtt_port`, starts HA and waits until it is running with
    /// MQTT loaded. The caller waits for the birth message on the broker.
    pub async fn start(venv: PathBuf, mqtt_port: u16) -> HomeAssistant {
        let port = crate::common::free_port();
        let dir = tempfile::tempdir().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("configuration.yaml"),
            format!(
                // INFO shows more of what HA does with our discovery; the entity registry's one INFO
                // line per new entity (over 200 for the demo) would trip HA's own "logging too
                // frequently" warning, which a user at the default level never sees. The
                // input_boolean stands for a smart plug that only Home Assistant knows.
                "homeassistant:\n  name: miner2mqtt test\n  latitude: 51.5\n  longitude: -0.12\n  elevation: 10\n  unit_system: metric\n  time_zone: Europe/London\n  currency: GBP\n  country: GB\n  internal_url: {base}\nhttp:\n  server_host: 127.0.0.1\n  server_port: {port}\napi:\nwebsocket_api:\nconfig:\ninput_boolean:\n  bitaxe_plug:\n    name: Bitaxe plug\nlogger:\n  default: info\n  logs:\n    homeassistant.helpers.entity_registry: warning\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(".storage")).unwrap();
        let entry = json!({
            "version": 1, "minor_version": 5, "key": "core.config_entries",
            "data": { "entries": [{
                "entry_id": "01JTESTMQTT0000000000000000", "version": 1, "minor_version": 2,
                "domain": "mqtt", "title": "MQTT",
                "data": { "broker": "127.0.0.1", "port": mqtt_port },
                "options": { "discovery": true, "discovery_prefix": "homeassistant" },
                "pref_disable_new_entities": false, "pref_disable_polling": false,
                "source": "user", "unique_id": null, "disabled_by": null,
                "created_at": "2025-01-01T00:00:00+00:00", "modified_at": "2025-01-01T00:00:00+00:00",
                "discovery_keys": {}, "subentries": [],
            }]},
        });
        std::fs::write(
            dir.path().join(".storage/core.config_entries"),
            entry.to_string(),
        )
        .unwrap();
        let mut ha = HomeAssistant {
            port,
            dir,
            token: String::new(),
            venv,
            child: None,
            http: reqwest::Client::new(),
        };
        ha.spawn();
        ha.wait_for_api().await;
        ha.onboard().await;
        ha.wait_until_running().await;
        ha
    }

    fn spawn(&mut self) {
        let child = Command::new(self.venv.join("bin/hass"))
            .arg("-c")
            .arg(self.dir.path())
            .arg("--skip-pip")
            .arg("--log-file")
            .arg(self.log_path())
            .arg("--log-no-color")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting hass");
        self.child = Some(child);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("home-assistant.test.log")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_for_api(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self.http.get(self.url("/api/onboarding")).send().await {
                if r.status().is_success() || r.status().as_u16() == 401 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Home Assistant's API did not answer within 120 s; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates the owner account (first start) and takes an access token.
    async fn onboard(&mut self) {
        let client_id = self.url("/");
        let r: Value = self
            .http
            .post(self.url("/api/onboarding/users"))
            .json(
                &json!({ "client_id": client_id, "name": "Test", "username": "test",
                "password": "miner2mqtt-test-pass", "language": "en" }),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let code = r["auth_code"].as_str().expect("auth_code").to_string();
        let t: Value = self
            .http
            .post(self.url("/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=authorization_code&code={}&client_id={}",
                form_encode(&code),
                form_encode(&client_id)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Long-lived, so it survives the restart the test makes.
        let short = t["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        self.token = short;
        let long = self
            .ws(&[json!({ "type": "auth/long_lived_access_token", "client_name": "tests", "lifespan": 1 })])
            .await;
        self.token = long[0].as_str().expect("long-lived token").to_string();
    }

    async fn wait_until_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let running = self.get("/api/config").await["state"] == "RUNNING";
            let mqtt = self
                .get("/api/config/config_entries/entry?domain=mqtt")
                .await;
            let loaded = mqtt
                .as_array()
                .is_some_and(|l| l.iter().any(|e| e["state"] == "loaded"));
            if running && loaded {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Home Assistant not running with MQTT loaded within 120 s (config entries: {mqtt}); log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        match self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Calls a service over REST; returns the HTTP status and body.
    pub async fn call(&self, domain: &str, service: &str, data: Value) -> (u16, String) {
        let r = self
            .http
            .post(self.url(&format!("/api/services/{domain}/{service}")))
            .bearer_auth(&self.token)
            .json(&data)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Every entity's state, by entity id.
    pub async fn states(&self) -> std::collections::BTreeMap<String, Value> {
        self.get("/api/states")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| Some((s["entity_id"].as_str()?.to_string(), s)))
            .collect()
    }

    pub async fn state(&self, entity_id: &str) -> Value {
        self.get(&format!("/api/states/{entity_id}")).await
    }

    /// Sends websocket commands in order; returns each one's `result`, failing on an error.
    pub async fn ws(&self, commands: &[Value]) -> Vec<Value> {
        self.ws_replies(commands)
            .await
            .into_iter()
            .zip(commands)
            .map(|(v, c)| {
                assert_eq!(v["success"], true, "websocket {c} failed: {v}");
                v["result"].clone()
            })
            .collect()
    }

    /// Sends websocket commands in order; returns each one's whole reply (`success`, `result`
    /// or `error`): how the frontend calls services.
    pub async fn ws_replies(&self, commands: &[Value]) -> Vec<Value> {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/api/websocket", self.port))
                .await
                .expect("websocket");
        let _required = socket.next().await;
        socket
            .send(Message::text(
                json!({ "type": "auth", "access_token": self.token }).to_string(),
            ))
            .await
            .unwrap();
        let ok = socket.next().await.unwrap().unwrap();
        assert!(ok.to_text().unwrap().contains("auth_ok"), "{ok}");
        let mut results = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            let mut c = c.clone();
            c["id"] = (i as u64 + 1).into();
            socket.send(Message::text(c.to_string())).await.unwrap();
            loop {
                let m = socket.next().await.unwrap().unwrap();
                let Ok(v) = serde_json::from_str::<Value>(m.to_text().unwrap_or("")) else {
                    continue;
                };
                if v["id"] == c["id"] && v["type"] == "result" {
                    results.push(v);
                    break;
                }
            }
        }
        let _ = socket.close(None).await;
        results
    }

    /// The entity registry (unique id → entry) and the device registry (id → entry) of MQTT.
    pub async fn registries(&self) -> (Vec<Value>, Vec<Value>) {
        let r = self
            .ws(&[
                json!({ "type": "config/entity_registry/list" }),
                json!({ "type": "config/device_registry/list" }),
            ])
            .await;
        let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
        (list(&r[0]), list(&r[1]))
    }

    /// Stops HA (SIGTERM, then SIGKILL after a grace period) and starts it again on the same
    /// configuration: a new birth message follows.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_for_api().await;
        self.wait_until_running().await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the process we started, by its PID.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Lines HA logged at WARNING or above, except the harmless start-up ones; each with the
    /// lines that follow it (a traceback) up to the next log record.
    pub fn problems(&self) -> Vec<String> {
        // HA rolls its log over at every start: after a restart the earlier run is in `.1`.
        let earlier = self.log_path().with_extension("log.1");
        let log = [earlier, self.log_path()]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let mut out: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in log.lines() {
            let is_record = line.len() > 24
                && line.as_bytes()[4] == b'-'
                && line.as_bytes()[0].is_ascii_digit();
            if is_record {
                if let Some(c) = current.take() {
                    out.push(c);
                }
                let bad = [" WARNING ", " ERROR ", " CRITICAL "]
                    .iter()
                    .any(|l| line.contains(l));
                if bad && !HARMLESS.iter().any(|h| line.contains(h)) {
                    current = Some(line.to_string());
                }
            } else if let Some(c) = current.as_mut() {
                c.push('\n');
                c.push_str(line);
            }
        }
        out.extend(current);
        out
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        self.stop();
        // MINER2MQTT_HA_LOG=FILE keeps HA's log for reading after the test.
        if let Ok(keep) = std::env::var("MINER2MQTT_HA_LOG") {
            let _ = std::fs::copy(self.log_path().with_extension("log.1"), format!("{keep}.1"));
            let _ = std::fs::copy(self.log_path(), keep);
        }
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
