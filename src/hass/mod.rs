//! Home Assistant: discovery payloads (`discovery`), the state JSON every miner publishes
//! (`state`), and the parsing of `set/<property>` commands (`command`). Nothing here talks to
//! the network; the daemon publishes what these functions build.

pub mod command;
pub mod discovery;
pub mod state;

/// Every topic the daemon uses, derived once from the base topic and discovery prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    pub base: String,
    pub discovery_prefix: String,
    /// The discovery node id: the base topic made safe for a topic level.
    pub node: String,
}

impl Topics {
    pub fn new(base: &str, discovery_prefix: &str) -> Topics {
        let node = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Topics {
            base: base.into(),
            discovery_prefix: discovery_prefix.into(),
            node,
        }
    }
    pub fn bridge_state(&self) -> String {
        format!("{}/bridge/state", self.base)
    }
    pub fn bridge_info(&self) -> String {
        format!("{}/bridge/info", self.base)
    }
    pub fn bridge_miners(&self) -> String {
        format!("{}/bridge/miners", self.base)
    }
    pub fn bridge_event(&self) -> String {
        format!("{}/bridge/event", self.base)
    }
    /// Prices, band and champion (retained).
    pub fn bridge_energy(&self) -> String {
        format!("{}/bridge/energy", self.base)
    }
    /// The upcoming price slots (retained), for a chart.
    pub fn bridge_prices(&self) -> String {
        format!("{}/bridge/prices", self.base)
    }
    /// Where prices can be pushed.
    pub fn bridge_prices_set(&self) -> String {
        format!("{}/bridge/prices/set", self.base)
    }
    pub fn bridge_request(&self, action: &str) -> String {
        format!("{}/bridge/request/{action}", self.base)
    }
    pub fn bridge_response(&self, action: &str) -> String {
        format!("{}/bridge/response/{action}", self.base)
    }
    pub fn availability(&self, miner: &str) -> String {
        format!("{}/{miner}/availability", self.base)
    }
    pub fn state(&self, miner: &str) -> String {
        format!("{}/{miner}/state", self.base)
    }
    /// A miner's alerts, for its event entity (not retained: an alert happens once).
    pub fn alert(&self, miner: &str) -> String {
        format!("{}/{miner}/alert", self.base)
    }
    /// A miner's benchmark state (retained): progress, the step under test, the last result.
    pub fn benchmark(&self, miner: &str) -> String {
        format!("{}/{miner}/benchmark", self.base)
    }
    pub fn set(&self, miner: &str, property: &str) -> String {
        format!("{}/{miner}/set/{property}", self.base)
    }
    /// `<prefix>/device/<node>/<object>/config`; the node level lets one wildcard subscription
    /// see exactly this daemon's retained discovery.
    pub fn discovery(&self, object_id: &str) -> String {
        format!(
            "{}/device/{}/{object_id}/config",
            self.discovery_prefix, self.node
        )
    }
    pub fn discovery_wildcard(&self) -> String {
        format!("{}/device/{}/+/config", self.discovery_prefix, self.node)
    }
    pub fn bridge_object_id(&self) -> &'static str {
        "bridge"
    }
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
}
