//! Avalon Nano miners end to end: the cgminer simulator over real TCP, the daemon, Mosquitto.

mod common;

use common::*;
use miner2mqtt::config::MinerKind;
use miner2mqtt::miner::cgminer::CgminerClient;
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware};
use miner2mqtt::sim::cgminer::{self, AvalonFaults, AvalonSpec, Model};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_client_speaks_json_and_the_exact_plain_form_and_survives_truncation() {
    let cancel = tokio_util::sync::CancellationToken::new();
    let sim = cgminer::start(
        AvalonSpec::new(1, Model::Nano3s),
        "127.0.0.1:0".parse().unwrap(),
        cancel.clone(),
    )
    .await
    .unwrap();
    let api = CgminerClient::new(&sim.addr.to_string(), Duration::from_secs(2));
    // estats arrives with the firmware's dangling comma and still parses.
    let estats = api.request("estats", None).await.unwrap();
    assert!(estats["STATS"][0]["MM ID0"]
        .as_str()
        .unwrap()
        .contains("GHSspd"));
    let pools = api.request_plain("pools", None).await.unwrap();
    assert_eq!(pools[0]["STATUS"], "S");
    assert_eq!(pools[1]["URL"], "stratum+tcp://public-pool.io:21496");
    // The plain request went out as `pools`, with no trailing newline.
    assert!(sim.snapshot().commands.iter().any(|c| c == "pools"));
    let e = api.request("nonsense", None).await.unwrap_err();
    assert!(e.to_string().contains("Invalid command"), "{e}");
    sim.set_faults(AvalonFaults {
        truncate: true,
        ..Default::default()
    });
    let e = api.request("summary", None).await.unwrap_err();
    assert!(e.to_string().contains("summary"), "{e}");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avalon_appears_switches_mode_and_refuses_a_switch_while_calibrating() {
    let rig = Rig::start(vec![DeviceSpec::gamma(50, Firmware::V2_12)]).await;
    let mut spec = AvalonSpec::new(2, Model::Nano3s);
    spec.calibration = Duration::from_secs(30);
    let avalon = cgminer::start(spec, "127.0.0.1:0".parse().unwrap(), rig.cancel.clone())
        .await
        .unwrap();
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["gamma"], |r| {
        let mut m =
            miner2mqtt::config::RawMiner::new("nano", MinerKind::Avalon, &avalon.addr.to_string());
        m.admin_password = Some(miner2mqtt::config::Secret::new("admin"));
        r.miners.push(m);
    }));

    let topic = format!(
        "homeassistant/device/miner2mqtt/{}/config",
        avalon.mac_string()
    );
    let d = ha
        .wait_for(&topic, WAIT, |m| !m.payload.is_empty())
        .await
        .json();
    let cmps = d["cmps"].as_object().unwrap();
    assert_eq!(d["dev"]["mf"], "Canaan");
    assert_eq!(d["dev"]["mdl"], "Avalon Nano 3S");
    assert_eq!(
        cmps["mode"]["options"],
        serde_json::json!(["low", "medium", "high"])
    );
    assert_eq!(
        cmps["manual_fan_speed"]["min"], 20.0,
        "the larger of the firmware's 15 % and safety.min_fan_speed"
    );
    assert_eq!(
        cmps["pool_select"]["options"],
        serde_json::json!(["public-pool.io:21496", "solo.ckpool.org:3333"])
    );
    assert!(cmps.get("restart").is_some());
    for absent in [
        "frequency",
        "core_voltage",
        "vr_temp",
        "input_voltage",
        "rssi",
        "mining",
    ] {
        assert!(cmps.get(absent).is_none(), "an Avalon has no {absent}");
    }
    let state = ha
        .wait_for("miner2mqtt/nano/state", WAIT, |m| {
            m.json()["mode"] == "medium"
        })
        .await
        .json();
    assert!(state["power"].as_f64().unwrap() > 50.0);

    let sent = Instant::now();
    ha.publish("miner2mqtt/nano/set/mode", "high").await;
    ha.wait_after(sent, "miner2mqtt/nano/state", WAIT, |m| {
        m.json()["mode"] == "high"
    })
    .await;
    assert_eq!(avalon.snapshot().mode, 2);

    // A second switch during calibration: the firmware says no, and the user is told why.
    let sent = Instant::now();
    ha.publish("miner2mqtt/nano/set/mode", "low").await;
    let e = ha
        .wait_after(sent, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "command_failed"
        })
        .await
        .json();
    assert_eq!(e["miner"], "nano");
    assert!(e["reason"].as_str().unwrap().contains("calibrating"), "{e}");
    let state = ha
        .wait_after(sent, "miner2mqtt/nano/state", WAIT, |_| true)
        .await
        .json();
    assert_eq!(state["mode"], "high");
    assert_eq!(avalon.snapshot().mode, 2);

    // Fan below the firmware's floor is refused before it is sent.
    ha.publish("miner2mqtt/nano/set/fan_speed", "10").await;
    ha.wait_after(sent, "miner2mqtt/bridge/event", WAIT, |m| {
        m.json()["type"] == "command_rejected"
    })
    .await;
    assert!(!avalon
        .snapshot()
        .commands
        .iter()
        .any(|c| c.contains("fan-spd,10")));
    ha.publish("miner2mqtt/nano/set/fan_speed", "70").await;
    ha.wait_after(sent, "miner2mqtt/nano/state", WAIT, |m| {
        m.json()["auto_fan"] == false
    })
    .await;
    assert_eq!(avalon.snapshot().fan_manual, Some(70));

    // A garbled Avalon goes offline without stopping the Bitaxe beside it.
    let t0 = Instant::now();
    avalon.set_faults(AvalonFaults {
        truncate: true,
        ..Default::default()
    });
    ha.wait_after(t0, "miner2mqtt/nano/availability", WAIT, |m| {
        m.text() == "offline"
    })
    .await;
    let t1 = Instant::now();
    ha.wait_after(t1, "miner2mqtt/gamma/state", WAIT, |_| true)
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_antminer_appears_with_sensors_only_and_refuses_every_command() {
    let rig = Rig::start(vec![]).await;
    let s19 = cgminer::start(
        AvalonSpec::new(3, Model::S19pro),
        "127.0.0.1:0".parse().unwrap(),
        rig.cancel.clone(),
    )
    .await
    .unwrap();
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&[], |r| {
        r.miners.push(miner2mqtt::config::RawMiner::new(
            "s19",
            MinerKind::Antminer,
            &s19.addr.to_string(),
        ));
    }));
    let topic = format!(
        "homeassistant/device/miner2mqtt/antminer8144d5ca{}/config",
        s19.mac_string()
    );
    let d = ha
        .wait_for(&topic, WAIT, |m| !m.payload.is_empty())
        .await
        .json();
    assert_eq!(d["dev"]["mdl"], "Antminer S19 Pro");
    let cmps = d["cmps"].as_object().unwrap();
    for (key, c) in cmps {
        let p = c["p"].as_str().unwrap();
        // Its Alert event entity only reports, as sensors do.
        assert!(
            p == "sensor" || p == "binary_sensor" || p == "event",
            "{key} is a {p}: an Antminer gets sensors only"
        );
    }
    assert_eq!(cmps["chain2_hashrate"]["unit_of_measurement"], "GH/s");
    assert_eq!(cmps["chain2_temp"]["device_class"], "temperature");
    assert!(cmps.get("power").is_none() && cmps.get("fan_speed").is_none());
    // The duplicate keys bmminer sends in stats do not get in the way.
    let state = ha
        .wait_for("miner2mqtt/s19/state", WAIT, |m| {
            m.json()["chain1_hashrate"].is_number()
        })
        .await
        .json();
    assert!(state["hashrate"].as_f64().unwrap() > 100_000.0);
    assert_eq!(state["asic_temp"], 78.0);
    let sent = Instant::now();
    ha.publish("miner2mqtt/s19/set/frequency", "500").await;
    let e = ha
        .wait_after(sent, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "command_rejected"
        })
        .await
        .json();
    assert!(
        e["reason"].as_str().unwrap().contains("cannot be set"),
        "{e}"
    );
    assert!(s19
        .snapshot()
        .commands
        .iter()
        .all(|c| !c.starts_with("ascset")));
    daemon.stop().await;
}

