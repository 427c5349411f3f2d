//! Smart plugs: switching a miner's mains power. A miner's `power:` is an MQTT plug (Tasmota,
//! Zigbee2MQTT, Shelly: a command topic and payloads, optionally a state topic) or a Home
//! Assistant switch entity driven through HA's REST API. The plugs run in their own task
//! ([`task`]): it remembers what each plug should be (in the store, across restarts), sends it,
//! reads back what the plug says, and every `power_keepalive` corrects a plug that differs.

pub mod task;

use crate::config::Secret;
use serde::{Deserialize, Serialize};

/// `power:` of a miner, as written: exactly one of `mqtt` or `ha`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPower {
    #[serde(default)]
    pub mqtt: Option<RawMqttPlug>,
    #[serde(default)]
    pub ha: Option<RawHaPlug>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttPlug {
    pub command_topic: String,
    #[serde(default = "on")]
    pub payload_on: String,
    #[serde(default = "off")]
    pub payload_off: String,
    #[serde(default)]
    pub state_topic: Option<String>,
    /// What the state topic says when on; `payload_on` when omitted.
    #[serde(default)]
    pub state_on: Option<String>,
    #[serde(default)]
    pub state_off: Option<String>,
    /// The key of a JSON state message that holds the state (`state` for Zigbee2MQTT, `output`
    /// for a Shelly Gen2 `status/switch:0`); the whole payload when omitted.
    #[serde(default)]
    pub state_key: Option<String>,
}

fn on() -> String {
    "ON".into()
}

fn off() -> String {
    "OFF".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHaPlug {
    /// `switch.bitaxe_plug` (or any entity with `turn_on`/`turn_off`: `input_boolean`, `light`).
    pub entity_id: String,
}

/// `ha:` at the top level: where Home Assistant's REST API is, for plugs that are HA entities.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHa {
    /// `http://homeassistant.local:8123`.
    #[serde(default)]
    pub url: Option<String>,
    /// A long-lived access token (HA: your profile → Security).
    #[serde(default)]
    pub token: Option<Secret>,
}

