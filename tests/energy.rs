//! Energy end to end: the Octopus simulator over HTTP, simulated Bitaxes, a real Mosquitto, the
//! daemon — prices on the bridge, each miner in its band's mode, a user change holding the
//! strategy off, energy metered, prices kept through an Octopus outage and a restart.

mod common;

use chrono::{Duration as Span, Utc};
use common::*;
use miner2mqtt::energy::config::RawEnergy;
use miner2mqtt::sim::axeos::{DeviceSpec, Firmware, BM1370};
use miner2mqtt::sim::octopus::{self, Curve, Fault, OctopusSim};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn energy(base_url: &str) -> RawEnergy {
    serde_json::from_value(json!({
        "source": "octopus",
        "octopus": { "region": "J", "product": "auto", "base_url": base_url },
        "safe_band": "expensive",
        "min_dwell": "0s",
        "bands": [
            { "name": "negative", "below": 0, "target": { "default": "turbo" } },
            { "name": "cheap", "below": 12, "target": { "default": "standard" } },
            { "name": "normal", "below": 20, "target": { "default": "eco" } },
            { "name": "expensive", "below": 30, "target": { "default": "off" } },
            { "name": "peak", "target": { "default": "off" } },
        ],
    }))
    .unwrap()
}

/// Two Bitaxe Gammas on firmware that can pause, and the Octopus simulator at a flat 15 p/kWh
/// answering ten results per page (so discovery and rates both follow `next`; two days of
/// slots, 94, fit the adapter's 20 pages — with two per page the current slot fell off the
/// oldest end at some times of day).
async fn rig() -> (Rig, OctopusSim) {
    let rig = Rig::start(vec![
        DeviceSpec::new(1, Firmware::V2_15, BM1370, 1),
        DeviceSpec::new(2, Firmware::V2_15, BM1370, 1),
    ])
    .await;
    let sim = octopus::start(
        "127.0.0.1:0".parse().unwrap(),
        Curve::Flat(15.0),
        10,
        Box::new(Utc::now),
        rig.cancel.clone(),
    )
    .await
    .unwrap();
    (rig, sim)
}

fn state(rig: &Rig, miner: &str) -> Option<Value> {
    let topic = format!("miner2mqtt/{miner}/state");
    rig.ha
        .messages()
        .iter()
        .rev()
        .find(|m| m.topic == topic)
        .map(|m| m.json())
}

async fn mode_becomes(rig: &Rig, miner: &str, mode: &str) -> Value {
    rig.ha
        .wait_for(&format!("miner2mqtt/{miner}/state"), WAIT, |m| {
            m.json()["mode"] == mode
        })
        .await
        .json()
}