#[tokio::test]
async fn the_adapter_joins_commands_and_falls_back_to_the_plain_form() {
    use miner2mqtt::miner::avalon::AvalonClient;
    let cancel = tokio_util::sync::CancellationToken::new();
    let sim = cgminer::start(
        AvalonSpec::new(9, Model::Nano3s),
        "127.0.0.1:0".parse().unwrap(),
        cancel.clone(),
    )
    .await
    .unwrap();
    let mut client = AvalonClient::new(&sim.addr.to_string(), Duration::from_secs(2), None);
    let r = client.poll().await.unwrap();
    assert!(r.telemetry.hashrate.unwrap() > 1000.0);
    assert!(
        sim.snapshot()
            .commands
            .iter()
            .any(|c| c == "summary+estats"),
        "one connection for both"
    );

    // Firmware whose JSON is beyond repair still answers the plain form.
    let broken = cgminer::start(
        AvalonSpec::new(10, Model::Nano3s),
        "127.0.0.1:0".parse().unwrap(),
        cancel.clone(),
    )
    .await
    .unwrap();
    broken.set_faults(AvalonFaults {
        broken_json: true,
        ..Default::default()
    });
    let mut client = AvalonClient::new(&broken.addr.to_string(), Duration::from_secs(2), None);
    let r = client.poll().await.unwrap();
    assert_eq!(
        r.identity.hardware_id.as_deref(),
        Some(broken.mac_string().as_str())
    );
    assert!(r.telemetry.hashrate.unwrap() > 1000.0);
    assert_eq!(r.telemetry.work_mode.as_deref(), Some("medium"));
    assert!(r.telemetry.power.is_some());
    cancel.cancel();
}

