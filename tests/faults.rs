//! Faults and bad input found by trying the daemon as a user would (issue 6, items 9–13): an
//! empty config, a second instance, a broker restart, a burst of commands, junk payloads. Each
//! test is named after what went wrong, against a real Mosquitto and simulated miners.

mod common;

use common::*;
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::{Duration, Instant};

fn state_topic(name: &str) -> String {
    format!("miner2mqtt/{name}/state")
}

/// Regression (6.9): `miners: []` cleared every retained discovery topic under the node, and
/// Home Assistant deleted those devices with their customisations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_config_deletes_no_home_assistant_device() {
    let rig = Rig::start(vec![DeviceSpec::gamma(60, Firmware::V2_12)]).await;
    // A device someone else published under the same prefix and node.
    let foreign = "homeassistant/device/miner2mqtt/aabbccddeeff/config";
    rig.ha
        .client
        .publish(
            foreign,
            QoS::AtLeastOnce,
            true,
            br#"{"dev":{"ids":["x"]}}"#.to_vec(),
        )
        .await
        .unwrap();
    rig.ha
        .wait_for(foreign, WAIT, |m| !m.payload.is_empty())
        .await;

    let empty = rig.config(&[], |_| {});
    let result = tokio::time::timeout(
        WAIT,
        miner2mqtt::daemon::run(empty, Default::default(), None),
    )
    .await
    .expect("an empty config ends at once");
    let error = result.expect_err("an empty config is refused").to_string();
    assert!(
        error.contains("no miners") && error.contains("miners:"),
        "{error}"
    );

    // A real daemon with a fresh store: it claims only what it publishes itself.
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    rig.ha
        .wait_for(&state_topic("gamma"), WAIT, |m| {
            m.json()["hashrate"].is_number()
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.stop().await;
    let cleared = rig
        .ha
        .messages()
        .iter()
        .any(|m| m.topic == foreign && m.payload.is_empty());
    assert!(
        !cleared,
        "the daemon cleared a discovery topic it never published"
    );
}

/// Regression (6.10): a second instance on the same base topic took the first's session over
/// (same client id) or applied every command twice (another one); now it refuses to start and
/// says how to run two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_is_refused_and_the_first_keeps_running() {
    let rig = Rig::start(vec![DeviceSpec::gamma(61, Firmware::V2_12)]).await;
    let first_config = rig.config(&["gamma"], |_| {});
    let client_id = first_config.mqtt.client_id.clone();
    let first = Daemon::start(first_config);
    rig.ha
        .wait_for(&state_topic("gamma"), WAIT, |m| {
            m.json()["hashrate"].is_number()
        })
        .await;

    for same_client_id in [true, false] {
        let store = tempfile::tempdir().unwrap();
        let second = config_for(
            rig.broker.port,
            &[("gamma", &rig.devs[0])],
            &store.path().join("h"),
            |r| {
                if same_client_id {
                    r.mqtt.client_id = client_id.clone();
                }
            },
        );
        let since = Instant::now();
        let result = tokio::time::timeout(
            WAIT,
            miner2mqtt::daemon::run(second, Default::default(), None),
        )
        .await
        .expect("the second instance gives up at once");
        let error = result
            .expect_err("a second instance is refused")
            .to_string();
        assert!(
            error.contains("already running")
                && error.contains("base_topic")
                && error.contains("client_id"),
            "{error}"
        );
        // The first never saw its bridge marked offline and still answers.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let offline = rig
            .ha
            .count_after(since, "miner2mqtt/bridge/state", |m| m.text() == "offline");
        assert_eq!(offline, 0, "the first instance's bridge went offline");
    }
    let since = Instant::now();
    rig.ha
        .publish("miner2mqtt/gamma/set/frequency", "500")
        .await;
    rig.ha
        .wait_after(since, &state_topic("gamma"), WAIT, |m| {
            m.json()["frequency"] == 500.0
        })
        .await;
    let applied = rig.ha.count_after(since, "miner2mqtt/bridge/event", |m| {
        m.json()["type"] == "command_applied"
    });
    assert_eq!(applied, 1, "the command was applied once");
    first.stop().await;
}

