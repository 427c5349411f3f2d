//! The command line. Parses arguments, installs tracing, loads config, and calls the library.

use clap::{Parser, Subcommand};
use miner2mqtt::energy::show as prices;
use miner2mqtt::{bench, config, daemon, demo, sim};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

#[derive(Parser)]
#[command(
    name = "miner2mqtt",
    version,
    about = "Home bitcoin miners as Home Assistant devices over MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// The configuration file (YAML). Environment variables MINER2MQTT_* override it.
        #[arg(long, short, env = "MINER2MQTT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run everything with simulated miners: no hardware needed.
    Demo {
        /// The broker to use (default 127.0.0.1:1883, or the one in --config); with neither
        /// --config nor MINER2MQTT_MQTT__* set, an embedded one is started there if nothing
        /// answers.
        #[arg(long)]
        broker: Option<SocketAddr>,
        /// Take the broker, credentials and TLS settings from this file's mqtt: section (the
        /// miners are the demo's own). MINER2MQTT_MQTT__* variables work too.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How often the demo polls its simulated miners.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// Do not print the live table.
        #[arg(long)]
        no_table: bool,
    },
    /// Start simulated miners only; prints one JSON line per device with its address.
    Simulate {
        /// How many Bitaxe-style ESP-Miner devices.
        #[arg(long, default_value_t = 1)]
        axeos: u32,
        /// Their firmware generation: v2.10, v2.12, v2.15 or nerdqaxe.
        #[arg(long, default_value = "v2.12")]
        firmware: sim::axeos::Firmware,
        /// Their ASIC: BM1370, BM1368 or BM1366.
        #[arg(long, default_value = "BM1370")]
        asic: String,
        /// First port; devices take consecutive ports. Free ports when omitted.
        #[arg(long)]
        base_port: Option<u16>,
        /// How many Avalon Nano devices (cgminer API), on free ports.
        #[arg(long, default_value_t = 0)]
        avalon: u32,
        /// Their model: nano3, nano3s, mini3, q (or s19pro, an Antminer).
        #[arg(long, default_value = "nano3s")]
        avalon_model: sim::cgminer::Model,
        /// Also start a simulated Octopus Energy API (for energy.octopus.base_url).
        #[arg(long)]
        octopus: bool,
        /// Its port (a free one when omitted).
        #[arg(long, default_value_t = 0)]
        octopus_port: u16,
    },
    /// Print the known price slots of a day, marking the current one.
    Prices {
        #[arg(long, short, env = "MINER2MQTT_CONFIG")]
        config: Option<PathBuf>,
        /// A time in the day to show (RFC 3339); now when omitted.
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value = "table")]
        format: prices::Format,
    },
    /// Replay recorded price days: energy, cost and terahashes per strategy against the limit.
    Replay {
        /// Price files: Octopus standard-unit-rates pages, or [{"start","end","value"}] lists.
        #[arg(long, required = true, num_args = 1..)]
        prices: Vec<PathBuf>,
        /// A config whose miners and bands to replay (the demo's when omitted).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "table")]
        format: miner2mqtt::energy::replay::Format,
    },
    /// Benchmark a miner's chip through the running daemon: a sweep of frequency and core
    /// voltage with a progress bar, then the result table. Ctrl-C stops it (its settings go back).
    Benchmark {
        /// The miner, by its name in the config.
        #[arg(long, short)]
        miner: String,
        /// The daemon's configuration (for the broker and the base topic).
        #[arg(long, short, env = "MINER2MQTT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Which settings are best for each chip: per clock config the runtime, samples, sessions
    /// and mean/median/stddev/p5/p95 of hashrate, power, temperature and J/TH, with
    /// recommendations on the Pareto front. Reads the history, or asks the running daemon.
    Report(miner2mqtt::report::cli::ReportArgs),
    /// A miner's raw samples as CSV or JSON (from the history, or from the running daemon).
    Export(miner2mqtt::report::cli::ExportArgs),
    /// Measure the daemon's cost polling N simulated miners (see docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
}

fn install_tracing(default: &str) -> daemon::LogControl {
    let filter = EnvFilter::try_from_env("MINER2MQTT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,miner2mqtt={default}")));
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(
            // Logs go to stderr: stdout is for output scripts read (simulate's JSON lines).
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_writer(std::io::stderr),
        )
        .init();
    Arc::new(move |level: &str| {
        handle
            .reload(EnvFilter::new(format!("warn,miner2mqtt={level}")))
            .map_err(|e| e.to_string())
    })
}

