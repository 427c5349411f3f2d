//! miner2mqtt: home bitcoin miners as Home Assistant devices over MQTT.
//!
//! Module map (data flows top to bottom):
//! - [`config`]: figment layering (defaults < YAML < `MINER2MQTT_*`) and the validated `Config`.
//! - [`miner`]: the device model (`Telemetry`, `Identity`, `Capabilities`, `Command`) and one
//!   adapter per family behind `MinerClient`: `axeos` (Bitaxe, NerdQaxe over HTTP), `avalon`
//!   (Nano 3/3S, Mini 3, Q, each by its own rules; other Avalons read-only) and `antminer` (over
//!   the `cgminer` TCP client), `nmminer` (UDP broadcasts, handled by the daemon since there is
//!   nothing to poll); [`miner::asic`] holds the per-ASIC limits.
//! - [`safety`]: the limits every command is checked against before it can reach a miner.
//! - [`control`]: command origins and the per-miner arbiter (the watchdog's safety hold refuses
//!   raises; a change by hand holds the strategy off), and the safety controller task that runs
//!   the watchdog (thermal step-down, safe profile, zero-hashrate restarts) and the alert rules on
//!   every reading.
//! - [`power`]: smart plugs (MQTT, or Home Assistant switches over its REST API) and the task
//!   that switches them and keeps them as wanted.
//! - [`fleet`]: one poller task per miner, with its serialised command queue (a command-only task
//!   for broadcast devices).
//! - [`store`]: the sled history of every sample, tagged with its clock config; `store::writer`
//!   writes the samples on a thread of its own (the hub never waits on the disk);
//!   `store::history` keeps it small (raw samples → 5-minute rollups → per-clock-config
//!   aggregates, compacted and pruned in the background).
//! - [`mqtt`]: the MQTT session (persistent, will, birth, resubscribe on every ConnAck, outbound
//!   queue) and the start-up check for another live instance on the same base topic.
//! - [`hass`]: Home Assistant discovery payloads, state JSON and command parsing.
//! - [`energy`]: prices (Octopus Agile, schedules, pushed), bands, the strategy and champion,
//!   energy meters, and the controller task that runs them beside the hub.
//! - [`tuning`]: benchmark sweeps of one chip (step up while it passes, more voltage on a fail;
//!   an Avalon's work modes compared one by one), the summary of their results, and the
//!   controller task that runs them beside the hub.
//! - [`report`]: which settings are best for a chip, from its history (per-config figures,
//!   sessions, the Pareto front, the plot), and the raw-sample export; `miner2mqtt report` and
//!   `export` read the store or ask the running daemon.
//! - [`daemon`]: the hub: wires the above together and owns the shutdown order; `daemon::energy`,
//!   `daemon::power`, `daemon::watch` and `daemon::tuning` are its sides of the energy
//!   controller, the plugs, the safety controller and the benchmark controller;
//!   `daemon::requests` answers the bridge requests that read the history.
//! - [`sim`]: faithful simulators of the devices (ESP-Miner over HTTP; Avalon Nano 3/3S, Mini 3,
//!   Q and Antminer over cgminer TCP; NMMiner broadcasts over UDP; the Octopus API over HTTP;
//!   a Tasmota plug over MQTT and Home Assistant's REST API, both powering simulated Bitaxes),
//!   sharing no code with the
//!   adapters and checked key by key against real captures (tests/sim_fidelity.rs).
//! - [`demo`] and [`bench`]: the one-command demo and the load benchmark (`bench::history`: the
//!   history's disk, compaction and query costs over simulated days).

// serde_json's json! macro recurses once per token; the simulators' payloads are large.
#![recursion_limit = "256"]

pub mod bench;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod energy;
pub mod fleet;
pub mod hass;
pub mod miner;
pub mod mqtt;
pub mod power;
pub mod report;
pub mod safety;
pub mod sim;
pub mod store;
pub mod tuning;