/// The first state of `miner` whose energy figure is above `floor`.
async fn energy_above(rig: &Rig, miner: &str, floor: f64) -> Value {
    rig.ha
        .wait_for(&format!("miner2mqtt/{miner}/state"), WAIT, |m| {
            m.json()["energy"].as_f64().is_some_and(|e| e > floor)
        })
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agile_prices_set_each_miners_mode_and_a_change_by_hand_holds_the_strategy_off() {
    let (rig, sim) = rig().await;
    let url = sim.base_url();
    let config = rig.config(&["gamma-1", "gamma-2"], |raw| {
        raw.energy = Some(energy(&url))
    });
    let daemon = Daemon::start(config);

    // 15 p/kWh is the "normal" band; the bridge shows it in GBP/kWh.
    let bridge = rig
        .ha
        .wait_for("miner2mqtt/bridge/energy", WAIT, |m| {
            m.json()["band"] == "normal"
        })
        .await
        .json();
    assert_eq!(bridge["price_now"], 0.15);
    assert_eq!(bridge["price_next"], 0.15);
    assert_eq!(bridge["strategy"], "ON");
    assert!(bridge["cheapest_1h"].is_string(), "{bridge}");
    assert!(
        bridge["source"].as_str().unwrap().contains("region J"),
        "{bridge}"
    );
    // The chart's slots: from the current one on, in order.
    let slots = rig
        .ha
        .wait_for("miner2mqtt/bridge/prices", WAIT, |m| {
            m.json()["slots"].as_array().is_some_and(|s| !s.is_empty())
        })
        .await
        .json();
    let slots = slots["slots"].as_array().unwrap();
    assert!(slots.len() >= 2, "{slots:?}");
    assert!(slots.windows(2).all(|w| w[0]["end"] == w[1]["start"]));
    assert_eq!(slots[0]["p_per_kwh"], 15.0);

    // Both miners go to eco, and the device really runs the eco preset.
    for (i, name) in ["gamma-1", "gamma-2"].iter().enumerate() {
        mode_becomes(&rig, name, "eco").await;
        let eco = miner2mqtt::miner::asic::profile("BM1370")
            .unwrap()
            .presets
            .iter()
            .find(|p| p.name == "eco")
            .copied()
            .unwrap();
        assert_eq!(rig.devs[i].snapshot().frequency, eco.frequency_mhz);
    }
    let applied = rig
        .ha
        .wait_for("miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "strategy_applied"
        })
        .await
        .json();
    assert_eq!(applied["band"], "normal");
    assert!(applied["reason"].as_str().unwrap().contains("normal"));

    // Discovery: prices on the bridge, energy, cost and the hold on each miner.
    let bridge_disco = rig
        .ha
        .wait_for("homeassistant/device/miner2mqtt/bridge/config", WAIT, |m| {
            m.json()["cmps"].get("price_now").is_some()
        })
        .await
        .json();
    let price = &bridge_disco["cmps"]["price_now"];
    assert_eq!(price["unit_of_measurement"], "GBP/kWh");
    assert!(price.get("device_class").is_none());
    assert_eq!(price["json_attributes_topic"], "miner2mqtt/bridge/prices");
    assert_eq!(bridge_disco["cmps"]["strategy"]["p"], "switch");
    let miner_disco = rig.discovery(0).await;
    let e = &miner_disco["cmps"]["energy"];
    assert_eq!(
        (
            &e["unit_of_measurement"],
            &e["device_class"],
            &e["state_class"]
        ),
        (&json!("kWh"), &json!("energy"), &json!("total_increasing"))
    );
    assert_eq!(
        miner_disco["cmps"]["cost_today"]["unit_of_measurement"],
        "GBP"
    );
    assert_eq!(
        miner_disco["cmps"]["strategy_hold"]["device_class"],
        "timestamp"
    );

    // The user sets turbo on gamma-1 by hand: it holds the strategy off for two hours.
    let before_hold = Instant::now();
    rig.ha.publish("miner2mqtt/gamma-1/set/mode", "turbo").await;
    let held = mode_becomes(&rig, "gamma-1", "turbo").await;
    let until: chrono::DateTime<Utc> = rig
        .ha
        .wait_after(before_hold, "miner2mqtt/gamma-1/state", WAIT, |m| {
            m.json()["strategy_hold"].is_string()
        })
        .await
        .json()["strategy_hold"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = until - Utc::now();
    assert!(
        left > Span::minutes(119) && left <= Span::minutes(120),
        "{left} ({held})"
    );

    // Prices pushed over MQTT make now expensive: gamma-2 stops at once; gamma-1 is held.
    let now = Utc::now();
    let start = now - Span::seconds(now.timestamp() % 1800);
    let pushed = json!([
        { "start": start.to_rfc3339(), "end": (start + Span::minutes(30)).to_rfc3339(), "value": 25.0 },
        { "start": (start + Span::minutes(30)).to_rfc3339(), "end": (start + Span::minutes(60)).to_rfc3339(), "value": 26.0 },
    ]);
    let pushed_at = Instant::now();
    rig.ha
        .publish("miner2mqtt/bridge/prices/set", &pushed.to_string())
        .await;
    let changed = rig
        .ha
        .wait_after(pushed_at, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "band_changed"
        })
        .await
        .json();
    assert_eq!(
        (&changed["from"], &changed["to"]),
        (&json!("normal"), &json!("expensive"))
    );
    assert_eq!(changed["price"], 25.0);
    rig.ha
        .wait_after(pushed_at, "miner2mqtt/gamma-2/state", WAIT, |m| {
            m.json()["paused"] == true
        })
        .await;
    assert!(rig.devs[1].snapshot().paused);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !rig.devs[0].snapshot().paused,
        "the held miner was left alone"
    );
    assert_eq!(state(&rig, "gamma-1").unwrap()["mode"], "turbo");

    // A bad push changes nothing and says why.
    rig.ha
        .publish(
            "miner2mqtt/bridge/prices/set",
            r#"[{"start":"yesterday","value":1}]"#,
        )
        .await;
    let refused = rig
        .ha
        .wait_for("miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "prices_rejected"
        })
        .await
        .json();
    assert!(
        refused["reason"].as_str().unwrap().contains("JSON list"),
        "{refused}"
    );

    // Energy is metered from the power samples and only goes up.
    let first = energy_above(&rig, "gamma-1", 0.0).await["energy"]
        .as_f64()
        .unwrap();
    let later = energy_above(&rig, "gamma-1", first).await;
    assert!(later["cost_today"].as_f64().unwrap() > 0.0, "{later}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_octopus_outage_and_a_restart_keep_the_known_prices_and_the_energy_total() {
    let (rig, sim) = rig().await;
    let url = sim.base_url();
    let config = || {
        rig.config(&["gamma-1", "gamma-2"], |raw| {
            raw.energy = Some(energy(&url))
        })
    };
    let daemon = Daemon::start(config());
    rig.ha
        .wait_for("miner2mqtt/bridge/energy", WAIT, |m| {
            m.json()["band"] == "normal"
        })
        .await;
    let energy_before = energy_above(&rig, "gamma-1", 0.0).await["energy"]
        .as_f64()
        .unwrap();
    daemon.stop().await;

    // The CDN in front of Octopus now answers 403 with an HTML page.
    sim.set_fault(Fault::ForbiddenHtml);
    rig.ha.clear();
    let asked = sim.requests();
    let daemon = Daemon::start(config());
    let failed = rig
        .ha
        .wait_for("miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "price_fetch_failed"
        })
        .await
        .json();
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("403") && reason.contains("HTML"),
        "{reason}"
    );
    assert!(sim.requests() > asked);
    // What the store kept is used: the band is the price's, not the safe band.
    let bridge = rig
        .ha
        .wait_for("miner2mqtt/bridge/energy", WAIT, |m| {
            m.json()["band"].is_string()
        })
        .await
        .json();
    assert_eq!(
        (&bridge["price_now"], &bridge["band"]),
        (&json!(0.15), &json!("normal"))
    );
    let events = rig.ha.messages();
    assert!(
        !events
            .iter()
            .any(|m| m.topic == "miner2mqtt/bridge/event" && m.json()["type"] == "price_missing"),
        "prices were known; none is missing"
    );
    // The energy total carries on from where it was.
    // (The first figure after the restart, whatever it is.)
    let after = energy_above(&rig, "gamma-1", f64::NEG_INFINITY).await["energy"]
        .as_f64()
        .unwrap();
    assert!(after >= energy_before, "{after} < {energy_before}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_octopus_adapter_follows_every_page_waits_for_publication_and_names_each_fault() {
    use miner2mqtt::energy::octopus::Octopus;
    let cancel = tokio_util::sync::CancellationToken::new();
    // The simulator's clock: 2024-01-08 (winter, UK = UTC), 15:00 until the test moves it on.
    let at = std::sync::Arc::new(std::sync::Mutex::new(
        "2024-01-08T15:00:00Z"
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
    ));
    let clock = at.clone();
    let sim = octopus::start(
        "127.0.0.1:0".parse().unwrap(),
        Curve::Agile,
        7,
        Box::new(move || *clock.lock().unwrap()),
        cancel.clone(),
    )
    .await
    .unwrap();
    let day = |d: &str| {
        let from: chrono::DateTime<Utc> = format!("{d}T00:00:00Z").parse().unwrap();
        (from, from + Span::days(1))
    };
    let now = *at.lock().unwrap();
    // The product comes from the (paginated) products list, the slots from 7 pages. At 15:00
    // Agile has published up to 23:00 today: 46 slots.
    let mut o = Octopus::new(&sim.base_url(), 'J', None);
    let (from, to) = day("2024-01-08");
    let slots = o.fetch(from, to, now).await.unwrap();
    assert_eq!(slots.len(), 46);
    assert_eq!(o.tariff(octopus::PRODUCT), "E-1R-AGILE-24-10-01-J");
    assert!(
        slots.windows(2).all(|w| w[0].end == w[1].start),
        "in order, no gaps"
    );
    assert_eq!(slots[0].start, from);
    assert_eq!(slots[45].end, from + Span::hours(23));
    let (next_from, next_to) = day("2024-01-09");
    assert!(o.fetch(next_from, next_to, now).await.unwrap().is_empty());
    // After 16:00 UK tomorrow's appear, up to 23:00, and today is whole.
    *at.lock().unwrap() = "2024-01-08T16:05:00Z".parse().unwrap();
    assert_eq!(o.fetch(from, to, now).await.unwrap().len(), 48);
    let tomorrow = o.fetch(next_from, next_to, now).await.unwrap();
    assert_eq!(tomorrow.len(), 46);
    let (from, to) = (next_from, next_to);
    // Faults are named for what they are.
    sim.set_fault(Fault::Unavailable);
    let e = o.fetch(from, to, now).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 503") && e.contains("unavailable"), "{e}");
    sim.set_fault(Fault::ForbiddenHtml);
    let e = o.fetch(from, to, now).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 403") && e.contains("HTML page"), "{e}");
    cancel.cancel();
}

