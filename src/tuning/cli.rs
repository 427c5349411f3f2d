//! `miner2mqtt benchmark --miner NAME`: starts a sweep on a running daemon over MQTT (the same
//! `set/benchmark` a Home Assistant button sends), shows its progress as a bar, prints each step
//! (a clock, or an Avalon's work mode) and the result table. Ctrl-C stops the sweep (the daemon puts the miner's settings back).

use crate::config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the daemon has to say the sweep started.
const START_WAIT: Duration = Duration::from_secs(20);

/// A setting as the table shows it: "525 MHz / 1150 mV", or the work mode's name.
fn setting(s: &Value) -> String {
    match (s["frequency"].as_u64(), s["core_voltage"].as_u64()) {
        (Some(f), Some(v)) => format!("{f} MHz / {v} mV"),
        _ => match s["mode"].as_str() {
            Some(m) => format!("mode {m}"),
            None => "-".into(),
        },
    }
}

fn row(s: &Value) -> String {
    let f = |k: &str, d: usize| {
        s[k].as_f64()
            .map(|x| format!("{x:.d$}"))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{:>18} {:>10} {:>10} {:>7} {:>6} {:>7}  {}{}",
        setting(s),
        f("hashrate", 1),
        f("expected_hashrate", 1),
        f("j_per_th", 2),
        f("asic_temp", 1),
        f("error_percent", 2),
        s["outcome"].as_str().unwrap_or("-"),
        s["why"]
            .as_str()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    )
}

const HEADER: &str = "           setting  GH/s mean   expected    J/TH     °C  errors  outcome";

/// The result table: every step, then the best points.
pub fn table(steps: &[Value], finished: &Value) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for s in steps {
        out.push_str(&row(s));
        out.push('\n');
    }
    out.push_str(&format!(
        "\nended: {}\n",
        finished["reason"].as_str().unwrap_or("-")
    ));
    for (key, label) in [
        ("best_efficiency", "best efficiency"),
        ("best_hashrate", "best hashrate"),
        ("balanced", "balanced"),
    ] {
        let b = &finished[key];
        if b.is_object() {
            out.push_str(&format!(
                "{label:>16}: {}, {} GH/s, {} J/TH\n",
                setting(b),
                b["hashrate"],
                b["j_per_th"]
            ));
        } else {
            out.push_str(&format!("{label:>16}: none passed\n"));
        }
    }
    out.push_str(&format!(
        "        restored: {} (eco and turbo are now the chip's own)\n",
        setting(&finished["restored"])
    ));
    out
}

/// Runs a sweep of `miner` through the daemon at `config`'s broker and base topic; returns the
/// result table.
pub async fn run(config: &Config, miner: &str, stop: CancellationToken) -> anyhow::Result<String> {
    if !config.miners.iter().any(|m| m.name == miner) {
        let names: Vec<&str> = config.miners.iter().map(|m| m.name.as_str()).collect();
        anyhow::bail!(
            "no miner is named {miner:?} in the config; there are: {}",
            names.join(", ")
        );
    }
    let base = &config.mqtt.base_topic;
    let options = crate::mqtt::cli_options(&config.mqtt, "benchmark")?;
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let events = format!("{base}/bridge/event");
    let state = format!("{base}/{miner}/benchmark");
    let set = format!("{base}/{miner}/set/benchmark");
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos:>3}%  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut subscribed = 0;
    let mut started = false;
    let mut stopping = false;
    let mut steps: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled(), if started && !stopping => {
                stopping = true;
                bar.println("stopping the benchmark; the daemon puts the settings back…");
                client.publish(set.clone(), QoS::AtLeastOnce, false, "STOP").await?;
                continue;
            }
            _ = tokio::time::sleep_until(deadline), if !started => {
                anyhow::bail!("no answer from miner2mqtt on {}:{} (base topic {base:?}) within {}: is the daemon running with this config?",
                    config.mqtt.host, config.mqtt.port, humantime::format_duration(START_WAIT));
            }
            e = eventloop.poll() => e.map_err(|e| anyhow::anyhow!("the broker at {}:{}: {e}", config.mqtt.host, config.mqtt.port))?,
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                client.subscribe(events.clone(), QoS::AtLeastOnce).await?;
                client.subscribe(state.clone(), QoS::AtLeastOnce).await?;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                subscribed += 1;
                if subscribed == 2 {
                    client
                        .publish(set.clone(), QoS::AtLeastOnce, false, "START")
                        .await?;
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let v: Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                if p.topic == state {
                    // A retained state from an earlier sweep means nothing until this one starts.
                    if started && v["status"] == "running" {
                        bar.set_position(v["progress"].as_u64().unwrap_or(0));
                        bar.set_message(format!(
                            "step {}: {}, {} left",
                            v["step"],
                            setting(&v),
                            v["time_left"].as_str().unwrap_or("?")
                        ));
                    }
                    continue;
                }
                if v["miner"] != miner {
                    continue;
                }
                match v["type"].as_str() {
                    Some("command_rejected") if v["property"] == "benchmark" => {
                        bar.finish_and_clear();
                        anyhow::bail!(
                            "the benchmark was refused: {}",
                            v["reason"].as_str().unwrap_or("?")
                        );
                    }
                    Some("benchmark_started") => {
                        started = true;
                        bar.println(format!("benchmark of {miner} started"));
                        bar.println(HEADER);
                    }
                    Some("benchmark_step") if started => {
                        bar.println(row(&v));
                        steps.push(v);
                    }
                    Some("benchmark_finished") if started => {
                        bar.finish_and_clear();
                        let _ = client.disconnect().await;
                        return Ok(table(&steps, &v));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}
