//! Smart plugs end to end: a simulated Tasmota plug on a real Mosquitto powering a simulated
//! Bitaxe, and a simulated Home Assistant REST API powering another. A miner switched off on
//! purpose shows off (not unavailable, no offline event, not polled), the keepalive corrects a
//! plug switched by hand at the plug, the strategy's "off" switches the plug, and a restart
//! remembers a miner that is off.

mod common;

use common::*;
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware, BM1370};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn tasmota_plug() -> miner2mqtt::power::RawPower {
    serde_json::from_value(json!({ "mqtt": {
        "command_topic": "cmnd/plug1/POWER", "payload_on": "ON", "payload_off": "OFF",
        "state_topic": "stat/plug1/POWER",
    }}))
    .unwrap()
}

async fn state_where(rig: &Rig, since: Instant, pred: impl Fn(&Value) -> bool) -> Value {
    rig.ha
        .wait_after(since, "miner2mqtt/gamma/state", WAIT, |m| pred(&m.json()))
        .await
        .json()
}

async fn event_where(rig: &Rig, since: Instant, pred: impl Fn(&Value) -> bool) -> Value {
    rig.ha
        .wait_after(since, "miner2mqtt/bridge/event", WAIT, |m| pred(&m.json()))
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_switched_off_at_its_mqtt_plug_shows_off_and_the_keepalive_keeps_it_so() {
    let rig = Rig::start(vec![DeviceSpec::new(1, Firmware::V2_12, BM1370, 1)]).await;
    let dev = rig.devs[0].clone();
    miner2mqtt::sim::plug::start(
        "127.0.0.1",
        rig.broker.port,
        "plug1",
        dev.clone(),
        rig.cancel.clone(),
    )
    .await
    .unwrap();
    let config = rig.config(&["gamma"], |raw| {
        raw.miners[0].power = Some(tasmota_plug());
        raw.power_keepalive = Duration::from_secs(2);
    });
    let daemon = Daemon::start(config.clone());
    let t0 = Instant::now();
    state_where(&rig, t0, |s| {
        s["hashrate"].as_f64().is_some_and(|h| h > 0.0)
    })
    .await;

    // Discovery: a Power switch that stays available while the miner is off or unreachable.
    let disco = rig.discovery(0).await;
    let switch = &disco["cmps"]["power_switch"];
    assert_eq!(switch["p"], "switch");
    assert_eq!(switch["name"], "Power");
    assert_eq!(switch["command_topic"], "miner2mqtt/gamma/set/power");
    assert_eq!(
        switch["availability"],
        json!([{ "topic": "miner2mqtt/bridge/state" }])
    );
    let on = state_where(&rig, t0, |s| s["plug_power"] == "ON").await;
    assert!(on["hashrate"].as_f64().unwrap() > 0.0, "{on}");

    // Off by hand from HA: the device loses power; the miner shows off with no hashrate and no
    // power, stays available, raises no offline event and is no longer polled.
    let t1 = Instant::now();
    rig.ha.publish("miner2mqtt/gamma/set/power", "OFF").await;
    let off = state_where(&rig, t1, |s| s["plug_power"] == "OFF").await;
    assert_eq!(
        (off["hashrate"].as_f64(), off["power"].as_f64()),
        (Some(0.0), Some(0.0)),
        "{off}"
    );
    assert!(off["asic_temp"].is_null(), "{off}");
    let applied = event_where(&rig, t1, |e| e["type"] == "command_applied").await;
    assert_eq!(
        (applied["command"].as_str(), applied["origin"].as_str()),
        (Some("power off"), Some("user"))
    );
    assert!(!dev.powered());
    let requests = dev.snapshot().requests;
    tokio::time::sleep(Duration::from_secs(4)).await; // 4 poll intervals, 2 keepalives
    assert_eq!(
        dev.snapshot().requests,
        requests,
        "a miner off on purpose is not polled"
    );
    let offline = rig.ha.count_after(t1, "miner2mqtt/bridge/event", |m| {
        m.json()["type"] == "miner_offline"
    });
    assert_eq!(offline, 0);
    let availability = rig
        .ha
        .messages()
        .iter()
        .rev()
        .find(|m| m.topic == "miner2mqtt/gamma/availability")
        .map(|m| m.text());
    assert_eq!(availability.as_deref(), Some("online"));

    // A setting sent to it is refused, saying why.
    let t2 = Instant::now();
    rig.ha
        .publish("miner2mqtt/gamma/set/frequency", "500")
        .await;
    let refused = event_where(&rig, t2, |e| e["type"] == "command_rejected").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("switched off at its plug"),
        "{refused}"
    );

    // Someone presses the plug's own button: it reports ON, and the keepalive switches it off
    // again with a plug_corrected event.
    let t3 = Instant::now();
    rig.ha.publish("cmnd/plug1/POWER", "ON").await;
    let corrected = event_where(&rig, t3, |e| e["type"] == "plug_corrected").await;
    assert_eq!(corrected["wanted"], "OFF");
    assert_eq!(corrected["was"], "ON");
    assert!(
        corrected["reason"]
            .as_str()
            .unwrap()
            .contains("gamma's plug was ON but OFF is wanted"),
        "{corrected}"
    );
    state_where(&rig, Instant::now(), |s| s["plug_power"] == "OFF").await;
    assert!(!dev.powered());

    // A restart remembers it is off: still not polled, still shown off.
    daemon.stop().await;
    let t4 = Instant::now();
    let daemon = Daemon::start(config);
    state_where(&rig, t4, |s| s["plug_power"] == "OFF").await;
    let requests = dev.snapshot().requests;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(dev.snapshot().requests, requests);

    // On again: it boots (failed polls while it does are expected) and hashes.
    let t5 = Instant::now();
    rig.ha.publish("miner2mqtt/gamma/set/power", "ON").await;
    let back = state_where(&rig, t5, |s| {
        s["hashrate"].as_f64().is_some_and(|h| h > 0.0)
    })
    .await;
    assert_eq!(back["plug_power"], "ON");
    assert!(dev.powered());
    let offline = rig.ha.count_after(t5, "miner2mqtt/bridge/event", |m| {
        m.json()["type"] == "miner_offline"
    });
    assert_eq!(offline, 0, "booting is not offline");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strategy_switches_a_plug_off_and_an_ha_switch_follows_the_api() {
    let rig = Rig::start(vec![
        DeviceSpec::new(1, Firmware::V2_12, BM1370, 1),
        DeviceSpec::new(2, Firmware::V2_12, BM1370, 1),
    ])
    .await;
    let ha = miner2mqtt::sim::ha::start(
        "127.0.0.1:0".parse().unwrap(),
        "secret-token",
        rig.cancel.clone(),
    )
    .await
    .unwrap();
    ha.add_switch("switch.gamma_plug", Some(rig.devs[0].clone()));
    miner2mqtt::sim::plug::start(
        "127.0.0.1",
        rig.broker.port,
        "plug2",
        rig.devs[1].clone(),
        rig.cancel.clone(),
    )
    .await
    .unwrap();
    let ha_url = format!("http://{}", ha.addr);
    let config = rig.config(&["gamma", "gamma-2"], |raw| {
        raw.miners[0].power = Some(
            serde_json::from_value(json!({ "ha": { "entity_id": "switch.gamma_plug" } })).unwrap(),
        );
        raw.miners[1].power = Some(
            serde_json::from_value(json!({ "mqtt": {
            "command_topic": "cmnd/plug2/POWER", "state_topic": "stat/plug2/POWER" } }))
            .unwrap(),
        );
        raw.ha.url = Some(ha_url.clone());
        raw.ha.token = Some(miner2mqtt::config::Secret::new("secret-token"));
        // A fixed 25 p/kWh: the "expensive" band, whose target is off.
        raw.energy = Some(
            serde_json::from_value(json!({
                "source": "schedule", "schedule": { "price": 25.0 },
                "safe_band": "expensive", "min_dwell": "0s",
                "bands": [
                    { "name": "normal", "below": 20, "target": { "default": "eco" } },
                    { "name": "expensive", "target": { "default": "off" } },
                ],
            }))
            .unwrap(),
        );
    });
    let t0 = Instant::now();
    let daemon = Daemon::start(config);
    // The strategy switches both plugs off (the HA one through the REST API).
    let applied = event_where(&rig, t0, |e| {
        e["type"] == "strategy_applied" && e["miner"] == "gamma"
    })
    .await;
    assert_eq!(applied["commands"], json!(["power OFF"]), "{applied}");
    let off = state_where(&rig, t0, |s| s["plug_power"] == "OFF").await;
    assert_eq!(off["hashrate"].as_f64(), Some(0.0));
    assert_eq!(ha.is_on("switch.gamma_plug"), Some(false));
    assert!(
        ha.calls()
            .contains(&"switch/turn_off switch.gamma_plug".to_string()),
        "{:?}",
        ha.calls()
    );
    assert!(!rig.devs[0].powered());
    rig.ha
        .wait_after(t0, "miner2mqtt/gamma-2/state", WAIT, |m| {
            m.json()["plug_power"] == "OFF"
        })
        .await;
    assert!(!rig.devs[1].powered());

    // The band decision is on record in the store, readable over a bridge request.
    rig.ha
        .publish("miner2mqtt/bridge/request/decisions", r#"{"hours": 1}"#)
        .await;
    let answer = rig
        .ha
        .wait_after(t0, "miner2mqtt/bridge/response/decisions", WAIT, |_| true)
        .await
        .json();
    let decisions = answer["data"].as_array().unwrap();
    assert!(
        decisions
            .iter()
            .any(|d| d["type"] == "band_changed" && d["to"] == "expensive" && d["at"].is_i64()),
        "{answer}"
    );

    // A user switching it on through miner2mqtt wins over the strategy and holds it off.
    let t1 = Instant::now();
    rig.ha.publish("miner2mqtt/gamma/set/power", "ON").await;
    let back = state_where(&rig, t1, |s| {
        s["hashrate"].as_f64().is_some_and(|h| h > 0.0)
    })
    .await;
    assert_eq!(back["plug_power"], "ON");
    assert!(back["strategy_hold"].is_string(), "{back}");
    assert_eq!(ha.is_on("switch.gamma_plug"), Some(true));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_ha_token_and_a_miner_without_a_plug_say_what_to_do() {
    let rig = Rig::start(vec![
        DeviceSpec::new(1, Firmware::V2_12, BM1370, 1),
        DeviceSpec::new(2, Firmware::V2_12, BM1370, 1),
    ])
    .await;
    let ha =
        miner2mqtt::sim::ha::start("127.0.0.1:0".parse().unwrap(), "right", rig.cancel.clone())
            .await
            .unwrap();
    ha.add_switch("switch.gamma_plug", Some(rig.devs[0].clone()));
    let ha_url = format!("http://{}", ha.addr);
    let config = rig.config(&["gamma", "gamma-2"], |raw| {
        raw.miners[0].power = Some(
            serde_json::from_value(json!({ "ha": { "entity_id": "switch.gamma_plug" } })).unwrap(),
        );
        raw.ha.url = Some(ha_url.clone());
        raw.ha.token = Some(miner2mqtt::config::Secret::new("wrong"));
    });
    let daemon = Daemon::start(config);
    state_where(&rig, Instant::now(), |s| {
        s["hashrate"].as_f64().is_some_and(|h| h > 0.0)
    })
    .await;
    let t1 = Instant::now();
    rig.ha.publish("miner2mqtt/gamma/set/power", "OFF").await;
    let failed = event_where(&rig, t1, |e| e["type"] == "command_failed").await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("refused the token"),
        "{failed}"
    );
    assert!(rig.devs[0].powered(), "nothing was switched");
    let t2 = Instant::now();
    rig.ha.publish("miner2mqtt/gamma-2/set/power", "OFF").await;
    let refused = event_where(&rig, t2, |e| e["type"] == "command_rejected").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("has no smart plug"),
        "{refused}"
    );
    rig.ha.publish("miner2mqtt/gamma/set/power", "maybe").await;
    let refused = event_where(&rig, t2, |e| {
        e["type"] == "command_rejected" && e["miner"] == "gamma"
    })
    .await;
    assert!(
        refused["reason"].as_str().unwrap().contains("ON or OFF"),
        "{refused}"
    );
    daemon.stop().await;
}
