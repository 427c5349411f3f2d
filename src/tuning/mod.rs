//! Tuning: benchmark sweeps that find each chip's own best clocks (or an Avalon's best work
//! modes).
//!
//! - [`sweep`]: the sweep of one chip (step up while it passes, more voltage on a fail; each
//!   work mode in turn), synchronous and clock-free, and the summary of what it found.
//! - [`task`]: the benchmark controller that runs sweeps beside the hub.
//! - [`cli`]: `miner2mqtt benchmark`, a sweep started and watched over MQTT.

pub mod cli;
pub mod sweep;
pub mod task;