/// Regression: with no `energy:` section the energy controller died at its first tick, and no
/// miner's energy was ever metered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_energy_section_each_miners_energy_is_still_metered() {
    let (rig, _sim) = rig().await;
    let daemon = Daemon::start(rig.config(&["gamma-1", "gamma-2"], |_| {}));
    let first = energy_above(&rig, "gamma-1", 0.0).await;
    assert!(first["cost_today"].is_null(), "no prices, no cost: {first}");
    assert!(first["strategy_hold"].is_null());
    let e = first["energy"].as_f64().unwrap();
    energy_above(&rig, "gamma-1", e).await;
    daemon.stop().await;
}

/// Regression: the strategy took an Avalon's work modes in the order of their codes, so a Mini 3
/// in an `eco` band (or left in its "lowest" mode) heated at 800 W in heating mode (code 0)
/// rather than running at 500 W in night mode (code 2). It now takes them least power first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mini_3_in_an_eco_band_runs_in_its_night_mode() {
    use miner2mqtt::sim::cgminer::{AvalonSpec, Model};
    let rig = Rig::start(vec![]).await;
    let (mini, entry) = avalon_beside(&rig, AvalonSpec::new(11, Model::Mini3), "mini").await;
    assert_eq!(mini.snapshot().mode, 1, "the simulator starts it mining");
    let daemon = Daemon::start(rig.config(&[], move |raw| {
        raw.energy = Some(
            serde_json::from_value(json!({
                "source": "schedule",
                "schedule": { "price": 15 },
                "min_dwell": "0s",
                "bands": [
                    { "name": "normal", "below": 20, "target": { "default": "eco" } },
                    { "name": "expensive", "target": { "default": "off" } },
                ],
            }))
            .unwrap(),
        );
        raw.miners.push(entry);
    }));
    let state = mode_becomes(&rig, "mini", "night").await;
    assert_eq!(state["mode"], "night");
    assert_eq!(mini.snapshot().mode, 2);
    assert!(
        !mini
            .snapshot()
            .commands
            .iter()
            .any(|c| c.contains("workmode,set,0")),
        "{:?}",
        mini.snapshot().commands
    );
    daemon.stop().await;
}
