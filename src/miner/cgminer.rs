//! The cgminer API (TCP 4028) as Avalon and Antminer firmware speak it: parsing only, so far.
//!
//! Replies are JSON terminated by a NUL byte, or the plain-text form `KEY=value,...|` for
//! requests like `summary|`. Real firmware sends malformed JSON — a trailing NUL, `",}"`, `"}{"`
//! between objects, `"[,{"`, bare `inf`/`nan`, duplicate keys — and Avalon packs its telemetry into
//! one string of `Key[value]` pairs (`MM ID0`). Each is handled here as a pure function from bytes
//! to typed values.

use super::MinerError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a reply could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplyError {
    #[error("empty reply")]
    Empty,
    #[error("not JSON even after repair: {0}")]
    Json(String),
    #[error("{0}")]
    Missing(String),
    #[error("the miner answered {status} (code {code}): {msg}")]
    Status {
        status: String,
        code: i64,
        msg: String,
    },
}

/// Repairs the malformations real cgminer builds send, outside string literals only:
/// NULs, `,}` / `,]` (a comma before a closing bracket), `{,` / `[,`, `}{` (missing comma between
/// objects), and bare `inf`, `-inf`, `nan` (as `null`).
pub fn repair_json(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '\0' => {}
            '"' => {
                in_string = true;
                out.push(c);
            }
            ',' => {
                // Drop a comma that follows an opening bracket or precedes a closing one.
                let prev = out.trim_end().chars().last();
                let next = chars.clone().find(|c| !c.is_whitespace());
                let dangling = matches!(prev, Some('[') | Some('{') | Some(','))
                    || matches!(next, Some('}') | Some(']'));
                if !dangling {
                    out.push(c);
                }
            }
            '{' => {
                if out.trim_end().ends_with('}') {
                    out.push(',');
                }
                out.push(c);
            }
            c if c.is_ascii_alphabetic()
                || (c == '-' && chars.peek().is_some_and(|n| n.is_ascii_alphabetic())) =>
            {
                let mut word = String::from(c);
                while let Some(n) = chars.peek() {
                    if n.is_ascii_alphanumeric() {
                        word.push(*n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                match word.to_ascii_lowercase().trim_start_matches('-') {
                    "inf" | "infinity" | "nan" => out.push_str("null"),
                    _ => out.push_str(&word),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Parses a JSON reply, repaired as needed, and checks its `STATUS`: `E` (error) and `F` (fatal)
/// become errors; `S`, `I` and `W` pass. Duplicate keys keep the last value.
pub fn parse_json_reply(raw: &[u8]) -> Result<Value, ReplyError> {
    let repaired = repair_json(raw);
    if repaired.is_empty() {
        return Err(ReplyError::Empty);
    }
    let value: Value =
        serde_json::from_str(&repaired).map_err(|e| ReplyError::Json(e.to_string()))?;
    check_status(&value)?;
    Ok(value)
}

/// Checks one command's reply from a joined request (`summary+estats` answers
/// `{"summary": [reply], "estats": [reply]}`): its own `STATUS` must not be an error, and it must
/// hold the section `key` (`SUMMARY`, `STATS`, …). Returns that command's reply.
pub fn joined_part<'a>(
    joined: &'a Value,
    command: &str,
    key: &str,
) -> Result<&'a Value, ReplyError> {
    let part = joined
        .get(command)
        .and_then(|p| p.get(0))
        .ok_or_else(|| ReplyError::Missing(format!("no {command} reply in the joined answer")))?;
    check_status(part)?;
    require_section(part, key)?;
    Ok(part)
}

/// An error `STATUS` (`E` or `F`) as an error.
fn check_status(value: &Value) -> Result<(), ReplyError> {
    if let Some(status) = value.get("STATUS").and_then(|s| s.get(0)) {
        let code = status.get("Code").and_then(Value::as_i64).unwrap_or(0);
        let s = status.get("STATUS").and_then(Value::as_str).unwrap_or("");
        if s == "E" || s == "F" {
            return Err(ReplyError::Status {
                status: s.into(),
                code,
                msg: status
                    .get("Msg")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
            });
        }
    }
    Ok(())
}

/// A reply must carry the section it was asked for: a `summary` reply without `SUMMARY` has not
/// answered, however successful its status says it was.
pub fn require_section(reply: &Value, key: &str) -> Result<(), ReplyError> {
    match reply.get(key).and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Ok(()),
        _ => Err(ReplyError::Missing(format!(
            "the reply has no {key} section"
        ))),
    }
}

/// One section of a plain-text reply, `STATUS=S,When=…,Code=7` → key/value pairs.
pub type PlainSection = BTreeMap<String, String>;

/// Parses the plain-text form: sections separated by `|`, fields by `,`, key and value by the
/// first `=`. cgminer escapes `,` `|` `=` and `\` inside values with a backslash. A field
/// without `=` is kept with an empty value.
pub fn parse_plain_reply(raw: &[u8]) -> Vec<PlainSection> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let mut sections = Vec::new();
    let mut section = PlainSection::new();
    let (mut key, mut value) = (String::new(), String::new());
    let mut in_value = false;
    let mut chars = text.chars();
    let flush_field =
        |section: &mut PlainSection, key: &mut String, value: &mut String, in_value: &mut bool| {
            if !key.trim().is_empty() {
                section.insert(key.trim().to_string(), std::mem::take(value));
            }
            key.clear();
            value.clear();
            *in_value = false;
        };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    if in_value {
                        value.push(escaped)
                    } else {
                        key.push(escaped)
                    }
                }
            }
            '=' if !in_value => in_value = true,
            ',' => flush_field(&mut section, &mut key, &mut value, &mut in_value),
            '|' => {
                flush_field(&mut section, &mut key, &mut value, &mut in_value);
                if !section.is_empty() {
                    sections.push(std::mem::take(&mut section));
                }
            }
            c => {
                if in_value {
                    value.push(c)
                } else {
                    key.push(c)
                }
            }
        }
    }
    flush_field(&mut section, &mut key, &mut value, &mut in_value);
    if !section.is_empty() {
        sections.push(section);
    }
    sections
}