/// Issue 6.5: the Avalon Q, Canaan's home miner, as a Home Assistant device: its own modes
/// (eco / standard / super), the mining switch as standby (`softoff`/`softon`), and power that
/// is not read from the Nano's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avalon_q_goes_to_standby_from_the_mining_switch() {
    let rig = Rig::start(vec![DeviceSpec::gamma(51, Firmware::V2_12)]).await;
    let q = cgminer::start(
        AvalonSpec::new(11, Model::Q),
        "127.0.0.1:0".parse().unwrap(),
        rig.cancel.clone(),
    )
    .await
    .unwrap();
    let ha = &rig.ha;
    let daemon = Daemon::start(rig.config(&["gamma"], |r| {
        r.miners.push(miner2mqtt::config::RawMiner::new(
            "q",
            MinerKind::Avalon,
            &q.addr.to_string(),
        ));
    }));
    let topic = format!("homeassistant/device/miner2mqtt/{}/config", q.mac_string());
    let d = ha
        .wait_for(&topic, WAIT, |m| !m.payload.is_empty())
        .await
        .json();
    let cmps = d["cmps"].as_object().unwrap();
    assert_eq!(d["dev"]["mdl"], "Avalon Q");
    assert_eq!(
        cmps["mode"]["options"],
        serde_json::json!(["eco", "standard", "super"])
    );
    assert!(cmps.get("mining").is_some(), "the Q has a mining switch");
    let state = ha
        .wait_for("miner2mqtt/q/state", WAIT, |m| {
            m.json()["mode"] == "standard"
        })
        .await
        .json();
    assert_eq!(state["power"], 1674.0, "the output power, not PS slot 5");
    assert_eq!(state["paused"], false);

    let sent = Instant::now();
    ha.publish("miner2mqtt/q/set/mining", "OFF").await;
    let off = ha
        .wait_after(sent, "miner2mqtt/q/state", WAIT, |m| {
            m.json()["paused"] == true
        })
        .await
        .json();
    assert!(q.snapshot().soft_off);
    assert_eq!(off["hashrate"], 0.0);
    assert_eq!(
        off["power"],
        serde_json::Value::Null,
        "standby: not a PSU guess"
    );
    assert_eq!(
        off["asic_temp"],
        serde_json::Value::Null,
        "TAvg[0] is no reading"
    );
    assert!(q
        .snapshot()
        .commands
        .iter()
        .any(|c| c.starts_with("ascset|0,softoff,1:")));

    let sent = Instant::now();
    ha.publish("miner2mqtt/q/set/mining", "ON").await;
    ha.wait_after(sent, "miner2mqtt/q/state", WAIT, |m| {
        m.json()["paused"] == false && m.json()["hashrate"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    assert!(!q.snapshot().soft_off);
    daemon.stop().await;
}
