//! OCPP-J framing: `[2, id, action, payload]` CALL, `[3, id, payload]`
//! CALLRESULT, `[4, id, errorCode, errorDescription, errorDetails]` CALLERROR.
//!
//! Frames are parsed by hand from a `serde_json::Value` array rather than with
//! serde's untagged enums, which break once `serde_json/arbitrary_precision`
//! is on (rust-ocpp switches it on for the whole build).

use super::error::{CallError, ErrorCode};
use serde_json::{json, Value};

/// OCPP-J 1.6 limits a message id to 36 characters (a UUID).
pub const MAX_MESSAGE_ID_LEN: usize = 36;

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub action: String,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call(Call),
    CallResult {
        id: String,
        payload: Value,
    },
    CallError {
        id: String,
        code: String,
        description: String,
        details: Value,
    },
}

/// Why a text frame could not become a [`Frame`], and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameError {
    /// The message id could be read: answer a CALLERROR with it.
    Reply { id: String, error: CallError },
    /// Nothing identifies the message, so nothing can be answered: log, drop.
    Unreadable(String),
    /// A MessageTypeId OCPP-J does not define (`[9, ...]`): ignored.
    UnknownMessageType(Value),
}

pub fn parse(text: &str) -> Result<Frame, FrameError> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // Not JSON. If a CALL's id can still be made out of the text, the
            // charger deserves a FormationViolation rather than silence.
            return Err(match salvage_call_id(text) {
                Some(id) => FrameError::Reply {
                    id,
                    error: CallError::new(
                        ErrorCode::FormationViolation,
                        format!("Frame is not valid JSON: {e}"),
                    ),
                },
                None => FrameError::Unreadable(format!("not JSON: {e}")),
            });
        }
    };
    let Value::Array(items) = value else {
        return Err(FrameError::Unreadable("frame is not a JSON array".into()));
    };
    let readable_id = items.get(1).and_then(Value::as_str).map(str::to_owned);
    let type_id = match items.first() {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) => t,
            None => return Err(FrameError::UnknownMessageType(Value::Number(n.clone()))),
        },
        _ => {
            return Err(match readable_id {
                Some(id) => FrameError::Reply {
                    id,
                    error: CallError::new(
                        ErrorCode::FormationViolation,
                        "MessageTypeId must be a number",
                    ),
                },
                None => FrameError::Unreadable("MessageTypeId is not a number".into()),
            })
        }
    };
    match type_id {
        2 => parse_call(items, readable_id),
        3 | 4 => parse_answer(type_id, items, readable_id),
        _ => Err(FrameError::UnknownMessageType(items[0].clone())),
    }
}

fn parse_call(mut items: Vec<Value>, id: Option<String>) -> Result<Frame, FrameError> {
    let Some(id) = id else {
        return Err(FrameError::Unreadable(
            "CALL without a string message id".into(),
        ));
    };
    let reply = |code, description: &str| FrameError::Reply {
        id: id.clone(),
        error: CallError::new(code, description),
    };
    if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_LEN {
        return Err(reply(
            ErrorCode::FormationViolation,
            "Message id must be 1 to 36 characters",
        ));
    }
    if items.len() < 4 {
        return Err(reply(
            ErrorCode::ProtocolError,
            "CALL is incomplete: expected [2, id, action, payload]",
        ));
    }
    if items.len() > 4 {
        return Err(reply(
            ErrorCode::FormationViolation,
            "CALL has more than 4 elements",
        ));
    }
    let payload = items.pop().unwrap_or(Value::Null);
    let Some(action) = items[2].as_str().map(str::to_owned) else {
        return Err(reply(
            ErrorCode::FormationViolation,
            "Action must be a string",
        ));
    };
    if !payload.is_object() {
        return Err(reply(
            ErrorCode::FormationViolation,
            "Payload must be a JSON object",
        ));
    }
    Ok(Frame::Call(Call {
        id,
        action,
        payload,
    }))
}

fn parse_answer(type_id: i64, items: Vec<Value>, id: Option<String>) -> Result<Frame, FrameError> {
    // An answer that cannot be matched to our CALL is dropped: replying to a
    // reply would only start a ping-pong of errors.
    let Some(id) = id else {
        return Err(FrameError::Unreadable(
            "answer without a string message id".into(),
        ));
    };
    let mut items = items.into_iter().skip(2);
    if type_id == 3 {
        let payload = items.next().unwrap_or(Value::Null);
        return Ok(Frame::CallResult { id, payload });
    }
    let code = items
        .next()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let description = items
        .next()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let details = items.next().unwrap_or_else(|| json!({}));
    Ok(Frame::CallError {
        id,
        code,
        description,
        details,
    })
}

