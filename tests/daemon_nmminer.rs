//! NMMiner end to end: simulated devices broadcasting over real UDP on loopback addresses, the
//! daemon, Mosquitto.

mod common;

use common::*;
use miner2mqtt::config::{RawNmDevice, RawPool};
use miner2mqtt::sim::nmminer::{self, NmSpec};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nmminer_appears_from_its_broadcasts_takes_a_pool_and_expires_when_silent() {
    let rig = Rig::start(vec![]).await;
    let ha = &rig.ha;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port("127.0.0.1"))
        .parse()
        .unwrap();
    let config_port = free_udp_port("127.0.0.2");
    let spec = |ip: &str| NmSpec {
        ip: ip.parse().unwrap(),
        board: "NMLotto".into(),
        config_port,
        interval: Duration::from_millis(300),
    };
    let lotto = nmminer::start(spec("127.0.0.2"), listen, rig.cancel.clone())
        .await
        .unwrap();
    // A device that is not listed broadcasts too, and must be ignored.
    let _stranger = nmminer::start(spec("127.0.0.3"), listen, rig.cancel.clone())
        .await
        .unwrap();
    let daemon = Daemon::start(rig.config(&[], |r| {
        r.nmminer.listen = listen.to_string();
        r.nmminer.config_port = config_port;
        r.nmminer.expire_after = Duration::from_secs(2);
        r.nmminer.devices = vec![RawNmDevice {
            ip: "127.0.0.2".into(),
            name: Some("lotto".into()),
        }];
        r.pools = vec![RawPool {
            url: "solo.ckpool.org".into(),
            port: 3333,
            user: "bc1qexample.lotto".into(),
            password: None,
        }];
    }));

    let topic = "homeassistant/device/miner2mqtt/nm_127_0_0_2_nmlotto/config";
    let d = ha
        .wait_for(topic, WAIT, |m| !m.payload.is_empty())
        .await
        .json();
    let cmps = d["cmps"].as_object().unwrap();
    assert_eq!(d["dev"]["mdl"], "NMLotto");
    assert_eq!(cmps["hashrate_khs"]["unit_of_measurement"], "kH/s");
    assert_eq!(cmps["hashrate_khs"]["expire_after"], 2);
    assert_eq!(cmps["asic_temp"]["expire_after"], 2);
    // The configured pool, and the one the device is on (issue 6.2: a select's state must be
    // one of its options, or HA logs an error on every message).
    assert_eq!(
        cmps["pool_select"]["options"],
        serde_json::json!(["solo.ckpool.org:3333", "public-pool.io:21496"])
    );
    for absent in [
        "power",
        "frequency",
        "mode",
        "manual_fan_speed",
        "restart",
        "auto_fan",
        "hashrate",
    ] {
        assert!(cmps.get(absent).is_none(), "an NMMiner has no {absent}");
    }
    let state = ha
        .wait_for("miner2mqtt/lotto/state", WAIT, |m| {
            m.json()["hashrate_khs"].is_number()
        })
        .await
        .json();
    assert_eq!(state["pool"], "public-pool.io:21496");
    assert_eq!(state["uptime"].as_u64().map(|u| u >= 5026), Some(true));
    assert_eq!(state["best_difficulty"], 4.021e6);

    let sent = Instant::now();
    ha.publish("miner2mqtt/lotto/set/pool", "solo.ckpool.org:3333")
        .await;
    ha.wait_after(sent, "miner2mqtt/lotto/state", WAIT, |m| {
        m.json()["pool"] == "solo.ckpool.org:3333"
    })
    .await;
    assert_eq!(lotto.pool(), "solo.ckpool.org:3333");
    assert!(
        !ha.messages()
            .iter()
            .any(|m| m.topic.contains("nm_127_0_0_3")),
        "an unlisted NMMiner was added"
    );

    let quiet = Instant::now();
    lotto.set_silent(true);
    let off = ha
        .wait_after(quiet, "miner2mqtt/lotto/availability", WAIT, |m| {
            m.text() == "offline"
        })
        .await;
    assert!(
        off.at.duration_since(quiet) >= Duration::from_millis(1500),
        "expired only after the silence"
    );
    let e = ha
        .wait_after(quiet, "miner2mqtt/bridge/event", WAIT, |m| {
            m.json()["type"] == "miner_offline"
        })
        .await
        .json();
    assert!(e["error"].as_str().unwrap().contains("no broadcast"), "{e}");
    let back = Instant::now();
    lotto.set_silent(false);
    ha.wait_after(back, "miner2mqtt/lotto/availability", WAIT, |m| {
        m.text() == "online"
    })
    .await;
    daemon.stop().await;
}