/// A plain reply in the JSON reply's shape: `{"STATUS": [first section], key: [the rest]}`, with
/// numbers and booleans typed, so the adapters read both forms the same way.
pub fn plain_as_json(sections: &[PlainSection], key: &str) -> Value {
    let typed = |section: &PlainSection| -> Value {
        Value::Object(
            section
                .iter()
                .map(|(k, v)| {
                    let value = match v.as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        _ => v
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .and_then(|f| {
                                if f.fract() == 0.0 && f.abs() < 9e15 {
                                    Some(Value::from(f as i64))
                                } else {
                                    serde_json::Number::from_f64(f).map(Value::Number)
                                }
                            })
                            .unwrap_or_else(|| Value::String(v.clone())),
                    };
                    (k.clone(), value)
                })
                .collect(),
        )
    };
    let mut out = serde_json::Map::new();
    if let Some(first) = sections.first() {
        out.insert("STATUS".into(), Value::Array(vec![typed(first)]));
    }
    out.insert(
        key.into(),
        Value::Array(sections.iter().skip(1).map(typed).collect()),
    );
    Value::Object(out)
}

/// Splits an Avalon `MM ID0` blob, `Ver[…] DNA[…] PS[0 0 27541 4 0 3756 133] …`, into its pairs
/// in order. Values keep inner spaces; keys repeated later win in `get`.
pub fn parse_bracket_blob(blob: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = blob;
    while let Some(open) = rest.find('[') {
        let key = rest[..open].trim();
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let value = &rest[open + 1..open + close];
        // A key is the run of word characters just before '[' (the Avalon Q blob starts with
        // `'STATS':{Ver[…]`).
        let key = key
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if !key.is_empty() {
            pairs.push((key.to_string(), value.trim().to_string()));
        }
        rest = &rest[open + close + 1..];
    }
    pairs
}

/// The value of `key` in a bracket blob.
pub fn blob_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The numbers in a blob value such as `PS[0 0 27541 4 0 3756 133]`.
pub fn blob_numbers(value: &str) -> Vec<f64> {
    value
        .split_whitespace()
        .filter_map(|n| n.trim_end_matches('%').parse().ok())
        .collect()
}

/// The largest reply read; Avalon Q `estats` with per-ASIC data is tens of kilobytes.
pub const MAX_REPLY: usize = 1 << 20;

/// Talks to one cgminer API: one request per connection, reply ended by a NUL or by the miner
/// closing the connection.
#[derive(Debug, Clone)]
pub struct CgminerClient {
    /// `host:port`.
    pub addr: String,
    pub timeout: Duration,
}

impl CgminerClient {
    pub fn new(addr: &str, timeout: Duration) -> CgminerClient {
        CgminerClient {
            addr: addr.to_string(),
            timeout,
        }
    }

    fn url(&self, command: &str) -> String {
        format!("cgminer://{}/{command}", self.addr)
    }

