//! The watchdog and alerts end to end: simulated Bitaxes over real HTTP whose rooms warm up or
//! whose chips stall, a real Mosquitto, and what Home Assistant would see — the miner stepped
//! down or put on its safe profile, a user's raise refused with the reason during the safety
//! hold and accepted after it, restarts no more often than the cap, alerts on the miner's event
//! entity and its Problem sensor.

mod common;

use common::*;
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A Gamma whose temperature follows its power within about a second, so thermal tests run in
/// seconds rather than minutes.
fn quick_gamma(n: u32) -> DeviceSpec {
    let mut spec = DeviceSpec::gamma(n, Firmware::V2_15);
    spec.thermal_tau_s = 1.0;
    spec.restart_time = Duration::from_millis(500);
    spec
}

fn events(rig: &Rig, since: Instant, kind: &str) -> Vec<Value> {
    rig.ha
        .messages()
        .iter()
        .filter(|m| m.at >= since && m.topic == "miner2mqtt/bridge/event")
        .map(|m| m.json())
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_room_steps_the_miner_down_and_the_hold_refuses_a_raise_until_it_has_cooled() {
    let rig = Rig::start(vec![quick_gamma(1)]).await;
    let dev = &rig.devs[0];
    let config = rig.config(&["gamma"], |raw| {
        raw.safety.hold = Duration::from_secs(3);
    });
    let daemon = Daemon::start(config);
    let state = "miner2mqtt/gamma/state";
    rig.ha
        .wait_for(state, WAIT, |m| m.json()["frequency"] == 525.0)
        .await;
    let disco = rig.discovery(0).await;
    let cmps = &disco["cmps"];
    assert_eq!(cmps["problem"]["p"], "binary_sensor");
    assert_eq!(cmps["problem"]["device_class"], "problem");
    assert_eq!(cmps["safety_hold"]["p"], "binary_sensor");
    assert_eq!(cmps["alert"]["p"], "event");
    assert_eq!(cmps["alert"]["state_topic"], "miner2mqtt/gamma/alert");
    assert!(cmps["alert"]["event_types"]
        .as_array()
        .unwrap()
        .contains(&"overheating".into()));

    // The fan set by hand to 60 %; then a heatwave: at 42 °C ambient the chip settles near
    // 67 °C, above temp_limit (65) and below the firmware's own trip (70), and a step or two
    // down brings it below 65 °C.
    rig.ha.publish("miner2mqtt/gamma/set/fan_speed", "60").await;
    rig.ha
        .wait_for(state, WAIT, |m| m.json()["fan_speed"] == 60.0)
        .await;
    let t0 = Instant::now();
    dev.set_ambient(42.0);
    let hold = rig
        .ha
        .wait_after(t0, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "safety_hold"
        })
        .await
        .json();
    assert_eq!(hold["miner"], "gamma");
    rig.ha
        .wait_after(t0, state, WAIT, |m| m.json()["safety_hold"] == true)
        .await;
    // Stepped down until it is below 65 °C, one step per poll, never below the lowest allowed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = dev.snapshot();
        if s.temp < 65.0 && s.frequency < 525 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still at {} °C, {} MHz",
            s.temp,
            s.frequency
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Below the limit the watchdog stops; what it sent has been applied.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steps = events(&rig, t0, "watchdog_action");
    assert!(!steps.is_empty());
    for e in &steps {
        assert_eq!(e["action"], "step_down", "{e}");
        assert!(e["asic_temp"].as_f64().unwrap() >= 65.0, "{e}");
    }
    let applied: Vec<Value> = events(&rig, t0, "command_applied")
        .into_iter()
        .filter(|e| e["origin"] == "safety")
        .collect();
    assert_eq!(applied.len(), steps.len(), "{applied:?}");
    assert!(dev.snapshot().frequency >= 400);
    assert!(!dev.snapshot().overheat, "the firmware never had to trip");

    // The user's raise is refused, with the reason, while the hold lasts; a lower one goes.
    let stepped = dev.snapshot().frequency;
    let t1 = Instant::now();
    rig.ha
        .publish("miner2mqtt/gamma/set/frequency", "600")
        .await;
    let refused = rig
        .ha
        .wait_after(t1, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "command_rejected"
        })
        .await
        .json();
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("thermal watchdog") && reason.contains("60 °C"),
        "{reason}"
    );
    assert_eq!(refused["origin"], "user");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dev.snapshot().frequency, stepped, "nothing was sent");

    // A restart does not release a hot miner: the new daemon holds it still.
    daemon.stop().await;
    let restarted = Instant::now();
    let daemon = Daemon::start(rig.config(&["gamma"], |raw| {
        raw.safety.hold = Duration::from_secs(3);
    }));
    rig.ha
        .wait_after(restarted, "miner2mqtt/bridge/state", WAIT, |m| {
            m.text() == "online"
        })
        .await;
    rig.ha
        .wait_after(restarted, state, WAIT, |m| m.json()["safety_hold"] == true)
        .await;
    let t2 = Instant::now();
    rig.ha
        .publish("miner2mqtt/gamma/set/frequency", "600")
        .await;
    let refused = rig
        .ha
        .wait_after(t2, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "command_rejected"
        })
        .await
        .json();
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("thermal watchdog"),
        "{refused}"
    );
    assert_eq!(dev.snapshot().frequency, stepped, "nothing was sent");

    // The room cools; 3 s below 60 °C ends the hold, and the same raise goes through.
    dev.set_ambient(20.0);
    let released = rig
        .ha
        .wait_after(
            t1,
            "miner2mqtt/bridge/event",
            Duration::from_secs(30),
            |m| m.json()["type"] == "safety_hold_released",
        )
        .await
        .json();
    assert!(
        released["reason"].as_str().unwrap().contains("3s"),
        "{released}"
    );
    rig.ha
        .wait_after(t1, state, WAIT, |m| m.json()["safety_hold"] == false)
        .await;
    rig.ha
        .publish("miner2mqtt/gamma/set/frequency", "600")
        .await;
    rig.ha
        .wait_for(state, WAIT, |m| m.json()["frequency"] == 600.0)
        .await;
    assert_eq!(dev.snapshot().frequency, 600);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overheating_puts_the_safe_profile_on_pauses_alerts_and_resumes_once_cool() {
    let rig = Rig::start(vec![quick_gamma(2)]).await;
    let dev = &rig.devs[0];
    // Thresholds below what the chip runs at in a 24 °C room (about 59 °C), so it overheats at
    // once; on eco it still runs near 56 °C, so the watchdog pauses it.
    let config = rig.config(&["gamma"], |raw| {
        raw.safety.temp_limit = 50.0;
        raw.safety.temp_overheat = 55.0;
        raw.safety.hold = Duration::from_secs(2);
    });
    let t0 = Instant::now();
    let daemon = Daemon::start(config);
    let safe = rig
        .ha
        .wait_after(t0, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["action"] == "safe_profile"
        })
        .await
        .json();
    assert_eq!(safe["command"], "mode eco", "{safe}");
    let alert = rig
        .ha
        .wait_for("miner2mqtt/gamma/alert", WAIT, |m| {
            m.json()["event_type"] == "overheating"
        })
        .await;
    assert!(!alert.retain, "an alert happens once: not retained");
    assert!(
        alert.json()["message"].as_str().unwrap().contains("°C"),
        "{}",
        alert.text()
    );
    rig.ha
        .wait_for("miner2mqtt/gamma/state", WAIT, |m| {
            let s = m.json();
            s["problem"] == true
                && s["problems"]
                    .as_array()
                    .unwrap()
                    .contains(&"overheating".into())
        })
        .await;
    rig.ha
        .wait_after(
            t0,
            "miner2mqtt/bridge/event",
            Duration::from_secs(30),
            |m| m.json()["action"] == "pause",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dev.snapshot().paused {
        assert!(Instant::now() < deadline, "not paused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = dev.snapshot();
    assert_eq!((s.frequency, s.core_voltage), (400, 1060), "eco");
    // Paused, it cools below 45 °C; 2 s later the hold ends and mining resumes on eco.
    rig.ha
        .wait_after(
            t0,
            "miner2mqtt/bridge/event",
            Duration::from_secs(40),
            |m| m.json()["action"] == "resume",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while dev.snapshot().paused {
        assert!(Instant::now() < deadline, "not resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One overheating alert, not one per poll.
    let alerts = rig
        .ha
        .messages()
        .iter()
        .filter(|m| m.topic == "miner2mqtt/gamma/alert" && m.json()["event_type"] == "overheating")
        .count();
    assert_eq!(alerts, 1);
    // The actions are on record.
    rig.ha.clear();
    rig.ha
        .publish("miner2mqtt/bridge/request/decisions", r#"{"hours": 1}"#)
        .await;
    let answer = rig
        .ha
        .wait_for("miner2mqtt/bridge/response/decisions", WAIT, |_| true)
        .await
        .json();
    let kept: Vec<&str> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["action"].as_str())
        .collect();
    assert!(
        kept.contains(&"safe_profile") && kept.contains(&"pause") && kept.contains(&"resume"),
        "{kept:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_chip_is_restarted_no_more_often_than_the_cap_then_left_alone() {
    let rig = Rig::start(vec![quick_gamma(3), quick_gamma(4)]).await;
    let config = rig.config(&["stuck", "cured"], |raw| {
        raw.safety.zero_hashrate_polls = 3;
        raw.safety.max_restarts_per_hour = 2;
        raw.safety.boot_grace = Duration::from_secs(0);
        // A restart takes the simulated device away for half a second: not offline.
        raw.offline_after = 5;
    });
    let daemon = Daemon::start(config);
    for name in ["stuck", "cured"] {
        rig.ha
            .wait_for(&format!("miner2mqtt/{name}/state"), WAIT, |m| {
                m.json()["hashrate"].as_f64().is_some_and(|h| h > 0.0)
            })
            .await;
    }
    let t0 = Instant::now();
    rig.devs[0].stall(true);
    rig.devs[1].stall(false);
    let gave_up = rig
        .ha
        .wait_after(
            t0,
            "miner2mqtt/bridge/event",
            Duration::from_secs(40),
            |m| m.json()["type"] == "watchdog_gave_up",
        )
        .await
        .json();
    assert_eq!(gave_up["miner"], "stuck");
    assert!(
        gave_up["reason"]
            .as_str()
            .unwrap()
            .contains("max_restarts_per_hour"),
        "{gave_up}"
    );
    // Left alone: no third restart.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(rig.devs[0].snapshot().restarts, 2);
    let restarts = |miner: &str| {
        events(&rig, t0, "watchdog_action")
            .iter()
            .filter(|e| e["miner"] == miner && e["action"] == "restart")
            .count()
    };
    assert_eq!(restarts("stuck"), 2);
    // The other chip was cured by its one restart and hashes again.
    assert_eq!(restarts("cured"), 1);
    assert_eq!(rig.devs[1].snapshot().restarts, 1);
    assert!(rig.devs[1].snapshot().hashrate > 0.0);
    // The watchdog alert fired once per miner (the cooldown holds the rest back), and the
    // stuck miner has a problem.
    let watchdog_alerts = rig
        .ha
        .messages()
        .iter()
        .filter(|m| m.topic == "miner2mqtt/stuck/alert" && m.json()["event_type"] == "watchdog")
        .count();
    assert_eq!(watchdog_alerts, 1);
    rig.ha
        .wait_after(t0, "miner2mqtt/stuck/state", WAIT, |m| {
            m.json()["problems"]
                .as_array()
                .is_some_and(|p| p.contains(&"watchdog".into()))
        })
        .await;
    daemon.stop().await;
}

/// Regression: the watchdog took an Avalon's work modes in the order of their codes, so an
/// overheating Mini 3 was put in heating mode (code 0, 800 W) rather than night mode (code 2,
/// 500 W), and a step down from night went to mining (850 W). It now steps by power.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overheating_mini_3_goes_to_its_night_mode_the_one_that_draws_least() {
    use miner2mqtt::sim::cgminer::{AvalonSpec, Model};
    let rig = Rig::start(vec![]).await;
    let (mini, entry) = avalon_beside(&rig, AvalonSpec::new(9, Model::Mini3), "mini").await;
    assert_eq!(mini.snapshot().mode, 1, "the simulator starts it mining");
    let t0 = Instant::now();
    let daemon = Daemon::start(rig.config(&[], move |r| {
        // Mining reads 75 °C on average in the simulator, night 65 °C.
        r.safety.avalon.temp_limit = 70.0;
        r.safety.avalon.temp_overheat = 74.0;
        r.miners.push(entry);
    }));
    let deadline = Instant::now() + WAIT;
    while mini.snapshot().mode != 2 {
        assert!(
            Instant::now() < deadline,
            "the Mini 3 is in mode {}, not night (2); events: {:?}",
            mini.snapshot().mode,
            events(&rig, t0, "watchdog_action")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The event may reach the broker after the device has switched.
    let action = rig
        .ha
        .wait_after(t0, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "watchdog_action"
        })
        .await
        .json();
    assert_eq!(action["miner"], "mini", "{action}");
    assert!(
        !mini
            .snapshot()
            .commands
            .iter()
            .any(|c| c.contains("workmode,set,0")),
        "never through heating mode: {:?}",
        mini.snapshot().commands
    );
    daemon.stop().await;
}
