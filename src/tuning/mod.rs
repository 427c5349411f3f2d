//! Tuning: benchmark sweeps that find each chip's own best clocks.
//!
//! - [`sweep`]: the sweep of one chip (step up while it passes, more voltage on a fail),
//!   synchronous and clock-free, and the summary of what it found.
//! - [`task`]: the benchmark controller that runs sweeps beside the hub.

pub mod sweep;
pub mod task;