/// Regression (6.11): acknowledged QoS 1 commands vanished across a broker restart (clean
/// session, reconnects 1→60 s apart). With a persistent session the broker keeps what arrives
/// for the daemon, and the daemon is back within a second of the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_not_lost_across_a_broker_restart() {
    let mut broker = Mosquitto::start_persistent();
    let cancel = tokio_util::sync::CancellationToken::new();
    let devs = miner2mqtt::sim::start_axeos_fleet(
        vec![DeviceSpec::gamma(62, Firmware::V2_12)],
        None,
        &cancel,
    )
    .await
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let config = config_for(
        broker.port,
        &[("gamma", &devs[0])],
        &store.path().join("h"),
        |r| {
            r.poll_interval = Duration::from_secs(30);
        },
    );
    let ha = Observer::connect(broker.port, &["miner2mqtt/#"]).await;
    let daemon = Daemon::start(config.clone());
    ha.wait_for(&state_topic("gamma"), WAIT, |m| {
        m.json()["hashrate"].is_number()
    })
    .await;

    // A 10 s outage; a command sent the moment the broker is back arrives whichever of the two
    // clients reconnects first.
    broker.stop_gracefully();
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.start_again();
    let back = Instant::now();
    let sender = Observer::connect(broker.port, &["unused/#"]).await;
    sender
        .publish("miner2mqtt/gamma/set/frequency", "450")
        .await;
    let applied = ha
        .wait_after(back, &state_topic("gamma"), WAIT, |m| {
            m.json()["frequency"] == 450.0
        })
        .await;
    eprintln!(
        "command applied {:?} after the broker came back",
        applied.at - back
    );

    // The daemon away (stopped): what is sent meanwhile waits in its session, and then for the
    // miner's first reading, and is applied.
    daemon.stop().await;
    sender
        .publish("miner2mqtt/gamma/set/frequency", "475")
        .await;
    let restarted = Instant::now();
    let daemon = Daemon::start(config);
    ha.wait_after(restarted, &state_topic("gamma"), WAIT, |m| {
        m.json()["frequency"] == 475.0
    })
    .await;
    daemon.stop().await;
    cancel.cancel();
}

