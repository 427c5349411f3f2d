//! The fleet: one poller task per miner. Each task owns its adapter, polls on a jittered
//! interval, and drains its miner's command queue in order, re-polling after every command so the
//! new state is published at once. The tasks report to the daemon through one channel.

use crate::miner::{Command, MinerClient, Reading};
use rand::Rng;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a poller reports. `miner` is the index in the configured list.
#[derive(Debug)]
pub enum FleetEvent {
    Polled {
        miner: usize,
        at: SystemTime,
        reading: Box<Reading>,
    },
    PollFailed {
        miner: usize,
        error: String,
    },
    CommandDone {
        miner: usize,
        command: Command,
        result: Result<(), String>,
    },
}

/// The sending side of a miner's command queue.
#[derive(Clone)]
pub struct MinerHandle {
    commands: mpsc::Sender<Command>,
}

impl MinerHandle {
    /// Queues a validated command. Fails when the queue is full (the miner is not keeping up).
    pub fn submit(&self, command: Command) -> Result<(), String> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                "the miner is still working through earlier commands; try again shortly".into()
            }
            mpsc::error::TrySendError::Closed(_) => "the miner's poller has stopped".into(),
        })
    }
}

/// How long after a restart-like command to look again: the device is rebooting.
const AFTER_RESTART: Duration = Duration::from_secs(5);

/// Starts the poller for one miner. Its first poll comes at a random point within
/// `first_spread`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_poller(
    miner: usize,
    name: String,
    mut client: MinerClient,
    interval: Duration,
    first_spread: Duration,
    events: mpsc::Sender<FleetEvent>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> MinerHandle {
    let (tx, mut rx) = mpsc::channel::<Command>(16);
    tracker.spawn(async move {
        // The first poll comes quickly so a starting daemon shows its fleet at once; the second
        // lands at a random phase so thousands of miners spread over the interval.
        let first = first_spread.mul_f64(rand::rng().random::<f64>());
        let mut next = Instant::now() + first;
        let mut spread = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(command) = rx.recv() => {
                    let result = client.execute(&command).await.map_err(|e| e.to_string());
                    match &result {
                        Ok(()) => tracing::info!(miner = %name, command = %command.describe(), "applied"),
                        Err(e) => tracing::warn!(miner = %name, command = %command.describe(), error = %e, "command failed"),
                    }
                    let rebooting = matches!(command, Command::Restart | Command::SelectPool(_));
                    if events.send(FleetEvent::CommandDone { miner, command, result }).await.is_err() {
                        break;
                    }
                    next = Instant::now() + if rebooting { AFTER_RESTART } else { Duration::ZERO };
                }
                _ = tokio::time::sleep_until(next) => {
                    let event = match client.poll().await {
                        Ok(reading) => {
                            tracing::debug!(miner = %name, "polled");
                            FleetEvent::Polled { miner, at: SystemTime::now(), reading: Box::new(reading) }
                        }
                        Err(e) => {
                            tracing::debug!(miner = %name, error = %e, "poll failed");
                            FleetEvent::PollFailed { miner, error: e.to_string() }
                        }
                    };
                    if events.send(event).await.is_err() {
                        break;
                    }
                    let step = if spread {
                        spread = false;
                        interval.mul_f64(0.5 + rand::rng().random::<f64>())
                    } else {
                        interval
                    };
                    next = Instant::now() + step;
                }
            }
        }
    });
    MinerHandle { commands: tx }
}

/// The command task of a miner that is not polled (NMMiner): pool selection goes out as a UDP
/// datagram to the device's configuration port.
pub fn spawn_datagram_commander(
    miner: usize,
    ip: String,
    config_port: u16,
    pools: Vec<crate::miner::axeos::ConfiguredPool>,
    events: mpsc::Sender<FleetEvent>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> MinerHandle {
    let (tx, mut rx) = mpsc::channel::<Command>(16);
    tracker.spawn(async move {
        loop {
            let command = tokio::select! {
                _ = cancel.cancelled() => break,
                c = rx.recv() => match c { Some(c) => c, None => break },
            };
            let result = match &command {
                Command::SelectPool(label) => match pools.iter().find(|p| p.label() == *label) {
                    Some(pool) => {
                        let url = format!("stratum+tcp://{}:{}", pool.url, pool.port);
                        let datagram = crate::miner::nmminer::pool_datagram(
                            &ip,
                            &url,
                            &pool.user,
                            &pool.password,
                        );
                        let target = format!("{ip}:{config_port}");
                        match tokio::net::UdpSocket::bind("0.0.0.0:0").await {
                            Ok(socket) => socket
                                .send_to(&datagram, &target)
                                .await
                                .map(|_| ())
                                .map_err(|e| format!("udp://{target}: {e}")),
                            Err(e) => Err(format!("cannot open a UDP socket: {e}")),
                        }
                    }
                    None => Err(format!("pool {label:?} is not configured")),
                },
                other => Err(format!(
                    "{} is not possible on an NMMiner",
                    other.describe()
                )),
            };
            if events
                .send(FleetEvent::CommandDone {
                    miner,
                    command,
                    result,
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    MinerHandle { commands: tx }
}
