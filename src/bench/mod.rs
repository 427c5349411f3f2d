//! `miner2mqtt bench`: the daemon's own cost while polling N simulated miners.
//!
//! The simulated miners run in one child process (`miner2mqtt simulate`) and the daemon in
//! another (`miner2mqtt run`), so the daemon's CPU time and peak RSS are read from /proc for its
//! process alone. A subscriber counts what reaches the broker. The bench uses its own base topic
//! and discovery prefix so it never adds devices to a real Home Assistant.

pub mod history;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `miner2mqtt bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// How many simulated miners.
    #[arg(long, default_value_t = 20)]
    pub miners: u32,
    /// Which family: axeos (ESP-Miner over HTTP) or avalon (cgminer over TCP); or `strategy`:
    /// the energy strategy's tick (bands, champion selection, targets) for that many miners,
    /// in process, no network; or `history`: the store's disk and query costs over a simulated
    /// `--duration` (such as 30d) of samples every `--interval`, in fast time.
    #[arg(long, default_value = "axeos")]
    pub kind: String,
    /// How often the daemon polls each miner.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How long to measure, after a warm-up of one interval.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The broker; an embedded one is started there if nothing answers.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: SocketAddr,
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("bad /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Peak resident memory of a process, MiB.
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmHWM")?
        .parse()?;
    Ok(kb / 1024.0)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.kind == "history" {
        return tokio::task::spawn_blocking(move || {
            history::run(args.miners, args.interval, args.duration)
        })
        .await?;
    }
    let _ = rlimit::increase_nofile_limit(args.miners as u64 * 3 + 4096);
    let exe = std::env::current_exe()?;
    let work = std::env::temp_dir().join(format!("miner2mqtt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    if !crate::demo::broker_answers(args.broker) {
        crate::demo::start_embedded_broker(args.broker)?;
        eprintln!("bench: started an embedded broker on {}", args.broker);
    }

    let n = args.miners.to_string();
    let sim_args: Vec<&str> = match args.kind.as_str() {
        "strategy" => {
            strategy_bench(args.miners as usize);
            return Ok(());
        }
        "axeos" => vec!["simulate", "--axeos", &n, "--firmware", "v2.12"],
        "avalon" => vec!["simulate", "--axeos", "0", "--avalon", &n],
        other => anyhow::bail!("--kind {other:?}: use axeos, avalon, strategy or history"),
    };
    eprintln!("bench: starting {n} simulated {} miners", args.kind);
    let mut sim = Kill(
        child(&exe)
            .args(&sim_args)
            .env("MINER2MQTT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the simulator process")?,
    );
    let stdout = sim.0.stdout.take().context("simulator stdout")?;
    let mut hosts = Vec::with_capacity(args.miners as usize);
    for line in BufReader::new(stdout).lines().take(args.miners as usize) {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        hosts.push(
            v["host"]
                .as_str()
                .context("simulator line without host")?
                .to_string(),
        );
    }
    anyhow::ensure!(
        hosts.len() == args.miners as usize,
        "the simulator started only {} miners",
        hosts.len()
    );

    let base = format!("m2mbench{}", std::process::id());
    eprintln!("bench: topics under {base}/ and {base}-ha/");
    let config = work.join("config.yaml");
    {
        let mut f = std::fs::File::create(&config)?;
        writeln!(f, "mqtt: {{ host: {}, port: {}, base_topic: {base}, discovery_prefix: {base}-ha, client_id: {base} }}", args.broker.ip(), args.broker.port())?;
        writeln!(f, "poll_interval: {}s", args.interval.as_secs_f64())?;
        writeln!(f, "request_timeout: 5s\nlog_level: warn")?;
        writeln!(f, "store: {{ path: {} }}", work.join("history").display())?;
        writeln!(f, "miners:")?;
        for (i, h) in hosts.iter().enumerate() {
            writeln!(f, "  - {{ name: m{i}, kind: {}, host: '{h}' }}", args.kind)?;
        }
    }

    let states = Arc::new(AtomicU64::new(0));
    let all = Arc::new(AtomicU64::new(0));
    let health: Arc<std::sync::Mutex<Option<serde_json::Value>>> = Arc::default();
    let mut options = MqttOptions::new(
        format!("{base}-counter"),
        args.broker.ip().to_string(),
        args.broker.port(),
    );
    // bridge/miners for a large fleet is megabytes.
    options.set_max_packet_size(crate::mqtt::MAX_PACKET, crate::mqtt::MAX_PACKET);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe(format!("{base}/#"), QoS::AtMostOnce)
        .await?;
    {
        let (states, all, health) = (states.clone(), all.clone(), health.clone());
        let response = format!("{base}/bridge/response/health_check");
        let resubscribe = client.clone();
        let filter = format!("{base}/#");
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = resubscribe.try_subscribe(filter.clone(), QoS::AtMostOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        all.fetch_add(1, Ordering::Relaxed);
                        if p.topic.ends_with("/state") {
                            states.fetch_add(1, Ordering::Relaxed);
                        } else if p.topic == response {
                            *health.lock().unwrap() = serde_json::from_slice(&p.payload).ok();
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
    }

    eprintln!(
        "bench: starting the daemon; warming up for {:?}",
        args.interval
    );
    let daemon = Kill(
        child(&exe)
            .args(["run", "--config"])
            .arg(&config)
            .env("MINER2MQTT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the daemon process")?,
    );
    let pid = daemon.0.id();
    let mut daemon = daemon;
    tokio::time::sleep(args.interval + Duration::from_secs(2)).await;
    if let Some(status) = daemon.0.try_wait()? {
        anyhow::bail!("the daemon exited during warm-up ({status}); its error is printed above");
    }

    let ask = |client: AsyncClient,
               health: Arc<std::sync::Mutex<Option<serde_json::Value>>>,
               base: String| async move {
        *health.lock().unwrap() = None;
        client
            .publish(
                format!("{base}/bridge/request/health_check"),
                QoS::AtLeastOnce,
                false,
                "{}",
            )
            .await?;
        for _ in 0..600 {
            if let Some(v) = health.lock().unwrap().clone() {
                let n = |k: &str| v["data"][k].as_u64().unwrap_or(0);
                return Ok::<_, anyhow::Error>((n("polls_ok"), n("polls_failed")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the daemon did not answer bridge/request/health_check")
    };
    let (ok0, failed0) = ask(client.clone(), health.clone(), base.clone()).await?;
    let cpu0 = cpu_seconds(pid)?;
    let states0 = states.load(Ordering::Relaxed);
    let all0 = all.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(args.duration).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let (ok1, failed1) = ask(client.clone(), health.clone(), base.clone()).await?;
    let polls = (ok1 - ok0) as f64;
    let failed = failed1 - failed0;
    let published = (states.load(Ordering::Relaxed) - states0) as f64;
    let msgs = (all.load(Ordering::Relaxed) - all0) as f64;
    let rss = peak_rss_mib(pid)?;
    drop(daemon);
    drop(sim);
    let _ = std::fs::remove_dir_all(&work);
    match clear_retained(args.broker, &[format!("{base}/#"), format!("{base}-ha/#")]).await {
        Ok(n) => eprintln!("bench: cleared {n} retained messages it left on the broker"),
        Err(e) => eprintln!("bench: could not clear its retained messages: {e}"),
    }

    let expected = args.miners as f64 / args.interval.as_secs_f64();
    println!("miners                 {} ({})", args.miners, args.kind);
    println!("poll interval          {:?}", args.interval);
    println!(
        "measured for           {secs:.0} s (after {:?} warm-up)",
        args.interval
    );
    println!(
        "polls per second       {:.1} (expected {expected:.1}); {failed} failed",
        polls / secs
    );
    println!("states received/s      {:.1}", published / secs);
    println!(
        "daemon CPU             {:.2} % of one core",
        cpu / secs * 100.0
    );
    println!(
        "CPU s per 1000 polls   {:.3}",
        if polls > 0.0 {
            cpu / polls * 1000.0
        } else {
            f64::NAN
        }
    );
    println!("daemon peak RSS        {rss:.1} MiB");
    println!("MQTT messages/s        {:.1}", msgs / secs);
    Ok(())
}

/// Removes the retained messages under `filters` (what the bench's daemon left on the broker):
/// every topic that arrives retained gets an empty retained payload. A broker hands a new
/// subscriber only so many messages at once (Mosquitto queues 1,000), so this goes round until a
/// round finds nothing. Returns how many were cleared.
async fn clear_retained(broker: SocketAddr, filters: &[String]) -> anyhow::Result<usize> {
    // A topic whose clearing is still in flight may be seen again next round: count each once.
    let mut cleared = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let round = clear_retained_once(broker, filters).await?;
        if round.is_empty() {
            break;
        }
        cleared.extend(round);
    }
    Ok(cleared.len())
}

async fn clear_retained_once(
    broker: SocketAddr,
    filters: &[String],
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut options = MqttOptions::new(
        format!("miner2mqtt-bench-clean-{}", std::process::id()),
        broker.ip().to_string(),
        broker.port(),
    );
    options.set_max_packet_size(crate::mqtt::MAX_PACKET, crate::mqtt::MAX_PACKET);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    for f in filters {
        client.subscribe(f.clone(), QoS::AtLeastOnce).await?;
    }
    let mut topics = std::collections::BTreeSet::new();
    // Retained messages arrive right after the subscription; two quiet seconds end the harvest.
    loop {
        match tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.retain && !p.payload.is_empty() => {
                topics.insert(p.topic);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("broker {broker}: {e}"),
            Err(_) => break,
        }
    }
    for f in filters {
        client.unsubscribe(f.clone()).await?;
    }
    let publisher = client.clone();
    let cleared = topics.clone();
    let send = tokio::spawn(async move {
        for topic in topics {
            publisher
                .publish(topic, QoS::AtLeastOnce, true, Vec::<u8>::new())
                .await?;
        }
        publisher.disconnect().await
    });
    // Drive the connection until the broker has closed it after our disconnect: rumqttc reports
    // the disconnect when it is queued, and dropping the connection then would lose the clearing
    // publishes still in its write buffer.
    let mut disconnecting = false;
    loop {
        let wait = if disconnecting { 2 } else { 30 };
        match tokio::time::timeout(Duration::from_secs(wait), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => disconnecting = true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    send.await??;
    Ok(cleared)
}

/// A child command that dies with the bench, however the bench ends (Ctrl-C included): no
/// orphaned simulator or daemon keeps publishing to the broker.
fn child(exe: &std::path::Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(exe);
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
}

/// Times the strategy's tick for `miners` miners with 6 hours of samples each: the tick that
/// enters the champion band (choosing the champion among all of them and applying every target),
/// then an hour of one tick a minute (a reconciliation every 5 minutes).
fn strategy_bench(miners: usize) {
    use crate::energy::bands::Band;
    use crate::energy::config::{EnergyConfig, Source};
    use crate::energy::prices::{PriceSlot, SlotKind};
    use crate::energy::strategy::{MinerInfo, MinerStatus, Strategy};
    use chrono::{DateTime, Duration as Span, Utc};
    use std::collections::BTreeMap;
    let band = |name: &str, below: Option<f64>, target: &str, champion: bool| Band {
        name: name.into(),
        below,
        target: BTreeMap::from([("default".to_string(), target.to_string())]),
        pool: None,
        champion,
    };
    let config = EnergyConfig {
        source: Some(Source::Mqtt),
        bands: vec![
            band("cheap", Some(12.0), "standard", false),
            band("normal", Some(20.0), "eco", false),
            band("expensive", None, "off", true),
        ],
        ..EnergyConfig::default()
    };
    let start: DateTime<Utc> = "2024-01-08T00:00:00Z".parse().expect("a time");
    let mut strategy = Strategy::new(config);
    // Cheap for six hours, then expensive.
    strategy.book_mut().insert((0..24).map(|i| PriceSlot {
        start: start + Span::minutes(30 * i),
        end: start + Span::minutes(30 * (i + 1)),
        p_per_kwh: if i < 12 { 10.0 } else { 25.0 },
        kind: SlotKind::Actual,
    }));
    let modes: Vec<String> = ["eco", "standard", "turbo"].map(String::from).to_vec();
    let names: Vec<String> = (0..miners).map(|i| format!("miner-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        strategy.on_info(MinerInfo {
            index: i,
            name: name.clone(),
            family: "axeos",
            modes: modes.clone(),
            roles: Vec::new(),
            can_pause: true,
            plug: false,
        });
    }
    let fed = Instant::now();
    // Six hours of samples, one every 30 s per miner, as the hub forwards them.
    let mut t = start;
    while t < start + Span::hours(6) {
        for i in 0..miners {
            let watts = 15.0 + (i % 97) as f64 * 0.05;
            strategy.on_status(MinerStatus {
                index: i,
                online: true,
                mode: Some(1),
                paused: Some(false),
                powered_off: false,
                sample: Some((t, Some(watts), Some(1000.0))),
            });
        }
        strategy.tick(t);
        t += Span::seconds(30);
    }
    let feed = fed.elapsed();
    let samples = miners * 720;
    let enter = Instant::now();
    let actions = strategy.tick(start + Span::hours(6));
    let enter = enter.elapsed();
    let mut times = Vec::new();
    for m in 1..=60 {
        let at = Instant::now();
        strategy.tick(start + Span::hours(6) + Span::minutes(m));
        times.push(at.elapsed());
    }
    times.sort();
    println!(
        "strategy, {miners} miners: feeding {samples} samples took {:.2} s ({:.2} µs each, ticks included)",
        feed.as_secs_f64(),
        feed.as_secs_f64() * 1e6 / samples as f64
    );
    println!(
        "  entering the champion band (champion chosen among {miners}, {} commands and events): {:.2} ms",
        actions.len(),
        enter.as_secs_f64() * 1e3
    );
    println!(
        "  an hour of ticks: median {:.3} ms, max {:.3} ms (a reconciliation every 5 minutes); champion {}",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        strategy.champion().unwrap_or("none")
    );
}
