//! The fleet: one poller task per miner. Each task owns its adapter, polls on a jittered
//! interval, and drains its miner's command queue in order, re-polling after every command so the
//! new state is published at once. The tasks report to the daemon through one channel.

use crate::control::Origin;
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
        origin: Origin,
        result: Result<(), String>,
    },
}

/// A miner's command queue. For a setting the newest value wins: a command for a property that
/// is already queued replaces the queued one (moving to the back, so the order of the user's last
/// actions is kept), so a burst of slider moves ends with the value the user let go at.
#[derive(Default)]
struct CommandQueue {
    queued: std::sync::Mutex<std::collections::VecDeque<(Command, Origin)>>,
    ready: tokio::sync::Notify,
    /// Not polled: switched off at its plug on purpose. `resumed` wakes the poller when it is
    /// switched back on. (Beside the queue rather than a watch channel: bytes, not a kilobyte,
    /// per miner.)
    paused: std::sync::atomic::AtomicBool,
    resumed: tokio::sync::Notify,
    /// While a benchmark samples it: read this often (ms) instead of every poll interval.
    fast_ms: std::sync::atomic::AtomicU64,
}

/// At most this many different commands wait for one miner; more means it is not keeping up.
const QUEUE_LIMIT: usize = 32;

impl CommandQueue {
    fn push(&self, command: Command, origin: Origin) -> Result<(), String> {
        {
            let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            queued.retain(|(c, _)| c.property() != command.property());
            if queued.len() >= QUEUE_LIMIT {
                return Err(
                    "the miner is still working through earlier commands; try again shortly".into(),
                );
            }
            queued.push_back((command, origin));
        }
        // Stores a permit when the poller is busy, so no command waits for the next one.
        self.ready.notify_one();
        Ok(())
    }

    async fn next(&self) -> (Command, Origin) {
        loop {
            if let Some(c) = self
                .queued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return c;
            }
            self.ready.notified().await;
        }
    }
}

/// The sending side of a miner's command queue.
#[derive(Clone)]
pub struct MinerHandle {
    commands: std::sync::Arc<CommandQueue>,
}

impl MinerHandle {
    fn new() -> MinerHandle {
        MinerHandle {
            commands: Default::default(),
        }
    }

    /// Stops polling (the miner is off on purpose) or starts again at once.
    pub fn set_polling(&self, on: bool) {
        let was_paused = self
            .commands
            .paused
            .swap(!on, std::sync::atomic::Ordering::Relaxed);
        if was_paused && on {
            self.commands.resumed.notify_one();
        }
    }

    /// Reads the miner every `every` (a benchmark sampling it), or at the poll interval again.
    pub fn set_fast_poll(&self, every: Option<Duration>) {
        let ms = every.map_or(0, |d| d.as_millis().max(1) as u64);
        self.commands
            .fast_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues a validated, admitted command, replacing a queued one for the same property.
    pub fn submit(&self, command: Command, origin: Origin) -> Result<(), String> {
        self.commands.push(command, origin)
    }
}

/// How often a miner switched on at its plug is looked at until it answers.
const BOOT_POLL: Duration = Duration::from_secs(5);

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
    let handle = MinerHandle::new();
    let queue = handle.commands.clone();
    tracker.spawn(async move {
        // The first poll comes quickly so a starting daemon shows its fleet at once; the second
        // lands at a random phase so thousands of miners spread over the interval.
        let first = first_spread.mul_f64(rand::rng().random::<f64>());
        let mut next = Instant::now() + first;
        let mut spread = true;
        let mut booting = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                (command, origin) = queue.next() => {
                    let result = client.execute(&command).await.map_err(|e| e.to_string());
                    match &result {
                        Ok(()) => tracing::info!(miner = %name, command = %command.describe(), "applied"),
                        Err(e) => tracing::warn!(miner = %name, command = %command.describe(), error = %e, "command failed"),
                    }
                    let rebooting = matches!(command, Command::Restart | Command::SelectPool(_));
                    if events.send(FleetEvent::CommandDone { miner, command, origin, result }).await.is_err() {
                        break;
                    }
                    next = Instant::now() + if rebooting { AFTER_RESTART } else { Duration::ZERO };
                }
                _ = queue.resumed.notified() => {
                    // Switched back on: look at once, and every few seconds while it boots
                    // (the hub expects those failures), so it shows again as soon as it is up.
                    next = Instant::now();
                    booting = true;
                }
                _ = tokio::time::sleep_until(next), if !queue.paused.load(std::sync::atomic::Ordering::Relaxed) => {
                    let event = match client.poll().await {
                        Ok(reading) => {
                            booting = false;
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
                    let fast = queue.fast_ms.load(std::sync::atomic::Ordering::Relaxed);
                    let step = if booting {
                        BOOT_POLL.min(interval)
                    } else if fast > 0 {
                        Duration::from_millis(fast).min(interval)
                    } else if spread {
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
    handle
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
    let handle = MinerHandle::new();
    let queue = handle.commands.clone();
    tracker.spawn(async move {
        loop {
            let (command, origin) = tokio::select! {
                _ = cancel.cancelled() => break,
                c = queue.next() => c,
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
                    origin,
                    result,
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_commands_applies_the_newest_value() {
        let q = CommandQueue::default();
        for f in 400..420 {
            q.push(Command::SetFrequency(f), Origin::User).unwrap();
        }
        q.push(Command::SetFanSpeed(50), Origin::User).unwrap();
        q.push(Command::SetFrequency(525), Origin::Strategy)
            .unwrap();
        assert_eq!(q.next().await, (Command::SetFanSpeed(50), Origin::User));
        assert_eq!(
            q.next().await,
            (Command::SetFrequency(525), Origin::Strategy)
        );
        assert!(q.queued.lock().unwrap().is_empty());
    }
}