    /// Sends `request` and returns the raw reply without its NUL, and whether the NUL came (a
    /// reply that ends without it was cut short).
    pub async fn exchange(
        &self,
        command: &str,
        request: &[u8],
    ) -> Result<(Vec<u8>, bool), MinerError> {
        let url = self.url(command);
        let work = async {
            let mut stream =
                TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| MinerError::Unreachable {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
            stream
                .write_all(request)
                .await
                .map_err(|e| MinerError::Unreachable {
                    url: url.clone(),
                    reason: format!("sending the request: {e}"),
                })?;
            let mut reply = Vec::with_capacity(4096);
            // On the heap: an inline array would sit in every poller's future, whatever its family.
            let mut buf = vec![0u8; 8192];
            let mut terminated = false;
            loop {
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| MinerError::Malformed {
                        url: url.clone(),
                        reason: format!("reading the reply: {e}"),
                    })?;
                if n == 0 {
                    break;
                }
                if let Some(nul) = buf[..n].iter().position(|b| *b == 0) {
                    reply.extend_from_slice(&buf[..nul]);
                    terminated = true;
                    break;
                }
                reply.extend_from_slice(&buf[..n]);
                if reply.len() > MAX_REPLY {
                    return Err(MinerError::Malformed {
                        url: url.clone(),
                        reason: format!("reply larger than {MAX_REPLY} bytes"),
                    });
                }
            }
            Ok((reply, terminated))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| MinerError::Timeout {
                url: self.url(command),
                timeout: self.timeout,
            })?
    }

    /// A JSON request; `parameter` as cgminer takes it (`0,workmode,set,1`).
    pub async fn request(
        &self,
        command: &str,
        parameter: Option<&str>,
    ) -> Result<Value, MinerError> {
        let mut body = serde_json::json!({ "command": command });
        if let Some(p) = parameter {
            body["parameter"] = p.into();
        }
        // JSON shows for itself whether it is complete; the NUL is not needed.
        let (raw, _) = self.exchange(command, body.to_string().as_bytes()).await?;
        parse_json_reply(&raw).map_err(|e| self.reply_error(command, e))
    }

    /// A read command whose reply must hold `key` (`SUMMARY`, `STATS`, `POOLS`, `VERSION`).
    pub async fn read(&self, command: &str, key: &str) -> Result<Value, MinerError> {
        let v = self.request(command, None).await?;
        require_section(&v, key).map_err(|e| self.reply_error(command, e))?;
        Ok(v)
    }

    /// Splits a joined reply into its parts, each checked as `joined_part` does.
    pub fn joined_parts(
        &self,
        joined: &Value,
        parts: &[(&str, &str)],
    ) -> Result<Vec<Value>, MinerError> {
        parts
            .iter()
            .map(|(command, key)| {
                joined_part(joined, command, key)
                    .cloned()
                    .map_err(|e| self.reply_error(command, e))
            })
            .collect()
    }

    /// The plain-text form, `command|parameter`, exactly: no trailing newline.
    pub async fn request_plain(
        &self,
        command: &str,
        parameter: Option<&str>,
    ) -> Result<Vec<PlainSection>, MinerError> {
        let line = match parameter {
            Some(p) => format!("{command}|{p}"),
            None => command.to_string(),
        };
        let (raw, terminated) = self.exchange(command, line.as_bytes()).await?;
        if !terminated {
            // The plain form cannot show it is complete: without its NUL it was cut short.
            return Err(self.reply_error(
                command,
                ReplyError::Json("plain reply cut short (no NUL)".into()),
            ));
        }
        let sections = parse_plain_reply(&raw);
        match sections.first() {
            None => Err(self.reply_error(command, ReplyError::Empty)),
            Some(s) if matches!(s.get("STATUS").map(String::as_str), Some("E") | Some("F")) => {
                Err(self.reply_error(
                    command,
                    ReplyError::Status {
                        status: s["STATUS"].clone(),
                        code: s.get("Code").and_then(|c| c.parse().ok()).unwrap_or(0),
                        msg: s.get("Msg").cloned().unwrap_or_default(),
                    },
                ))
            }
            Some(_) => Ok(sections),
        }
    }

