//! OCPP-J framing: `[2, id, action, payload]` CALL, `[3, id, payload]`
//! CALLRESULT, `[4, id, errorCode, errorDescription, errorDetails]` CALLERROR.
//!
//! Frames are parsed by hand from a `serde_json::Value` array rather than with
//! serde's untagged enums, which break once `serde_json/arbitrary_precision`
//! is on (rust-ocpp switches it on for the whole build).

use crate::error::{CallError, ErrorCode};
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

impl Frame {
    /// The frame as OCPP-J text; [`parse`] reads it back as the same frame
    /// (a CALLERROR's details as `{}` when they were not an object).
    pub fn encode(&self) -> String {
        match self {
            Frame::Call(call) => encode_call(&call.id, &call.action, &call.payload),
            Frame::CallResult { id, payload } => encode_result(id, payload),
            Frame::CallError {
                id,
                code,
                description,
                details,
            } => encode_call_error(id, code, description, details),
        }
    }
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
    let Value::Array(mut items) = value else {
        return Err(FrameError::Unreadable("frame is not a JSON array".into()));
    };
    // Strings are moved out of the parsed array, never copied.
    let readable_id = match items.get_mut(1) {
        Some(Value::String(id)) => Some(std::mem::take(id)),
        _ => None,
    };
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
        _ => Err(FrameError::UnknownMessageType(items.swap_remove(0))),
    }
}