/// Cancels the token on SIGINT or SIGTERM.
fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        token.cancel();
    });
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The daemon runs on one thread: its work is short, non-blocking and mostly the network, and
    // one thread saves the cross-thread wake-ups a work-stealing pool pays on every poll (see
    // docs/BENCHMARKS.md). The demo and the bench run simulators too, and use every core.
    let runtime = match cli.command {
        Cmd::Run { .. } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(rt) => rt.block_on(async_main(cli)),
        Err(e) => {
            eprintln!("miner2mqtt: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn async_main(cli: Cli) -> std::process::ExitCode {
    let result = match cli.command {
        Cmd::Run { config } => run(config).await,
        Cmd::Demo {
            broker,
            config,
            poll_interval,
            no_table,
        } => {
            install_tracing("warn");
            let token = CancellationToken::new();
            on_signal(token.clone());
            let env_given = std::env::vars().any(|(k, _)| k.starts_with("MINER2MQTT_MQTT__"));
            let mqtt = if config.is_some() || env_given {
                match config::load_mqtt(config.as_deref()) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        eprintln!("miner2mqtt: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            } else {
                None
            };
            demo::run(
                demo::DemoOptions {
                    broker,
                    mqtt,
                    poll_interval,
                    table: !no_table,
                },
                token,
            )
            .await
        }
        Cmd::Simulate {
            axeos,
            firmware,
            asic,
            base_port,
            avalon,
            avalon_model,
            octopus,
            octopus_port,
        } => {
            install_tracing("info");
            let octopus = octopus.then_some(octopus_port);
            simulate(
                axeos,
                firmware,
                &asic,
                base_port,
                avalon,
                avalon_model,
                octopus,
            )
            .await
        }
        Cmd::Replay {
            prices,
            config,
            format,
        } => {
            install_tracing("warn");
            miner2mqtt::energy::replay::run(&prices, config.as_deref(), format)
        }
        Cmd::Prices { config, at, format } => {
            install_tracing("warn");
            prices::run(config, at, format).await
        }
        Cmd::Bench(args) => {
            install_tracing("warn");
            bench::run(args).await
        }
        Cmd::Benchmark { miner, config } => {
            install_tracing("warn");
            benchmark(config, &miner).await
        }
        Cmd::Report(args) => {
            install_tracing("warn");
            print_result(load_config(args.config.clone()), |c| async move {
                miner2mqtt::report::cli::report(&c, &args).await
            })
            .await
        }
        Cmd::Export(args) => {
            install_tracing("warn");
            print_result(load_config(args.config.clone()), |c| async move {
                miner2mqtt::report::cli::export(&c, &args).await
            })
            .await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("miner2mqtt: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `f` on the loaded config and prints what it returns.
async fn print_result<F, Fut>(config: anyhow::Result<config::Config>, f: F) -> anyhow::Result<()>
where
    F: FnOnce(config::Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    print!("{}", f(config?).await?);
    Ok(())
}

/// The config at `path`, or `config.yaml` when there is one.
fn load_config(path: Option<PathBuf>) -> anyhow::Result<config::Config> {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from("config.yaml"));
    Ok(config::load(&path, explicit)?)
}

async fn benchmark(path: Option<PathBuf>, miner: &str) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let token = CancellationToken::new();
    on_signal(token.clone());
    let table = miner2mqtt::tuning::cli::run(&config, miner, token).await?;
    print!("{table}");
    Ok(())
}

async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from("config.yaml"));
    let first = config::load(&path, explicit)?;
    let control = install_tracing(&first.log_level);
    if first.miners.is_empty() {
        tracing::warn!(config = %path.display(), "no miners are configured; add them under miners:");
    }
    // One socket per poll in flight; large fleets need more than the default 1024.
    let _ = rlimit::increase_nofile_limit(first.miners.len() as u64 * 2 + 1024);
    let token = CancellationToken::new();
    on_signal(token.clone());
    let mut config = first;
    loop {
        match daemon::run(config, token.clone(), Some(control.clone())).await? {
            daemon::Exit::Stopped => return Ok(()),
            daemon::Exit::Restart => {
                tracing::info!("restarting");
                config = config::load(&path, explicit)?;
                let _ = control(&config.log_level);
            }
        }
    }
}

async fn simulate(
    count: u32,
    firmware: sim::axeos::Firmware,
    asic: &str,
    base_port: Option<u16>,
    avalons: u32,
    avalon_model: sim::cgminer::Model,
    octopus: Option<u16>,
) -> anyhow::Result<()> {
    let chip = match asic.to_ascii_uppercase().as_str() {
        "BM1370" => sim::axeos::BM1370,
        "BM1368" => sim::axeos::BM1368,
        "BM1366" => sim::axeos::BM1366,
        other => anyhow::bail!("unknown ASIC {other:?}: use BM1370, BM1368 or BM1366"),
    };
    let chips = if firmware == sim::axeos::Firmware::Nerdqaxe {
        4
    } else {
        1
    };
    let _ = rlimit::increase_nofile_limit((count + avalons) as u64 * 3 + 1024);
    let token = CancellationToken::new();
    on_signal(token.clone());
    let specs = (0..count)
        .map(|i| sim::axeos::DeviceSpec::new(i + 1, firmware, chip, chips))
        .collect();
    let devices = sim::start_axeos_fleet(specs, base_port, &token).await?;
    let mut nanos = Vec::new();
    for i in 0..avalons {
        let spec = sim::cgminer::AvalonSpec::new(i + 1, avalon_model);
        nanos.push(sim::cgminer::start(spec, "127.0.0.1:0".parse()?, token.clone()).await?);
    }
    let octopus = match octopus {
        Some(port) => Some(
            sim::octopus::start(
                SocketAddr::from(([127, 0, 0, 1], port)),
                sim::octopus::Curve::Agile,
                100,
                Box::new(chrono::Utc::now),
                token.clone(),
            )
            .await?,
        ),
        None => None,
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Some(o) = &octopus {
            let line = serde_json::json!({ "kind": "octopus", "base_url": o.base_url() });
            writeln!(out, "{line}")?;
        }
        for d in &devices {
            writeln!(out, "{}", sim::describe(d))?;
        }
        for n in &nanos {
            let line = serde_json::json!({
                "kind": "avalon",
                "model": n.spec.model,
                "mac": n.mac_string(),
                "host": n.addr.to_string(),
            });
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    token.cancelled().await;
    Ok(())
}