/// Regression (6.12): the 16-deep queue refused the tail of a burst, so the value the user let
/// go of was not the one applied. For a setting, the newest value wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_slider_moves_ends_at_the_last_value() {
    let rig = Rig::start(vec![DeviceSpec::gamma(63, Firmware::V2_12)]).await;
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    rig.ha
        .wait_for(&state_topic("gamma"), WAIT, |m| {
            m.json()["hashrate"].is_number()
        })
        .await;
    let since = Instant::now();
    for f in (400..=495).step_by(5) {
        rig.ha
            .publish("miner2mqtt/gamma/set/frequency", &f.to_string())
            .await;
    }
    rig.ha
        .wait_after(since, &state_topic("gamma"), WAIT, |m| {
            m.json()["frequency"] == 495.0
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = rig
        .ha
        .messages()
        .iter()
        .rev()
        .find(|m| m.topic == state_topic("gamma"))
        .unwrap()
        .json();
    assert_eq!(last["frequency"], 495.0, "the last value stays applied");
    let refused = rig.ha.count_after(since, "miner2mqtt/bridge/event", |m| {
        m.json()["type"] == "command_rejected"
    });
    assert_eq!(refused, 0, "no slider move is refused for being too many");
    daemon.stop().await;
}

/// Regression (6.13): `set/restart` rebooted on any payload, any payload restarted the daemon, a
/// megabyte of junk became a megabyte of log and event, a bad `minutes` was silently 60, and
/// error texts showed Rust internals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_payloads_are_refused_in_a_line_and_change_nothing() {
    let rig = Rig::start(vec![DeviceSpec::gamma(64, Firmware::V2_12)]).await;
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    ha.wait_for(&state_topic("gamma"), WAIT, |m| {
        m.json()["hashrate"].is_number()
    })
    .await;

    let rejection = |since: Instant, property: &'static str| {
        ha.wait_after(since, "miner2mqtt/bridge/event", WAIT, move |m| {
            m.json()["type"] == "command_rejected" && m.json()["property"] == property
        })
    };
    for junk in ["", "junk", "ON"] {
        let since = Instant::now();
        ha.publish("miner2mqtt/gamma/set/restart", junk).await;
        let e = rejection(since, "restart").await.json();
        assert!(e["reason"].as_str().unwrap().contains("PRESS"), "{e}");
    }

    let junk = "x".repeat(1_000_000);
    let since = Instant::now();
    ha.publish("miner2mqtt/gamma/set/mode", &junk).await;
    let e = rejection(since, "mode").await;
    assert!(
        e.payload.len() < 400,
        "a {} byte event for a 1 MB payload",
        e.payload.len()
    );
    assert!(
        e.json()["reason"]
            .as_str()
            .unwrap()
            .contains("1000000 bytes"),
        "{}",
        e.text()
    );

    let request = |action: &'static str, payload: &'static str| async move {
        let since = Instant::now();
        ha.publish(&format!("miner2mqtt/bridge/request/{action}"), payload)
            .await;
        ha.wait_after(
            since,
            &format!("miner2mqtt/bridge/response/{action}"),
            WAIT,
            |_| true,
        )
        .await
        .json()
    };
    let r = request("restart", "").await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("PRESS"), "{r}");
    let r = request("history", r#"{"miner": "gamma", "minutes": "abc"}"#).await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("minutes"), "{r}");
    let r = request("log_level", "loud").await;
    assert_eq!(r["status"], "error");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("\"loud\"") && !error.contains("Some("),
        "{error}"
    );
    let r = request("log_level", "DEBUG").await;
    assert_eq!(r["status"], "ok", "{r}");
    // A JSON string is a value too, as before the requests were hardened.
    let r = request("log_level", "\"info\"").await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["data"]["value"], "info");

    // Still running, never restarted: the device's uptime kept counting and health answers.
    let r = request("health_check", "{}").await;
    assert_eq!(r["data"]["healthy"], true);
    assert_eq!(daemon.stop().await, miner2mqtt::daemon::Exit::Stopped);
}

/// Regression (6.13): one publish larger than the session's packet limit dropped the daemon's
/// MQTT session; now any message MQTT can carry is read and refused by size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_does_not_drop_the_session() {
    let rig = Rig::start(vec![DeviceSpec::gamma(65, Firmware::V2_12)]).await;
    let daemon = Daemon::start(rig.config(&["gamma"], |_| {}));
    rig.ha
        .wait_for(&state_topic("gamma"), WAIT, |m| {
            m.json()["hashrate"].is_number()
        })
        .await;
    let mut options = MqttOptions::new("big-sender", "127.0.0.1", rig.broker.port);
    options.set_max_packet_size(64 << 20, 64 << 20);
    let (big, mut eventloop) = AsyncClient::new(options, 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let since = Instant::now();
    big.publish(
        "miner2mqtt/gamma/set/frequency",
        QoS::AtLeastOnce,
        false,
        vec![b'9'; 17 << 20],
    )
    .await
    .unwrap();
    let e = rig
        .ha
        .wait_after(
            since,
            "miner2mqtt/bridge/event",
            Duration::from_secs(30),
            |m| m.json()["type"] == "command_rejected",
        )
        .await
        .json();
    assert!(e["reason"].as_str().unwrap().contains("bytes"), "{e}");
    // The session stayed: no reconnect (each one announces `online` again), commands work.
    rig.ha
        .publish("miner2mqtt/gamma/set/frequency", "500")
        .await;
    rig.ha
        .wait_after(since, &state_topic("gamma"), WAIT, |m| {
            m.json()["frequency"] == 500.0
        })
        .await;
    let reconnects = rig
        .ha
        .count_after(since, "miner2mqtt/bridge/state", |m| m.text() == "online");
    assert_eq!(
        reconnects, 0,
        "the daemon reconnected after the oversized message"
    );
    daemon.stop().await;
}
