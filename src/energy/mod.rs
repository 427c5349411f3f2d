//! Energy: prices, bands, the strategy and champion, and energy accounting.
//!
//! - [`prices`]: 30-minute UTC slots and the book that holds them (UK days, cheapest windows).
//! - [`octopus`]: Octopus Agile from the public API (product discovery, paginated rates, the
//!   refresh schedule); [`schedule`]: fixed and time-of-use prices from the config.
//! - [`bands`]: which band a price is in and the tracker that moves between them.
//! - [`strategy`]: band targets and the champion, synchronous and clock-free; [`rolling`]: the
//!   per-miner efficiency it ranks champions by.
//! - [`meter`]: energy (kWh) and today's cost per miner.
//! - [`task`]: the controller task that runs all of it beside the hub.
//! - [`show`]: `miner2mqtt prices`, a day's slots on the terminal; [`replay`]: `miner2mqtt
//!   replay`, the strategies over recorded days against the limit.

pub mod bands;
pub mod config;
pub mod meter;
pub mod octopus;
pub mod prices;
pub mod replay;
pub mod rolling;
pub mod schedule;
pub mod show;
pub mod strategy;
pub mod task;

pub use config::EnergyConfig;
