//! The daemon end to end: a real Mosquitto, simulated ESP-Miner devices over real HTTP, and
//! assertions on what Home Assistant would see.

mod common;

use common::*;
use miner2mqtt::sim::axeos::{self, DeviceSpec, Faults, Firmware, BM1368, BM1370};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_miners_appear_in_home_assistant_with_the_right_entities() {
    let rig = Rig::start(vec![
        DeviceSpec::new(1, Firmware::V2_10, BM1368, 1),
        DeviceSpec::new(2, Firmware::V2_12, BM1370, 1),
        DeviceSpec::new(3, Firmware::Nerdqaxe, BM1370, 4),
    ])
    .await;
    let devs = &rig.devs;
    let ha = &rig.ha;
    let config = rig.config(&["supra", "gamma", "nerd"], |_| {});
    let daemon = Daemon::start(config);

    ha.wait_for("miner2mqtt/bridge/state", WAIT, |m| {
        m.text() == "online" && m.retain || m.text() == "online"
    })
    .await;
    let bridge = ha
        .wait_for(
            "homeassistant/device/miner2mqtt/bridge/config",
            WAIT,
            |_| true,
        )
        .await
        .json();
    assert_eq!(bridge["dev"]["ids"][0], "miner2mqtt_bridge_miner2mqtt");
    for key in ["connection_state", "version", "restart", "log_level"] {
        assert!(bridge["cmps"].get(key).is_some(), "bridge lacks {key}");
    }

    for (name, dev) in [("supra", &devs[0]), ("gamma", &devs[1]), ("nerd", &devs[2])] {
        let msg = ha.wait_for(&disco(&hwid(dev)), WAIT, |_| true).await;
        let d = msg.json();
        assert_eq!(d["state_topic"], format!("miner2mqtt/{name}/state"));
        assert_eq!(d["availability_mode"], "all");
        assert_eq!(d["availability"][0]["topic"], "miner2mqtt/bridge/state");
        assert_eq!(
            d["availability"][1]["topic"],
            format!("miner2mqtt/{name}/availability")
        );
        assert_eq!(d["qos"], 1);
        assert_eq!(d["o"]["name"], "miner2mqtt");
        assert_eq!(d["dev"]["via_device"], "miner2mqtt_bridge_miner2mqtt");
        assert_eq!(
            d["dev"]["cns"][0][1],
            dev.spec.mac_string().to_ascii_lowercase()
        );
        let cmps = d["cmps"].as_object().unwrap();
        for (key, c) in cmps {
            assert!(
                c.get("object_id").is_none(),
                "{name}.{key} uses the deprecated object_id"
            );
            assert!(
                c["default_entity_id"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("{}_{key}", name)),
                "{c}"
            );
            assert!(
                c["unique_id"].as_str().unwrap().contains(&hwid(dev)),
                "unique ids come from the MAC"
            );
        }
        let unit = |k: &str| cmps[k]["unit_of_measurement"].as_str().map(str::to_string);
        assert_eq!(unit("hashrate").as_deref(), Some("GH/s"));
        assert_eq!(unit("power").as_deref(), Some("W"));
        assert_eq!(cmps["power"]["device_class"], "power");
        assert_eq!(unit("efficiency").as_deref(), Some("J/TH"));
        assert_eq!(unit("asic_temp").as_deref(), Some("°C"));
        assert_eq!(cmps["asic_temp"]["device_class"], "temperature");
        assert_eq!(unit("input_voltage").as_deref(), Some("V"));
        assert_eq!(unit("current").as_deref(), Some("A"));
        assert_eq!(unit("rssi").as_deref(), Some("dBm"));
        assert_eq!(cmps["shares_accepted"]["state_class"], "total_increasing");
        assert_eq!(cmps["uptime"]["device_class"], "duration");
        assert_eq!(cmps["frequency"]["p"], "number");
        assert_eq!(cmps["frequency"]["unit_of_measurement"], "MHz");
        assert_eq!(
            cmps["frequency"]["command_topic"],
            format!("miner2mqtt/{name}/set/frequency")
        );
        assert_eq!(cmps["core_voltage"]["unit_of_measurement"], "mV");
        assert_eq!(cmps["mode"]["p"], "select");
        assert_eq!(
            cmps["mode"]["options"],
            serde_json::json!(["eco", "standard", "turbo"])
        );
        assert_eq!(cmps["auto_fan"]["p"], "switch");
        assert_eq!(cmps["restart"]["p"], "button");
        assert_eq!(cmps["overheating"]["p"], "binary_sensor");
        assert!(cmps.get("mining").is_none(), "pause is v2.15-only");
    }
    let supra = ha
        .wait_for(&disco(&hwid(&devs[0])), WAIT, |_| true)
        .await
        .json();
    assert_eq!(
        supra["cmps"]["frequency"]["max"], 575.0,
        "BM1368's rated maximum"
    );
    let nerd = ha
        .wait_for(&disco(&hwid(&devs[2])), WAIT, |_| true)
        .await
        .json();
    assert_eq!(nerd["dev"]["mdl"], "NerdQAxe++");
    assert_eq!(nerd["dev"]["hw"], "4× BM1370");

    // Discovery is retained: a Home Assistant that connects later still sees it.
    let late = Observer::connect(
        rig.broker.port,
        &["homeassistant/device/miner2mqtt/+/config"],
    )
    .await;
    let m = late.wait_for(&disco(&hwid(&devs[1])), WAIT, |_| true).await;
    assert!(m.retain);

    // State: every key present, real numbers for what the device reports.
    let state = ha
        .wait_for("miner2mqtt/gamma/state", WAIT, |m| {
            m.json()["hashrate"].is_number()
        })
        .await
        .json();
    let keys = miner2mqtt::hass::state::state_keys();
    for k in &keys {
        assert!(state.get(k).is_some(), "state lacks {k}");
    }
    assert_eq!(state["frequency"], 525.0);
    assert_eq!(state["mode"], "standard");
    assert!(
        state["input_voltage"].as_f64().unwrap() < 6.0,
        "volts, not millivolts"
    );
    let avail = ha
        .wait_for("miner2mqtt/gamma/availability", WAIT, |_| true)
        .await;
    assert_eq!(avail.text(), "online");
    assert!(avail.retain || avail.text() == "online");

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frequency_slider_moves_the_miner_and_the_state_follows() {
    let rig = Rig::start(vec![DeviceSpec::gamma(7, Firmware::V2_12)]).await;
    let devs = &rig.devs;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["gamma"], |r| {
        r.poll_interval = Duration::from_secs(60);
    }));
    ha.wait_for("miner2mqtt/gamma/state", WAIT, |m| {
        m.json()["frequency"] == 525.0
    })
    .await;

    let sent = Instant::now();
    ha.publish("miner2mqtt/gamma/set/frequency", "600").await;
    // The command is applied and the miner re-polled at once, not at the next 60 s poll.
    let state = ha
        .wait_after(
            sent,
            "miner2mqtt/gamma/state",
            Duration::from_secs(10),
            |m| m.json()["frequency"] == 600.0,
        )
        .await
        .json();
    assert_eq!(devs[0].snapshot().frequency, 600);
    assert_eq!(
        state["mode"],
        Value::Null,
        "600 MHz at 1150 mV is no preset"
    );
    ha.wait_after(sent, "miner2mqtt/bridge/event", WAIT, |m| {
        m.json()["type"] == "command_applied"
    })
    .await;

    // The mode select sets frequency and voltage together.
    let sent = Instant::now();
    ha.publish("miner2mqtt/gamma/set/mode", "eco").await;
    let state = ha
        .wait_after(
            sent,
            "miner2mqtt/gamma/state",
            Duration::from_secs(10),
            |m| m.json()["mode"] == "eco",
        )
        .await
        .json();
    assert_eq!(state["frequency"], 400.0);
    assert_eq!(state["core_voltage"], 1060.0);
    let snap = devs[0].snapshot();
    assert_eq!((snap.frequency, snap.core_voltage), (400, 1060));

    // The fan slider turns automatic control off and writes manualFanSpeed on v2.12.
    let sent = Instant::now();
    ha.publish("miner2mqtt/gamma/set/fan_speed", "80").await;
    ha.wait_after(
        sent,
        "miner2mqtt/gamma/state",
        Duration::from_secs(10),
        |m| m.json()["auto_fan"] == false,
    )
    .await;
    let snap = devs[0].snapshot();
    assert_eq!(snap.autofan, 0);
    assert_eq!(snap.manual_fan, 80.0);
    assert!(snap
        .patches
        .iter()
        .any(|p| p.get("manualFanSpeed").is_some()));

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_and_garbage_commands_are_refused_with_a_reason_and_nothing_reaches_the_miner()
{
    let rig = Rig::start(vec![DeviceSpec::gamma(8, Firmware::V2_12)]).await;
    let devs = &rig.devs;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["gamma"], |r| {
        r.poll_interval = Duration::from_secs(60);
    }));
    ha.wait_for("miner2mqtt/gamma/state", WAIT, |_| true).await;

    for (property, value, expect) in [
        ("frequency", "900", "625"),
        ("core_voltage", "1500", "1250"),
        ("frequency", "fast", "number"),
        ("fan_speed", "5", "min_fan_speed"),
        ("mode", "oc", "not one of"),
        ("mining", "OFF", "v2.14"),
    ] {
        let sent = Instant::now();
        ha.publish(&format!("miner2mqtt/gamma/set/{property}"), value)
            .await;
        let event = ha
            .wait_after(sent, "miner2mqtt/bridge/event", WAIT, |m| {
                m.json()["type"] == "command_rejected" && m.json()["value"] == value
            })
            .await
            .json();
        assert_eq!(event["miner"], "gamma");
        assert_eq!(event["property"], property);
        let reason = event["reason"].as_str().unwrap();
        assert!(reason.contains(expect), "{property}={value}: {reason}");
        // The entity snaps back: the device's real value is published again.
        let state = ha
            .wait_after(sent, "miner2mqtt/gamma/state", WAIT, |_| true)
            .await
            .json();
        assert_eq!(state["frequency"], 525.0);
    }
    assert!(
        devs[0].snapshot().patches.is_empty(),
        "nothing was sent to the miner"
    );

    // With allow_overclock the same 900 MHz is still refused above the absolute 1000? No: 900 is
    // within BM1370's absolute range, so it is accepted; 1100 is not.
    daemon.stop().await;
    let daemon = Daemon::start(rig.config(&["gamma"], |r| {
        r.poll_interval = Duration::from_secs(60);
        r.safety.allow_overclock = true;
    }));
    ha.clear();
    ha.wait_for("miner2mqtt/gamma/state", WAIT, |_| true).await;
    let sent = Instant::now();
    ha.publish("miner2mqtt/gamma/set/frequency", "1100").await;
    let e = ha
        .wait_after(sent, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "command_rejected"
        })
        .await
        .json();
    assert!(e["reason"].as_str().unwrap().contains("1000"), "{e}");
    ha.publish("miner2mqtt/gamma/set/frequency", "700").await;
    ha.wait_after(sent, "miner2mqtt/gamma/state", WAIT, |m| {
        m.json()["frequency"] == 700.0
    })
    .await;
    assert!(devs[0]
        .snapshot()
        .patches
        .iter()
        .all(|p| p["frequency"].as_u64().unwrap_or(0) <= 1000));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_comes_back_after_the_broker_is_killed_and_restarted() {
    let mut rig = Rig::start(vec![DeviceSpec::gamma(9, Firmware::V2_12)]).await;
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    rig.ha
        .wait_for(&disco(&hwid(&rig.devs[0])), WAIT, |_| true)
        .await;
    rig.broker.restart();
    // A new observer, so nothing seen before the restart can satisfy what follows: the new
    // broker has no retained messages, and everything must be published again.
    let ha = Observer::connect(rig.broker.port, &["miner2mqtt/#", "homeassistant/#"]).await;
    let devs = &rig.devs;
    ha.wait_for("miner2mqtt/bridge/state", Duration::from_secs(30), |m| {
        m.text() == "online"
    })
    .await;
    let d = ha.wait_for(&disco(&hwid(&devs[0])), WAIT, |_| true).await;
    assert!(d.json()["cmps"].get("frequency").is_some());
    ha.wait_for("miner2mqtt/gamma/availability", WAIT, |m| {
        m.text() == "online"
    })
    .await;
    ha.wait_for("miner2mqtt/gamma/state", WAIT, |m| {
        m.json()["hashrate"].is_number()
    })
    .await;
    // And commands work on the new session.
    let sent = Instant::now();
    ha.publish("miner2mqtt/gamma/set/frequency", "550").await;
    ha.wait_after(sent, "miner2mqtt/gamma/state", WAIT, |m| {
        m.json()["frequency"] == 550.0
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_coming_online_gets_state_republished() {
    let rig = Rig::start(vec![
        DeviceSpec::gamma(10, Firmware::V2_12),
        DeviceSpec::gamma(11, Firmware::V2_15),
    ])
    .await;
    let devs = &rig.devs;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["a", "b"], |r| {
        // Polls are far apart, so states after the birth can only be the republish.
        r.poll_interval = Duration::from_secs(120);
    }));
    ha.wait_for("miner2mqtt/a/state", WAIT, |_| true).await;
    ha.wait_for("miner2mqtt/b/state", WAIT, |_| true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let birth = Instant::now();
    ha.publish("homeassistant/status", "online").await;
    let a = ha
        .wait_after(birth, "miner2mqtt/a/state", Duration::from_secs(6), |_| {
            true
        })
        .await;
    ha.wait_after(birth, "miner2mqtt/b/state", Duration::from_secs(6), |_| {
        true
    })
    .await;
    ha.wait_after(
        birth,
        &disco(&hwid(&devs[0])),
        Duration::from_secs(6),
        |_| true,
    )
    .await;
    // The republish waits a moment so HA has subscribed (random 0.5–2.5 s).
    assert!(
        a.at.duration_since(birth) >= Duration::from_millis(400),
        "{:?}",
        a.at.duration_since(birth)
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_disappears_goes_unavailable_and_comes_back_by_itself() {
    let rig = Rig::start(vec![DeviceSpec::gamma(12, Firmware::V2_12)]).await;
    let devs = &rig.devs;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    ha.wait_for("miner2mqtt/gamma/availability", WAIT, |m| {
        m.text() == "online"
    })
    .await;

    let gone = Instant::now();
    devs[0].set_faults(Faults {
        offline: true,
        ..Default::default()
    });
    let off = ha
        .wait_after(gone, "miner2mqtt/gamma/availability", WAIT, |m| {
            m.text() == "offline"
        })
        .await;
    let event = ha
        .wait_after(gone, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "miner_offline"
        })
        .await
        .json();
    assert_eq!(event["miner"], "gamma");
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .contains(&devs[0].addr.to_string()),
        "{event}"
    );
    assert!(
        off.at.duration_since(gone) >= Duration::from_millis(900),
        "offline only after 2 failed polls"
    );

    let back = Instant::now();
    devs[0].set_faults(Faults::default());
    ha.wait_after(back, "miner2mqtt/gamma/availability", WAIT, |m| {
        m.text() == "online"
    })
    .await;
    ha.wait_after(back, "miner2mqtt/gamma/state", WAIT, |m| {
        m.json()["hashrate"].is_number()
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_slow_and_failing_miners_do_not_stop_the_others() {
    let rig = Rig::start(vec![
        DeviceSpec::gamma(13, Firmware::V2_12),
        DeviceSpec::gamma(14, Firmware::V2_12),
        DeviceSpec::gamma(15, Firmware::V2_12),
        DeviceSpec::gamma(16, Firmware::V2_12),
    ])
    .await;
    let devs = &rig.devs;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["good", "garbled", "slow", "broken"], |_| {}));
    for name in ["good", "garbled", "slow", "broken"] {
        ha.wait_for(&format!("miner2mqtt/{name}/availability"), WAIT, |m| {
            m.text() == "online"
        })
        .await;
    }
    let t0 = Instant::now();
    devs[1].set_faults(Faults {
        malformed_rate: 1.0,
        ..Default::default()
    });
    devs[2].set_faults(Faults {
        latency_ms: 3000,
        ..Default::default()
    });
    devs[3].set_faults(Faults {
        error500_rate: 1.0,
        ..Default::default()
    });
    for (name, says) in [
        ("garbled", "unreadable reply"),
        ("slow", "no answer within"),
        ("broken", "HTTP 500"),
    ] {
        ha.wait_after(t0, &format!("miner2mqtt/{name}/availability"), WAIT, |m| {
            m.text() == "offline"
        })
        .await;
        let e = ha
            .wait_after(t0, "miner2mqtt/bridge/event", WAIT, |m| {
                m.json()["type"] == "miner_offline" && m.json()["miner"] == name
            })
            .await
            .json();
        assert!(e["error"].as_str().unwrap().contains(says), "{name}: {e}");
    }
    // Meanwhile the healthy miner keeps being polled every second.
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = ha
        .messages()
        .iter()
        .filter(|m| m.topic == "miner2mqtt/good/state" && m.at >= t1)
        .count();
    assert!(
        fresh >= 2,
        "only {fresh} states from the healthy miner in 3 s"
    );
    assert!(!ha
        .messages()
        .iter()
        .any(|m| m.topic == "miner2mqtt/good/availability" && m.text() == "offline"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_15_offers_pool_selection_and_pause() {
    let mut spec = DeviceSpec::gamma(17, Firmware::V2_15);
    spec.restart_time = Duration::from_millis(500);
    let rig = Rig::start(vec![spec]).await;
    let devs = &rig.devs;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["g15"], |_| {}));
    let d = ha
        .wait_for(&disco(&hwid(&devs[0])), WAIT, |_| true)
        .await
        .json();
    assert_eq!(d["cmps"]["mining"]["p"], "switch");
    assert_eq!(
        d["cmps"]["pool_select"]["options"],
        serde_json::json!(["public-pool.io:21496", "solo.ckpool.org:3333"])
    );

    let sent = Instant::now();
    ha.publish("miner2mqtt/g15/set/mining", "OFF").await;
    ha.wait_after(sent, "miner2mqtt/g15/state", WAIT, |m| {
        m.json()["paused"] == true
    })
    .await;
    assert!(devs[0].snapshot().paused);
    ha.publish("miner2mqtt/g15/set/mining", "ON").await;
    ha.wait_after(sent, "miner2mqtt/g15/state", WAIT, |m| {
        m.json()["paused"] == false
    })
    .await;

    let sent = Instant::now();
    ha.publish("miner2mqtt/g15/set/pool", "solo.ckpool.org:3333")
        .await;
    ha.wait_after(sent, "miner2mqtt/g15/state", Duration::from_secs(20), |m| {
        m.json()["pool"] == "solo.ckpool.org:3333"
    })
    .await;
    assert_eq!(devs[0].snapshot().primary_pool, 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_miner_is_cleared_and_shutdown_says_offline() {
    let rig = Rig::start(vec![
        DeviceSpec::gamma(18, Firmware::V2_12),
        DeviceSpec::gamma(19, Firmware::V2_12),
    ])
    .await;
    let devs = &rig.devs;
    let path = rig.history_path();
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["keep", "drop"], |_| {}));
    ha.wait_for(&disco(&hwid(&devs[1])), WAIT, |m| !m.payload.is_empty())
        .await;
    ha.wait_for("miner2mqtt/drop/availability", WAIT, |m| {
        m.text() == "online"
    })
    .await;
    ha.wait_for("miner2mqtt/keep/state", WAIT, |m| {
        m.json()["hashrate"].is_number()
    })
    .await;
    let stopped = Instant::now();
    assert_eq!(daemon.stop().await, miner2mqtt::daemon::Exit::Stopped);
    ha.wait_after(stopped, "miner2mqtt/bridge/state", WAIT, |m| {
        m.text() == "offline"
    })
    .await;

    // The history kept samples of both, tagged with their clock settings.
    {
        let s = miner2mqtt::store::Store::open(&path, 1 << 20).unwrap();
        let n = s.miner_number(&hwid(&devs[0])).unwrap();
        let w = s.window(n, 0, u64::MAX).unwrap();
        assert!(!w.is_empty(), "miner {n}: names {:?}", s.names());
        assert_eq!(w[0].clock.unwrap().frequency_mhz, 525);
    }

    let restarted = Instant::now();
    let daemon = Daemon::start(rig.config(&["keep"], |_| {}));
    let cleared = ha
        .wait_after(restarted, &disco(&hwid(&devs[1])), WAIT, |_| true)
        .await;
    assert!(
        cleared.payload.is_empty(),
        "the removed miner's discovery is cleared with an empty payload"
    );
    ha.wait_after(restarted, "miner2mqtt/drop/availability", WAIT, |m| {
        m.payload.is_empty()
    })
    .await;
    // The kept miner's discovery is unchanged and not republished needlessly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !ha.messages()
            .iter()
            .any(|m| m.at >= restarted && m.topic == disco(&hwid(&devs[0]))),
        "unchanged discovery was republished"
    );
    daemon.stop().await;
}

#[test]
fn simulator_payloads_have_the_shape_of_the_real_devices() {
    // Every key of the real capture exists in the simulator's payload with the same JSON type.
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cancel = CancellationToken::new();
        for (firmware, chip, chips, fixture) in [
            (
                Firmware::V2_10,
                BM1370,
                1,
                "axeos/v2.10.1_bm1370_gamma601_system_info.json",
            ),
            (
                Firmware::V2_12,
                BM1370,
                1,
                "axeos/v2.12.2_bm1370_gamma601_system_info.json",
            ),
            (
                Firmware::Nerdqaxe,
                BM1370,
                4,
                "nerdqaxe/v1.1.0-beta1_nerdqaxe++_bm1370x4_system_info.json",
            ),
        ] {
            let real: Value =
                serde_json::from_slice(&std::fs::read(fixtures.join(fixture)).unwrap()).unwrap();
            let dev = axeos::start(
                DeviceSpec::new(1, firmware, chip, chips),
                "127.0.0.1:0".parse().unwrap(),
                cancel.clone(),
            )
            .await
            .unwrap();
            let body = reqwest::get(format!("http://{}/api/system/info", dev.addr))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let sim: Value = serde_json::from_slice(&body).unwrap();
            let kind = |v: &Value| match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            for (k, v) in real.as_object().unwrap() {
                let s = sim
                    .get(k)
                    .unwrap_or_else(|| panic!("{fixture}: simulator lacks {k}"));
                assert_eq!(
                    kind(s),
                    kind(v),
                    "{fixture}: {k} is {s} in the simulator, {v} on the device"
                );
            }
            // And the adapter's parser reads it like the real one.
            let parsed = miner2mqtt::miner::axeos::parse_system_info(&body).unwrap();
            let real_parsed =
                miner2mqtt::miner::axeos::parse_system_info(&serde_json::to_vec(&real).unwrap())
                    .unwrap();
            assert_eq!(parsed.generation, real_parsed.generation, "{fixture}");
        }
        cancel.cancel();
    });
}

/// Regression: with a fresh history store, a miner that answered its first poll after the
/// discovery sync had its retained discovery cleared as "stale", which makes Home Assistant
/// delete the device (and the user's entity settings) before recreating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_miner_keeps_its_discovery_when_the_store_is_new() {
    let rig = Rig::start(vec![DeviceSpec::gamma(20, Firmware::V2_12)]).await;
    let (devs, ha) = (&rig.devs, &rig.ha);
    let first = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config_for(
        rig.broker.port,
        &[("slow", &devs[0])],
        &first.path().join("h"),
        |_| {},
    ));
    ha.wait_for(&disco(&hwid(&devs[0])), WAIT, |m| !m.payload.is_empty())
        .await;
    daemon.stop().await;

    devs[0].set_faults(Faults {
        latency_ms: 2500,
        ..Default::default()
    });
    let fresh = tempfile::tempdir().unwrap();
    let restarted = Instant::now();
    let daemon = Daemon::start(config_for(
        rig.broker.port,
        &[("slow", &devs[0])],
        &fresh.path().join("h"),
        |r| {
            r.request_timeout = Duration::from_secs(5);
        },
    ));
    ha.wait_after(restarted, "miner2mqtt/slow/state", WAIT, |_| true)
        .await;
    let cleared = ha
        .messages()
        .iter()
        .any(|m| m.at >= restarted && m.topic == disco(&hwid(&devs[0])) && m.payload.is_empty());
    assert!(!cleared, "the slow miner's discovery was cleared");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_and_history_answer_on_the_request_topics() {
    let rig = Rig::start(vec![DeviceSpec::gamma(21, Firmware::V2_12)]).await;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    for _ in 0..3 {
        ha.wait_for("miner2mqtt/gamma/state", WAIT, |_| true).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let asked = Instant::now();
    ha.publish(
        "miner2mqtt/bridge/request/health_check",
        r#"{"transaction": 7}"#,
    )
    .await;
    let r = ha
        .wait_after(
            asked,
            "miner2mqtt/bridge/response/health_check",
            WAIT,
            |_| true,
        )
        .await
        .json();
    assert_eq!(r["status"], "ok");
    assert_eq!(r["transaction"], 7);
    assert_eq!(r["data"]["miners_online"], 1);
    assert!(r["data"]["polls_ok"].as_u64().unwrap() >= 2);

    ha.publish(
        "miner2mqtt/bridge/request/history",
        r#"{"miner": "gamma", "minutes": 5, "transaction": "h"}"#,
    )
    .await;
    let r = ha
        .wait_after(asked, "miner2mqtt/bridge/response/history", WAIT, |_| true)
        .await
        .json();
    assert_eq!(r["status"], "ok", "{r}");
    let samples = r["data"].as_array().unwrap();
    assert!(samples.len() >= 2, "{r}");
    assert_eq!(samples[0]["clock"]["frequency_mhz"], 525);
    assert!(samples[0]["hashrate"].as_f64().unwrap() > 500.0);

    ha.publish(
        "miner2mqtt/bridge/request/history",
        r#"{"miner": "nobody"}"#,
    )
    .await;
    let r = ha
        .wait_after(asked, "miner2mqtt/bridge/response/history", WAIT, |m| {
            m.json()["status"] == "error"
        })
        .await
        .json();
    assert!(r["error"].as_str().unwrap().contains("nobody"));
    ha.publish("miner2mqtt/bridge/request/log_level", "chatty")
        .await;
    let r = ha
        .wait_after(asked, "miner2mqtt/bridge/response/log_level", WAIT, |_| {
            true
        })
        .await
        .json();
    assert_eq!(r["status"], "error");
    daemon.stop().await;
}