/// Best effort: `[2, "abc", ...` at the start of broken JSON still names the
/// message, so it can be answered.
fn salvage_call_id(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix('[')?.trim_start();
    let rest = rest
        .strip_prefix('2')?
        .trim_start()
        .strip_prefix(',')?
        .trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    let id = &rest[..end];
    (!id.is_empty() && id.len() <= MAX_MESSAGE_ID_LEN && !id.contains('\\')).then(|| id.to_owned())
}

pub fn encode_call(id: &str, action: &str, payload: &Value) -> String {
    json!([2, id, action, payload]).to_string()
}

pub fn encode_result(id: &str, payload: &Value) -> String {
    json!([3, id, payload]).to_string()
}

pub fn encode_error(id: &str, error: &CallError) -> String {
    let details = if error.details.is_object() {
        error.details.clone()
    } else {
        json!({})
    };
    json!([4, id, error.code.as_str(), error.description, details]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_code(text: &str) -> ErrorCode {
        match parse(text) {
            Err(FrameError::Reply { error, .. }) => error.code,
            other => panic!("expected a CALLERROR reply for {text}, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_call_parses() {
        let frame = parse(r#"[2,"19223201","Heartbeat",{}]"#).unwrap();
        assert_eq!(
            frame,
            Frame::Call(Call {
                id: "19223201".into(),
                action: "Heartbeat".into(),
                payload: json!({})
            })
        );
    }

    #[test]
    fn answers_parse_with_their_ids() {
        assert!(
            matches!(parse(r#"[3,"a",{"status":"Accepted"}]"#), Ok(Frame::CallResult { id, .. }) if id == "a")
        );
        match parse(r#"[4,"b","NotSupported","nope",{}]"#).unwrap() {
            Frame::CallError { id, code, .. } => {
                assert_eq!((id.as_str(), code.as_str()), ("b", "NotSupported"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_incomplete_call_with_a_readable_id_is_a_protocol_error() {
        assert_eq!(
            reply_code(r#"[2,"1","Heartbeat"]"#),
            ErrorCode::ProtocolError
        );
    }

    #[test]
    fn shape_errors_are_formation_violations() {
        assert_eq!(
            reply_code(r#"[2,"1","Heartbeat",{},1]"#),
            ErrorCode::FormationViolation
        );
        assert_eq!(reply_code(r#"[2,"1",7,{}]"#), ErrorCode::FormationViolation);
        assert_eq!(
            reply_code(r#"[2,"1","Heartbeat",[]]"#),
            ErrorCode::FormationViolation
        );
        assert_eq!(
            reply_code(r#"["x","1","Heartbeat",{}]"#),
            ErrorCode::FormationViolation
        );
        assert_eq!(
            reply_code(r#"[2,"1234567890123456789012345678901234567","Heartbeat",{}]"#),
            ErrorCode::FormationViolation
        );
    }

    #[test]
    fn broken_json_is_answered_when_the_id_can_be_read() {
        assert_eq!(
            reply_code(r#"[2, "42", "Heartbeat", {"#),
            ErrorCode::FormationViolation
        );
        assert!(matches!(
            parse("not json at all"),
            Err(FrameError::Unreadable(_))
        ));
        assert!(matches!(
            parse(r#"{"a":1}"#),
            Err(FrameError::Unreadable(_))
        ));
        assert!(matches!(
            parse(r#"[2, 5, "Heartbeat", {}]"#),
            Err(FrameError::Unreadable(_))
        ));
    }

    #[test]
    fn unknown_message_types_are_ignored() {
        assert!(matches!(
            parse(r#"[9,"1","x",{}]"#),
            Err(FrameError::UnknownMessageType(_))
        ));
    }

    #[test]
    fn encoded_errors_always_carry_an_object() {
        let text = encode_error(
            "7",
            &CallError::new(ErrorCode::NotImplemented, "no").with_details(json!(null)),
        );
        assert_eq!(text, r#"[4,"7","NotImplemented","no",{}]"#);
    }
}