    fn reply_error(&self, command: &str, e: ReplyError) -> MinerError {
        match e {
            ReplyError::Status { status, code, msg } => MinerError::Answered {
                url: self.url(command),
                status,
                code,
                msg,
            },
            e => MinerError::Malformed {
                url: self.url(command),
                reason: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformations_real_firmware_sends_are_repaired() {
        let v = parse_json_reply(b"{\"STATUS\":[{\"STATUS\":\"S\",}],\"SUMMARY\":[{\"MHS 5s\":inf,\"x\":nan,\"y\":-inf}]}\0").unwrap();
        assert_eq!(v["SUMMARY"][0]["MHS 5s"], Value::Null);
        assert_eq!(v["SUMMARY"][0]["y"], Value::Null);
        let v = parse_json_reply(b"{\"STATS\":[,{\"a\":1}{\"b\":2}]}").unwrap();
        assert_eq!(v["STATS"], json!([{ "a": 1 }, { "b": 2 }]));
        // Repairs never touch string contents.
        let v = parse_json_reply(br#"{"Msg":"a,} }{ [,{ inf","n":1}"#).unwrap();
        assert_eq!(v["Msg"], "a,} }{ [,{ inf");
        // Duplicate keys: the last wins, no error.
        let v = parse_json_reply(br#"{"fan1":1,"fan1":2}"#).unwrap();
        assert_eq!(v["fan1"], 2);
    }

    #[test]
    fn truncated_and_error_replies_are_errors() {
        assert!(matches!(
            parse_json_reply(b"{\"STATUS\":[{\"STATUS\":\"S\""),
            Err(ReplyError::Json(_))
        ));
        assert_eq!(parse_json_reply(b"\0\0"), Err(ReplyError::Empty));
        let e =
            parse_json_reply(br#"{"STATUS":[{"STATUS":"E","Code":14,"Msg":"Invalid command"}]}"#)
                .unwrap_err();
        assert!(e.to_string().contains("Invalid command") && e.to_string().contains("14"));
    }

    #[test]
    fn an_error_inside_a_joined_reply_is_an_error() {
        let joined = json!({
            "summary": [{ "STATUS": [{ "STATUS": "E", "Code": 45, "Msg": "Access denied to 'summary' command" }] }],
            "estats": [{ "STATUS": [{ "STATUS": "S", "Code": 70 }], "STATS": [{ "ID": "AVA100" }] }],
        });
        let e = joined_part(&joined, "summary", "SUMMARY").unwrap_err();
        assert!(e.to_string().contains("Access denied"), "{e}");
        assert!(joined_part(&joined, "estats", "STATS").is_ok());
        // Successful status but no section: not an answer.
        let no_summary = json!({ "summary": [{ "STATUS": [{ "STATUS": "S" }] }] });
        let e = joined_part(&no_summary, "summary", "SUMMARY").unwrap_err();
        assert!(e.to_string().contains("no SUMMARY"), "{e}");
        assert!(joined_part(&no_summary, "estats", "STATS").is_err());
    }

    #[test]
    fn plain_form_escapes_and_types() {
        let sections = parse_plain_reply(b"STATUS=S,Code=70,Msg=CGMiner stats|STATS=0,MM ID0=SYSTEMSTATU[Work: In Work\\, Hash Board: 1] A\\=B\\|C,Ok=true,Rate=6598.84|\0");
        assert_eq!(sections.len(), 2);
        assert_eq!(
            sections[1]["MM ID0"],
            "SYSTEMSTATU[Work: In Work, Hash Board: 1] A=B|C"
        );
        let v = plain_as_json(&sections, "STATS");
        assert_eq!(v["STATUS"][0]["Code"], 70);
        assert_eq!(v["STATS"][0]["Ok"], true);
        assert_eq!(v["STATS"][0]["Rate"], 6598.84);
    }

    #[test]
    fn bracket_blob() {
        assert_eq!(
            parse_bracket_blob("'STATS':{Ver[Q-1] X[2]}")[0],
            ("Ver".to_string(), "Q-1".to_string())
        );
        let pairs = parse_bracket_blob("Ver[nano3-1]  DNA[0000]  PS[0 0 27541 4 0 3756 133] FanR[33%] SYSTEMSTATU[Work: In Work, Hash Board: 1]");
        assert_eq!(blob_get(&pairs, "Ver"), Some("nano3-1"));
        assert_eq!(
            blob_numbers(blob_get(&pairs, "PS").unwrap()),
            [0.0, 0.0, 27541.0, 4.0, 0.0, 3756.0, 133.0]
        );
        assert_eq!(blob_numbers(blob_get(&pairs, "FanR").unwrap()), [33.0]);
        assert_eq!(
            blob_get(&pairs, "SYSTEMSTATU"),
            Some("Work: In Work, Hash Board: 1")
        );
    }
}