fn parse_call(mut items: Vec<Value>, id: Option<String>) -> Result<Frame, FrameError> {
    let Some(id) = id else {
        return Err(FrameError::Unreadable(
            "CALL without a string message id".into(),
        ));
    };
    let reply = |id: String, code, description: &str| FrameError::Reply {
        id,
        error: CallError::new(code, description),
    };
    if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_LEN {
        return Err(reply(
            id,
            ErrorCode::FormationViolation,
            "Message id must be 1 to 36 characters",
        ));
    }
    if items.len() < 4 {
        return Err(reply(
            id,
            ErrorCode::ProtocolError,
            "CALL is incomplete: expected [2, id, action, payload]",
        ));
    }
    if items.len() > 4 {
        return Err(reply(
            id,
            ErrorCode::FormationViolation,
            "CALL has more than 4 elements",
        ));
    }
    let payload = items.pop().unwrap_or(Value::Null);
    let action = match &mut items[2] {
        Value::String(action) => std::mem::take(action),
        _ => {
            return Err(reply(
                id,
                ErrorCode::FormationViolation,
                "Action must be a string",
            ))
        }
    };
    if !payload.is_object() {
        return Err(reply(
            id,
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
    let mut text = || match items.next() {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let code = text();
    let description = text();
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

/// Writes a frame's elements as a JSON array straight from borrowed parts: no
/// copy of the payload into an intermediate `Value`.
fn to_text(elements: &impl serde::Serialize) -> String {
    serde_json::to_string(elements).expect("JSON values and strings always serialize")
}

pub fn encode_call(id: &str, action: &str, payload: &Value) -> String {
    to_text(&(2, id, action, payload))
}

pub fn encode_result(id: &str, payload: &Value) -> String {
    to_text(&(3, id, payload))
}

pub fn encode_error(id: &str, error: &CallError) -> String {
    encode_call_error(id, error.code.as_str(), &error.description, &error.details)
}

/// A CALLERROR with any code (one received from a peer and passed on, say).
/// `errorDetails` is always an object, as OCPP-J requires: `{}` when the
/// details given are not one.
pub fn encode_call_error(id: &str, code: &str, description: &str, details: &Value) -> String {
    static EMPTY: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!({}));
    let details = if details.is_object() { details } else { &EMPTY };
    to_text(&(4, id, code, description, details))
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
    #[test]
    fn encoded_frames_parse_back_to_themselves() {
        let frames = [
            Frame::Call(Call {
                id: "1".into(),
                action: "Heartbeat".into(),
                payload: json!({}),
            }),
            Frame::CallResult {
                id: "2".into(),
                payload: json!({"currentTime": "2024-01-15T10:30:00.000Z", "interval": 300}),
            },
            Frame::CallError {
                id: "3".into(),
                code: "GenericError".into(),
                description: "\"quoted\"\n".into(),
                details: json!({"why": [1, 2.5, null]}),
            },
        ];
        for frame in frames {
            assert_eq!(parse(&frame.encode()), Ok(frame));
        }
        assert_eq!(
            encode_call("1", "Heartbeat", &json!({})),
            r#"[2,"1","Heartbeat",{}]"#
        );
    }

    #[test]
    fn a_call_error_without_code_or_details_reads_as_empty() {
        assert_eq!(
            parse(r#"[4,"9"]"#),
            Ok(Frame::CallError {
                id: "9".into(),
                code: String::new(),
                description: String::new(),
                details: json!({}),
            })
        );
    }
}

/// Property tests: what OCPP-J 1.6 §4 says of any text a peer may send.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    /// Any JSON value, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Decimals of at most 15 digits: serde_json reads those exactly
            // (longer ones may come back one ulp off without its
            // `float_roundtrip` feature, which is not the framing's business).
            (-1_000_000_000_000_000i64..1_000_000_000_000_000)
                .prop_map(|n| Value::from(n as f64 / 1000.0)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    fn any_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-zA-Z]{1,8}", any_json(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// Ids a peer may use: 1 to 36 characters, anything printable.
    fn message_id() -> impl Strategy<Value = String> {
        "[ -~]{1,36}"
    }

    /// What OCPP-J 1.6 says of a frame that is a JSON array: the outcome
    /// class and, for an answerable CALL, the CALLERROR code.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Frame,
        Reply(String, ErrorCode),
        Unreadable,
        Ignored,
    }

    fn expected(items: &[Value]) -> Outcome {
        let id = items.get(1).and_then(Value::as_str).map(str::to_owned);
        let reply = |code| Outcome::Reply(id.clone().unwrap(), code);
        match items.first() {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(2) => {
                    let Some(id) = &id else {
                        return Outcome::Unreadable;
                    };
                    if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_LEN {
                        reply(ErrorCode::FormationViolation)
                    } else if items.len() < 4 {
                        reply(ErrorCode::ProtocolError)
                    } else if items.len() > 4 || !items[2].is_string() || !items[3].is_object() {
                        reply(ErrorCode::FormationViolation)
                    } else {
                        Outcome::Frame
                    }
                }
                Some(3 | 4) if id.is_some() => Outcome::Frame,
                Some(3 | 4) => Outcome::Unreadable,
                _ => Outcome::Ignored,
            },
            _ if id.is_some() => reply(ErrorCode::FormationViolation),
            _ => Outcome::Unreadable,
        }
    }

    fn outcome(result: Result<Frame, FrameError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Frame,
            Err(FrameError::Reply { id, error }) => Outcome::Reply(id, error.code),
            Err(FrameError::Unreadable(_)) => Outcome::Unreadable,
            Err(FrameError::UnknownMessageType(_)) => Outcome::Ignored,
        }
    }

    /// Arrays shaped like frames, right and wrong: a MessageTypeId (mostly
    /// 2, 3 or 4), an id (mostly a string), then anything.
    fn frame_like() -> impl Strategy<Value = Vec<Value>> {
        let type_id = prop_oneof![
            4 => (2i64..=4).prop_map(Value::from),
            1 => any_json(),
        ];
        let id = prop_oneof![
            4 => "[ -~]{0,40}".prop_map(Value::String),
            1 => any_json(),
        ];
        let action = prop_oneof![
            4 => "[A-Za-z]{1,20}".prop_map(Value::String),
            1 => any_json(),
        ];
        let payload = prop_oneof![3 => any_object(), 1 => any_json()];
        (
            type_id,
            id,
            action,
            payload,
            prop::collection::vec(any_json(), 0..2),
            0usize..=6,
        )
            .prop_map(|(t, id, action, payload, extra, len)| {
                let mut items = vec![t, id, action, payload];
                items.extend(extra);
                items.truncate(len);
                items
            })
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_say_why_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            match parse(&text) {
                Ok(frame) => prop_assert_eq!(parse(&frame.encode()), Ok(frame)),
                Err(FrameError::Reply { error, .. }) => {
                    prop_assert!(matches!(
                        error.code,
                        ErrorCode::FormationViolation | ErrorCode::ProtocolError
                    ));
                }
                Err(_) => {}
            }
        }

        #[test]
        fn a_frame_shaped_array_gets_what_ocpp_j_says(items in frame_like()) {
            let text = Value::Array(items.clone()).to_string();
            prop_assert_eq!(outcome(parse(&text)), expected(&items));
        }

        #[test]
        fn a_call_whose_payload_is_not_an_object_is_a_formation_violation(
            id in message_id(),
            payload in any_json().prop_filter("not an object", |p| !p.is_object()),
        ) {
            let text = Value::Array(vec![2.into(), id.clone().into(), "Heartbeat".into(), payload]).to_string();
            prop_assert_eq!(outcome(parse(&text)), Outcome::Reply(id, ErrorCode::FormationViolation));
        }

        #[test]
        fn broken_json_after_a_readable_call_id_is_answered_with_that_id(
            id in "[A-Za-z0-9:._-]{1,36}",
            payload in any_object(),
            cut in any::<prop::sample::Index>(),
        ) {
            let text = encode_call(&id, "MeterValues", &payload);
            // Any strict prefix that still holds `[2,"id"` is not JSON.
            let head = format!(r#"[2,"{id}""#).len();
            let mut end = head + cut.index(text.len() - head);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            prop_assert_eq!(outcome(parse(&text[..end])), Outcome::Reply(id, ErrorCode::FormationViolation));
        }

        #[test]
        fn what_we_encode_parses_back_to_the_same_frame(
            id in message_id(),
            action in "[A-Za-z]{1,30}",
            payload in any_object(),
            result in any_json(),
            code in prop::sample::select(ErrorCode::ALL),
            description in ".{0,40}",
            details in any_object(),
        ) {
            let call = Frame::Call(Call { id: id.clone(), action, payload });
            prop_assert_eq!(parse(&call.encode()), Ok(call));
            let answer = Frame::CallResult { id: id.clone(), payload: result };
            prop_assert_eq!(parse(&answer.encode()), Ok(answer));
            let error = CallError::new(code, description.clone()).with_details(details.clone());
            prop_assert_eq!(
                parse(&encode_error(&id, &error)),
                Ok(Frame::CallError { id, code: code.as_str().to_owned(), description, details })
            );
        }
    }
}
