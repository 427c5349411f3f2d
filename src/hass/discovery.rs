//! Device-based discovery (`<prefix>/device/<node>/<object>/config` with `cmps`). One payload per
//! miner and one for the bridge, retained, QoS 1. Options at the root (`state_topic`,
//! `availability`, `qos`) are shared by every component. Entities are serde structs: a common
//! base flattened into each component's platform-specific part.

use super::Topics;
use crate::config::LOG_LEVELS;
use crate::miner::{Capabilities, Identity};
use crate::safety::Limits;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What every component carries.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    /// `p`: the platform.
    pub p: &'static str,
    pub name: String,
    pub unique_id: String,
    /// The entity id HA should create (replaces the deprecated `object_id`).
    pub default_entity_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_category: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_template: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SensorPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_of_measurement: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_display_precision: Option<u8>,
    /// Seconds after which HA shows the value as unavailable (broadcast devices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NumberPart {
    pub command_topic: String,
    pub min: f64,
    pub max: f64,
    pub step: f64,
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_of_measurement: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelectPart {
    pub command_topic: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchPart {
    pub command_topic: String,
    pub payload_on: &'static str,
    pub payload_off: &'static str,
    pub state_on: &'static str,
    pub state_off: &'static str,
}

impl SwitchPart {
    /// A switch sending and showing `ON` / `OFF`.
    pub fn on_off(command_topic: String) -> SwitchPart {
        SwitchPart {
            command_topic,
            payload_on: "ON",
            payload_off: "OFF",
            state_on: "ON",
            state_off: "OFF",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ButtonPart {
    pub command_topic: String,
    pub payload_press: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BinarySensorPart {
    pub payload_on: &'static str,
    pub payload_off: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventPart {
    pub event_types: Vec<&'static str>,
}

/// A component: the base and its platform's fields, flattened into one object.
#[derive(Debug, Clone, Serialize)]
pub struct Component<P: Serialize> {
    #[serde(flatten)]
    pub base: Base,
    #[serde(flatten)]
    pub part: P,
    /// Per-component overrides of the shared root options (the bridge's own topics).
    #[serde(flatten)]
    pub extra: BTreeMap<&'static str, Value>,
}

/// Collects components for one device.
struct Builder<'a> {
    topics: &'a Topics,
    unique_prefix: String,
    entity_prefix: String,
    cmps: serde_json::Map<String, Value>,
    expire_after: Option<u64>,
}

impl<'a> Builder<'a> {
    fn base(&self, platform: &'static str, key: &str, name: &str) -> Base {
        Base {
            p: platform,
            name: name.into(),
            unique_id: format!("{}_{key}", self.unique_prefix),
            default_entity_id: format!("{platform}.{}_{key}", self.entity_prefix),
            icon: None,
            entity_category: None,
            value_template: Some(format!("{{{{ value_json.{key} }}}}")),
        }
    }

    fn add<P: Serialize>(&mut self, key: &str, base: Base, part: P) {
        self.add_with(key, base, part, BTreeMap::new())
    }

    fn add_with<P: Serialize>(
        &mut self,
        key: &str,
        base: Base,
        part: P,
        extra: BTreeMap<&'static str, Value>,
    ) {
        let value = serde_json::to_value(Component { base, part, extra })
            .expect("discovery components serialise");
        self.cmps.insert(key.into(), value);
    }

    fn sensor(&mut self, spec: &SensorSpec) {
        let mut base = self.base("sensor", spec.key, spec.name);
        base.icon = spec.icon;
        base.entity_category = spec.diagnostic.then_some("diagnostic");
        let part = SensorPart {
            device_class: spec.class,
            state_class: spec.state,
            unit_of_measurement: spec.unit,
            suggested_display_precision: spec.precision,
            expire_after: self.expire_after,
        };
        self.add(spec.key, base, part);
    }

    /// A slider writing whole numbers to `set/<property>`.
    #[allow(clippy::too_many_arguments)]
    fn number(
        &mut self,
        key: &str,
        name: &str,
        property: &str,
        range: &std::ops::RangeInclusive<u32>,
        unit: &'static str,
        device_class: Option<&'static str>,
        icon: Option<&'static str>,
        miner: &str,
    ) {
        let mut base = self.base("number", key, name);
        base.entity_category = Some("config");
        base.icon = icon;
        base.value_template = Some(format!("{{{{ value_json.{property} }}}}"));
        let part = NumberPart {
            command_topic: self.topics.set(miner, property),
            min: *range.start() as f64,
            max: *range.end() as f64,
            step: 1.0,
            mode: "slider",
            unit_of_measurement: Some(unit),
            device_class,
        };
        self.add(key, base, part);
    }
}

/// One sensor read from the state JSON key of the same name.
pub struct SensorSpec {
    pub key: &'static str,
    pub name: &'static str,
    pub class: Option<&'static str>,
    pub unit: Option<&'static str>,
    pub state: Option<&'static str>,
    pub precision: Option<u8>,
    pub icon: Option<&'static str>,
    pub diagnostic: bool,
}

#[allow(clippy::too_many_arguments)]
const fn spec(
    key: &'static str,
    name: &'static str,
    class: Option<&'static str>,
    unit: Option<&'static str>,
    state: Option<&'static str>,
    precision: Option<u8>,
    icon: Option<&'static str>,
    diagnostic: bool,
) -> SensorSpec {
    SensorSpec {
        key,
        name,
        class,
        unit,
        state,
        precision,
        icon,
        diagnostic,
    }
}

const M: Option<&str> = Some("measurement");

/// The sensors every ESP-Miner miner gets.
#[rustfmt::skip]
pub const MINER_SENSORS: &[SensorSpec] = &[
    spec("hashrate", "Hashrate", None, Some("GH/s"), M, Some(1), Some("mdi:pickaxe"), false),
    spec("expected_hashrate", "Expected hashrate", None, Some("GH/s"), M, Some(1), Some("mdi:pickaxe"), false),
    spec("power", "Power", Some("power"), Some("W"), M, Some(1), None, false),
    spec("efficiency", "Efficiency", None, Some("J/TH"), M, Some(1), Some("mdi:leaf"), false),
    spec("asic_temp", "ASIC temperature", Some("temperature"), Some("°C"), M, Some(1), None, false),
    spec("vr_temp", "VR temperature", Some("temperature"), Some("°C"), M, Some(1), None, false),
    spec("fan_speed", "Fan", None, Some("%"), M, Some(0), Some("mdi:fan"), false),
    spec("fan_rpm", "Fan RPM", None, Some("rpm"), M, Some(0), Some("mdi:fan"), false),
    spec("input_voltage", "Input voltage", Some("voltage"), Some("V"), M, Some(2), None, true),
    spec("current", "Current", Some("current"), Some("A"), M, Some(2), None, true),
    spec("shares_accepted", "Accepted shares", None, None, Some("total_increasing"), Some(0), Some("mdi:check-circle-outline"), false),
    spec("shares_rejected", "Rejected shares", None, None, Some("total_increasing"), Some(0), Some("mdi:close-circle-outline"), false),
    spec("error_percent", "Hash error rate", None, Some("%"), M, Some(2), Some("mdi:alert-circle-outline"), true),
    spec("best_difficulty", "Best difficulty", None, None, M, Some(0), Some("mdi:trophy-outline"), false),
    spec("uptime", "Uptime", Some("duration"), Some("s"), None, Some(0), None, true),
    spec("rssi", "Wi-Fi signal", Some("signal_strength"), Some("dBm"), M, Some(0), None, true),
    spec("pool", "Pool", None, None, None, None, Some("mdi:server-network"), false),
];

pub use crate::miner::slug;

/// The discovery object id (and unique-id stem) of a miner.
pub fn object_id(hardware_id: &str) -> String {
    hardware_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The identifier of the bridge device, which every miner names as `via_device`.
pub fn bridge_device_id(topics: &Topics) -> String {
    format!("miner2mqtt_bridge_{}", topics.node)
}

fn origin() -> Value {
    json!({
        "name": "miner2mqtt",
        "sw": env!("CARGO_PKG_VERSION"),
        "url": "https://github.com/miner2mqtt/miner2mqtt",
    })
}

/// Which energy entities exist, from the `energy:` configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnergyFeatures {
    /// A price source is configured: prices and costs.
    pub priced: bool,
    /// Bands are configured: the strategy runs.
    pub strategy: bool,
    /// One band is the champion band.
    pub champion: bool,
}

/// What a miner's discovery is built from.
pub struct MinerDevice<'a> {
    pub name: &'a str,
    pub host: &'a str,
    pub hardware_id: &'a str,
    pub identity: &'a Identity,
    pub capabilities: &'a Capabilities,
    pub limits: &'a Limits,
    /// Seconds of silence after which HA marks sensors unavailable (broadcast devices).
    pub expire_after: Option<u64>,
    pub energy: EnergyFeatures,
    /// It has a smart plug: a Power switch.
    pub plug: bool,
}

/// The discovery topic and payload for one miner.
pub fn miner_discovery(topics: &Topics, m: &MinerDevice<'_>) -> (String, Value) {
    let oid = object_id(m.hardware_id);
    let mut b = Builder {
        topics,
        unique_prefix: format!("miner2mqtt_{oid}"),
        entity_prefix: slug(m.name),
        cmps: serde_json::Map::new(),
        expire_after: m.expire_after,
    };
    for spec in MINER_SENSORS {
        if !m.capabilities.absent_sensors.contains(&spec.key) {
            b.sensor(spec);
        }
    }
    for extra in &m.capabilities.extra_sensors {
        let mut base = b.base("sensor", &extra.key, &extra.name);
        base.value_template = Some(format!("{{{{ value_json.{} }}}}", extra.key));
        let part = SensorPart {
            device_class: extra.device_class,
            state_class: Some("measurement"),
            unit_of_measurement: extra.unit,
            suggested_display_precision: Some(1),
            expire_after: b.expire_after,
        };
        b.add(&extra.key, base, part);
    }
    {
        let mut base = b.base("sensor", "firmware", "Firmware");
        base.entity_category = Some("diagnostic");
        base.icon = Some("mdi:chip");
        // The firmware version lives in the device registry too; the sensor lets automations see it.
        base.value_template = Some("{{ value_json.firmware }}".into());
        b.add("firmware", base, SensorPart::default());
    }
    {
        // Metered from the power samples; kept in the store, so it never goes backwards.
        let mut base = b.base("sensor", "energy", "Energy");
        base.icon = None;
        let part = SensorPart {
            device_class: Some("energy"),
            state_class: Some("total_increasing"),
            unit_of_measurement: Some("kWh"),
            suggested_display_precision: Some(3),
            expire_after: None,
        };
        b.add("energy", base, part);
    }
    if m.energy.priced {
        let mut base = b.base("sensor", "cost_today", "Cost today");
        base.icon = Some("mdi:cash");
        let part = SensorPart {
            device_class: Some("monetary"),
            state_class: Some("total"),
            unit_of_measurement: Some("GBP"),
            suggested_display_precision: Some(2),
            expire_after: None,
        };
        b.add("cost_today", base, part);
    }
    if m.energy.strategy {
        let mut base = b.base("sensor", "strategy_hold", "Strategy hold");
        base.icon = Some("mdi:hand-back-right");
        base.entity_category = Some("diagnostic");
        let part = SensorPart {
            device_class: Some("timestamp"),
            ..Default::default()
        };
        b.add("strategy_hold", base, part);
    }
    {
        let mut base = b.base("binary_sensor", "overheating", "Overheating");
        base.value_template = Some("{{ 'ON' if value_json.overheating else 'OFF' }}".into());
        b.add(
            "overheating",
            base,
            BinarySensorPart {
                payload_on: "ON",
                payload_off: "OFF",
                expire_after: b.expire_after,
                device_class: Some("heat"),
            },
        );
    }

    // Alerts and problems stay visible while the miner is offline (offline is one of them):
    // these are available whenever the bridge is.
    let bridge_only = || {
        BTreeMap::from([
            ("availability", json!([{ "topic": topics.bridge_state() }])),
            ("availability_mode", Value::from("all")),
        ])
    };
    {
        let mut base = b.base("binary_sensor", "problem", "Problem");
        base.value_template = Some("{{ 'ON' if value_json.problem else 'OFF' }}".into());
        let mut extra = bridge_only();
        extra.insert("json_attributes_topic", topics.state(m.name).into());
        extra.insert(
            "json_attributes_template",
            "{{ {'alerts': value_json.problems} | tojson }}".into(),
        );
        let part = BinarySensorPart {
            payload_on: "ON",
            payload_off: "OFF",
            expire_after: None,
            device_class: Some("problem"),
        };
        b.add_with("problem", base, part, extra);
    }
    {
        let mut base = b.base("binary_sensor", "safety_hold", "Safety hold");
        base.icon = Some("mdi:shield-alert-outline");
        base.entity_category = Some("diagnostic");
        base.value_template = Some("{{ 'ON' if value_json.safety_hold else 'OFF' }}".into());
        let part = BinarySensorPart {
            payload_on: "ON",
            payload_off: "OFF",
            expire_after: b.expire_after,
            device_class: None,
        };
        b.add("safety_hold", base, part);
    }
    {
        // Fires once per alert (`{"event_type": "overheating", "message": …}`), for automations.
        let mut base = b.base("event", "alert", "Alert");
        base.icon = Some("mdi:alert-outline");
        base.value_template = None;
        let mut extra = bridge_only();
        extra.insert("state_topic", topics.alert(m.name).into());
        let part = EventPart {
            event_types: crate::control::alerts::Kind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect(),
        };
        b.add_with("alert", base, part, extra);
    }

    let l = m.limits;
    if let Some(r) = &l.frequency_mhz {
        let (class, icon) = (Some("frequency"), Some("mdi:sine-wave"));
        b.number(
            "frequency",
            "Frequency",
            "frequency",
            r,
            "MHz",
            class,
            icon,
            m.name,
        );
    }
    if let Some(r) = &l.core_voltage_mv {
        let class = Some("voltage");
        b.number(
            "core_voltage",
            "Core voltage",
            "core_voltage",
            r,
            "mV",
            class,
            None,
            m.name,
        );
    }
    if let Some(r) = &l.fan_speed {
        let r = *r.start() as u32..=*r.end() as u32;
        let icon = Some("mdi:fan");
        b.number(
            "manual_fan_speed",
            "Manual fan speed",
            "fan_speed",
            &r,
            "%",
            None,
            icon,
            m.name,
        );
    }
    if !l.modes.is_empty() {
        let mut base = b.base("select", "mode", "Mode");
        base.icon = Some("mdi:speedometer");
        let part = SelectPart {
            command_topic: topics.set(m.name, "mode"),
            options: l.modes.iter().map(|(n, _)| n.clone()).collect(),
        };
        b.add("mode", base, part);
    }
    if !l.pools.is_empty() {
        let mut base = b.base("select", "pool_select", "Pool selection");
        base.entity_category = Some("config");
        base.value_template = Some("{{ value_json.pool }}".into());
        let part = SelectPart {
            command_topic: topics.set(m.name, "pool"),
            options: l.pools.clone(),
        };
        b.add("pool_select", base, part);
    }
    if l.auto_fan {
        let mut base = b.base("switch", "auto_fan", "Auto fan");
        base.entity_category = Some("config");
        base.icon = Some("mdi:fan-auto");
        base.value_template = Some("{{ 'ON' if value_json.auto_fan else 'OFF' }}".into());
        let part = SwitchPart::on_off(topics.set(m.name, "auto_fan"));
        b.add("auto_fan", base, part);
    }
    if l.pause {
        let mut base = b.base("switch", "mining", "Mining");
        base.icon = Some("mdi:pickaxe");
        base.value_template = Some("{{ 'OFF' if value_json.paused else 'ON' }}".into());
        let part = SwitchPart::on_off(topics.set(m.name, "mining"));
        b.add("mining", base, part);
    }
    if m.plug {
        // Switching on must work while the miner is off or unreachable: this switch is
        // available whenever the bridge is.
        let mut base = b.base("switch", "power_switch", "Power");
        base.icon = Some("mdi:power-plug");
        base.value_template = Some("{{ value_json.plug_power }}".into());
        let part = SwitchPart::on_off(topics.set(m.name, "power"));
        b.add_with("power_switch", base, part, bridge_only());
    }
    if l.restart {
        let mut base = b.base("button", "restart", "Restart");
        base.entity_category = Some("config");
        base.value_template = None;
        let part = ButtonPart {
            command_topic: topics.set(m.name, "restart"),
            payload_press: "PRESS",
            device_class: Some("restart"),
        };
        b.add("restart", base, part);
    }

    let work_modes = l
        .modes
        .iter()
        .any(|(_, t)| matches!(t, crate::safety::ModeTarget::Level(_)));
    if (l.frequency_mhz.is_some() && l.core_voltage_mv.is_some()) || work_modes {
        // Benchmark sweeps (of the clocks, or a comparison of the firmware's work modes): start
        // and stop, the progress (with the step under test and the last results as
        // attributes), and the results put on.
        #[rustfmt::skip]
        let buttons = [
            ("benchmark_start", "Start benchmark", "benchmark", "START", "mdi:play-speed"),
            ("benchmark_stop", "Stop benchmark", "benchmark", "STOP", "mdi:stop-circle-outline"),
            ("apply_efficiency", "Apply best efficiency", "profile", "efficiency", "mdi:leaf"),
            ("apply_hashrate", "Apply best hashrate", "profile", "hashrate", "mdi:rocket-launch-outline"),
            ("apply_balanced", "Apply balanced", "profile", "balanced", "mdi:scale-balance"),
        ];
        for (key, name, property, payload, icon) in buttons {
            let mut base = b.base("button", key, name);
            base.entity_category = Some("config");
            base.icon = Some(icon);
            base.value_template = None;
            let part = ButtonPart {
                command_topic: topics.set(m.name, property),
                payload_press: payload,
                device_class: None,
            };
            b.add(key, base, part);
        }
        let mut base = b.base("sensor", "benchmark_progress", "Benchmark progress");
        base.icon = Some("mdi:progress-clock");
        base.entity_category = Some("diagnostic");
        base.value_template = Some("{{ value_json.progress }}".into());
        let part = SensorPart {
            unit_of_measurement: Some("%"),
            suggested_display_precision: Some(0),
            ..Default::default()
        };
        let extra = BTreeMap::from([
            ("state_topic", Value::from(topics.benchmark(m.name))),
            (
                "json_attributes_topic",
                Value::from(topics.benchmark(m.name)),
            ),
        ]);
        b.add_with("benchmark_progress", base, part, extra);
    }

    let id = m.identity;
    let mut device = json!({
        "ids": [format!("miner2mqtt_{oid}")],
        "name": m.name,
        "mf": id.manufacturer,
        "mdl": id.model,
        "via_device": bridge_device_id(topics),
        "cu": format!("http://{}/", m.host),
    });
    if let Some(fw) = &id.firmware {
        device["sw"] = fw.clone().into();
    }
    if let Some(asic) = &id.asic_model {
        device["hw"] = if id.asic_count > 1 {
            format!("{}× {asic}", id.asic_count)
        } else {
            asic.clone()
        }
        .into();
    }
    if let Some(mac) = &id.mac {
        device["cns"] = json!([["mac", mac.to_ascii_lowercase()]]);
    }
    let payload = json!({
        "dev": device,
        "o": origin(),
        "cmps": Value::Object(b.cmps),
        "state_topic": topics.state(m.name),
        "availability": [
            { "topic": topics.bridge_state() },
            { "topic": topics.availability(m.name) },
        ],
        "availability_mode": "all",
        "qos": 1,
    });
    (topics.discovery(&oid), payload)
}

/// The bridge's energy entities: prices (GBP/kWh, the unit HA's energy dashboard takes for a
/// current-price entity), the cheapest windows ahead, the band and the strategy's switches.
fn bridge_energy(b: &mut Builder, topics: &Topics, f: EnergyFeatures) {
    let energy = || BTreeMap::from([("state_topic", Value::from(topics.bridge_energy()))]);
    if f.priced {
        #[rustfmt::skip]
        let prices = [
            ("price_now", "Price now", "mdi:currency-gbp"),
            ("price_next", "Next price", "mdi:currency-gbp"),
            ("price_min_today", "Lowest price today", "mdi:arrow-collapse-down"),
            ("price_max_today", "Highest price today", "mdi:arrow-collapse-up"),
            ("price_mean_today", "Mean price today", "mdi:approximately-equal"),
        ];
        for (key, name, icon) in prices {
            let mut base = b.base("sensor", key, name);
            base.icon = Some(icon);
            let part = SensorPart {
                state_class: Some("measurement"),
                unit_of_measurement: Some("GBP/kWh"),
                suggested_display_precision: Some(4),
                ..Default::default()
            };
            let mut extra = energy();
            if key == "price_now" {
                // The upcoming slots, for a chart card.
                extra.insert("json_attributes_topic", topics.bridge_prices().into());
            }
            b.add_with(key, base, part, extra);
        }
        for (key, name) in [
            ("cheapest_1h", "Cheapest hour ahead"),
            ("cheapest_3h", "Cheapest 3 hours ahead"),
        ] {
            let mut base = b.base("sensor", key, name);
            base.icon = Some("mdi:clock-star-four-points-outline");
            let part = SensorPart {
                device_class: Some("timestamp"),
                ..Default::default()
            };
            b.add_with(key, base, part, energy());
        }
    }
    if f.strategy {
        let mut base = b.base("sensor", "band", "Price band");
        base.icon = Some("mdi:layers-triple");
        b.add_with("band", base, SensorPart::default(), energy());
        let mut switches = vec![("strategy", "Strategy", "mdi:robot")];
        if f.champion {
            switches.push(("champion_mode", "Champion mode", "mdi:trophy"));
            let mut base = b.base("sensor", "champion", "Champion");
            base.icon = Some("mdi:trophy-outline");
            b.add_with("champion", base, SensorPart::default(), energy());
        }
        for (key, name, icon) in switches {
            let mut base = b.base("switch", key, name);
            base.icon = Some(icon);
            let part = SwitchPart::on_off(topics.bridge_request(key));
            b.add_with(key, base, part, energy());
        }
    }
}

/// The discovery topic and payload for the bridge device.
pub fn bridge_discovery(topics: &Topics, energy: EnergyFeatures) -> (String, Value) {
    let mut b = Builder {
        topics,
        unique_prefix: bridge_device_id(topics),
        entity_prefix: format!("{}_bridge", slug(&topics.node)),
        cmps: serde_json::Map::new(),
        expire_after: None,
    };
    let info = |b: &Builder| -> BTreeMap<&'static str, Value> {
        BTreeMap::from([("state_topic", Value::from(b.topics.bridge_info()))])
    };
    {
        let mut base = b.base("binary_sensor", "connection_state", "Connection state");
        base.entity_category = Some("diagnostic");
        base.value_template = None;
        let extra = BTreeMap::from([("state_topic", Value::from(topics.bridge_state()))]);
        let part = BinarySensorPart {
            payload_on: "online",
            payload_off: "offline",
            expire_after: None,
            device_class: Some("connectivity"),
        };
        b.add_with("connection_state", base, part, extra);
    }
    {
        let mut base = b.base("sensor", "version", "Version");
        base.entity_category = Some("diagnostic");
        base.icon = Some("mdi:information-outline");
        let extra = info(&b);
        b.add_with("version", base, SensorPart::default(), extra);
    }
    {
        let mut base = b.base("sensor", "miners_online", "Miners online");
        base.icon = Some("mdi:server");
        let extra = info(&b);
        let part = SensorPart {
            state_class: Some("measurement"),
            suggested_display_precision: Some(0),
            ..Default::default()
        };
        b.add_with("miners_online", base, part, extra);
    }
    {
        let mut base = b.base("select", "log_level", "Log level");
        base.entity_category = Some("config");
        let extra = info(&b);
        let part = SelectPart {
            command_topic: topics.bridge_request("log_level"),
            options: LOG_LEVELS.iter().map(|s| s.to_string()).collect(),
        };
        b.add_with("log_level", base, part, extra);
    }
    {
        let mut base = b.base("button", "restart", "Restart");
        base.entity_category = Some("config");
        base.value_template = None;
        let part = ButtonPart {
            command_topic: topics.bridge_request("restart"),
            payload_press: "PRESS",
            device_class: Some("restart"),
        };
        b.add("restart", base, part);
    }
    bridge_energy(&mut b, topics, energy);
    let payload = json!({
        "dev": {
            "ids": [bridge_device_id(topics)],
            "name": "miner2mqtt bridge",
            "mf": "miner2mqtt",
            "mdl": "Bridge",
            "sw": env!("CARGO_PKG_VERSION"),
        },
        "o": origin(),
        "cmps": Value::Object(b.cmps),
        "availability": [{ "topic": topics.bridge_state() }],
        "qos": 1,
    });
    (topics.discovery(topics.bridge_object_id()), payload)
}