/// A validated plug.
#[derive(Debug, Clone, PartialEq)]
pub enum Plug {
    Mqtt(MqttPlug),
    Ha { entity_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttPlug {
    pub command_topic: String,
    pub payload_on: String,
    pub payload_off: String,
    pub state_topic: Option<String>,
    pub state_on: String,
    pub state_off: String,
    pub state_key: Option<String>,
}

impl MqttPlug {
    /// What a state message says: on, off, or nothing we recognise (`None`: some plugs publish
    /// other things on the same topic, and those are ignored).
    pub fn read_state(&self, payload: &[u8]) -> Option<bool> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        let value = match &self.state_key {
            Some(key) => match serde_json::from_str::<serde_json::Value>(text)
                .ok()?
                .get(key)?
            {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            None => text.to_string(),
        };
        if value.eq_ignore_ascii_case(&self.state_on) {
            Some(true)
        } else if value.eq_ignore_ascii_case(&self.state_off) {
            Some(false)
        } else {
            None
        }
    }
}

/// Home Assistant's REST API: its base (ending in `/api`) and a token.
#[derive(Debug, Clone)]
pub struct HaApi {
    pub base: String,
    pub token: Secret,
}

impl HaApi {
    /// From `ha:`, or, run as an add-on, the Supervisor's proxy with `SUPERVISOR_TOKEN`.
    pub fn resolve(raw: &RawHa) -> Option<HaApi> {
        match (&raw.url, &raw.token) {
            (Some(url), Some(token)) => {
                let url = url.trim().trim_end_matches('/');
                let base = if url.ends_with("/api") {
                    url.to_string()
                } else {
                    format!("{url}/api")
                };
                Some(HaApi {
                    base,
                    token: token.clone(),
                })
            }
            _ => std::env::var("SUPERVISOR_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .map(|t| HaApi {
                    base: "http://supervisor/core/api".into(),
                    token: Secret::new(&t),
                }),
        }
    }
}

fn topic_ok(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#']) && !topic.starts_with('/')
}

/// Checks a miner's `power:`; errors are (key under the miner, value, what to write).
pub fn validate(raw: RawPower, ha: Option<&HaApi>) -> Result<Plug, (String, String, String)> {
    match (raw.mqtt, raw.ha) {
        (Some(m), None) => {
            if !topic_ok(&m.command_topic) {
                return Err((
                    "power.mqtt.command_topic".into(),
                    format!("{:?}", m.command_topic),
                    "the plug's command topic, such as cmnd/plug1/POWER (no wildcards)".into(),
                ));
            }
            if let Some(t) = m.state_topic.as_ref().filter(|t| !topic_ok(t)) {
                return Err((
                    "power.mqtt.state_topic".into(),
                    format!("{t:?}"),
                    "the topic the plug reports its state on, such as stat/plug1/POWER (no wildcards)".into(),
                ));
            }
            if m.payload_on == m.payload_off {
                return Err((
                    "power.mqtt.payload_off".into(),
                    format!("{:?}", m.payload_off),
                    "payload_on and payload_off must differ".into(),
                ));
            }
            let state_on = m.state_on.unwrap_or_else(|| m.payload_on.clone());
            let state_off = m.state_off.unwrap_or_else(|| m.payload_off.clone());
            if state_on.eq_ignore_ascii_case(&state_off) {
                return Err((
                    "power.mqtt.state_off".into(),
                    format!("{state_off:?}"),
                    "state_on and state_off must differ".into(),
                ));
            }
            Ok(Plug::Mqtt(MqttPlug {
                command_topic: m.command_topic,
                payload_on: m.payload_on,
                payload_off: m.payload_off,
                state_topic: m.state_topic,
                state_on,
                state_off,
                state_key: m.state_key,
            }))
        }
        (None, Some(h)) => {
            let id = h.entity_id.trim();
            let valid = id.split_once('.').is_some_and(|(d, o)| {
                !d.is_empty()
                    && !o.is_empty()
                    && id.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
                    })
            });
            if !valid {
                return Err((
                    "power.ha.entity_id".into(),
                    format!("{:?}", h.entity_id),
                    "an entity id such as switch.bitaxe_plug".into(),
                ));
            }
            if ha.is_none() {
                return Err((
                    "power.ha".into(),
                    id.to_string(),
                    "a Home Assistant plug needs ha: { url: http://homeassistant.local:8123, token: <a long-lived access token> } (run as the add-on, the Supervisor's token is used)".into(),
                ));
            }
            Ok(Plug::Ha {
                entity_id: id.to_string(),
            })
        }
        (Some(_), Some(_)) => Err((
            "power".into(),
            "mqtt and ha".into(),
            "a miner has one plug: give power.mqtt or power.ha, not both".into(),
        )),
        (None, None) => Err((
            "power".into(),
            "{}".into(),
            "give power.mqtt { command_topic, ... } or power.ha { entity_id }".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `power:` section written as JSON.
    fn raw(json: &str) -> RawPower {
        serde_json::from_str(json).unwrap()
    }

    /// Validated without a Home Assistant API.
    fn mqtt(json: &str) -> Result<Plug, (String, String, String)> {
        validate(raw(json), None)
    }

    #[test]
    fn tasmota_zigbee2mqtt_and_shelly_states_are_read() {
        // Tasmota: stat/<topic>/POWER carries ON / OFF.
        let Ok(Plug::Mqtt(tasmota)) = mqtt(
            r#"{"mqtt":{"command_topic":"cmnd/plug1/POWER","state_topic":"stat/plug1/POWER"}}"#,
        ) else {
            panic!()
        };
        assert_eq!(tasmota.read_state(b"ON"), Some(true));
        assert_eq!(tasmota.read_state(b"off"), Some(false));
        assert_eq!(tasmota.read_state(b"{\"POWER\":\"ON\"}"), None);
        // Zigbee2MQTT: zigbee2mqtt/<name> carries JSON with "state".
        let Ok(Plug::Mqtt(z2m)) = mqtt(
            r#"{"mqtt":{"command_topic":"zigbee2mqtt/plug/set","state_topic":"zigbee2mqtt/plug","state_key":"state"}}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            z2m.read_state(br#"{"state":"OFF","power":0,"linkquality":120}"#),
            Some(false)
        );
        assert_eq!(z2m.read_state(br#"{"linkquality":120}"#), None);
        // Shelly Gen2: <id>/status/switch:0 carries JSON with a boolean "output".
        let Ok(Plug::Mqtt(shelly)) = mqtt(
            r#"{"mqtt":{"command_topic":"shelly/command/switch:0","payload_on":"on","payload_off":"off","state_topic":"shelly/status/switch:0","state_key":"output","state_on":"true","state_off":"false"}}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            shelly.read_state(br#"{"id":0,"output":true,"apower":14.2}"#),
            Some(true)
        );
    }

    #[test]
    fn a_bad_plug_says_which_key_and_what_to_write() {
        let e = mqtt(r#"{"mqtt":{"command_topic":"cmnd/+/POWER"}}"#).unwrap_err();
        assert_eq!(e.0, "power.mqtt.command_topic");
        let e = mqtt(r#"{"mqtt":{"command_topic":"a","payload_on":"X","payload_off":"X"}}"#)
            .unwrap_err();
        assert!(e.2.contains("differ"));
        let e = mqtt(r#"{}"#).unwrap_err();
        assert!(e.2.contains("power.mqtt"));
        let e = mqtt(r#"{"ha":{"entity_id":"switch.plug"}}"#).unwrap_err();
        assert!(e.2.contains("token"), "{e:?}");
        let e = mqtt(r#"{"ha":{"entity_id":"plug"}}"#).unwrap_err();
        assert_eq!(e.0, "power.ha.entity_id");
        let api = HaApi::resolve(&RawHa {
            url: Some("http://ha.local:8123/".into()),
            token: Some(Secret::new("t")),
        })
        .unwrap();
        assert_eq!(api.base, "http://ha.local:8123/api");
        assert!(validate(raw(r#"{"ha":{"entity_id":"switch.plug_1"}}"#), Some(&api)).is_ok());
    }
}
