//! OCPP-J frames (OCPP-J 1.6 §4): `[2, id, action, payload]` CALL,
//! `[3, id, payload]` CALLRESULT and `[4, id, code, description, details]` CALLERROR.
//!
//! Frames are parsed by hand from a `Vec<Value>` rather than through a serde enum,
//! so a malformed frame from the server can be answered precisely instead of
//! failing as a whole.

use serde_json::{json, Value};

use super::error_code;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call {
        id: String,
        action: String,
        payload: Value,
    },
    CallResult {
        id: String,
        payload: Value,
    },
    CallError(CallError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub id: String,
    pub code: String,
    pub description: String,
    pub details: Value,
}

/// Why a text could not be read as a frame. `id` is set when the message id could
/// be read, so the receiver can still answer with a CALLERROR.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<String>,
    pub code: &'static str,
    pub description: String,
}

impl FrameError {
    /// An unknown MessageTypeId is to be ignored, not answered (OCPP-J 1.6 §4.1.3).
    pub fn is_unknown_type(&self) -> bool {
        self.code == error_code::NOT_SUPPORTED
    }
}

impl Frame {
    pub fn call(id: impl Into<String>, action: impl Into<String>, payload: Value) -> Self {
        Frame::Call {
            id: id.into(),
            action: action.into(),
            payload,
        }
    }

    pub fn result(id: impl Into<String>, payload: Value) -> Self {
        Frame::CallResult {
            id: id.into(),
            payload,
        }
    }

    pub fn error(id: impl Into<String>, code: &str, description: impl Into<String>) -> Self {
        Frame::CallError(CallError {
            id: id.into(),
            code: code.to_string(),
            description: description.into(),
            details: json!({}),
        })
    }

    pub fn id(&self) -> &str {
        match self {
            Frame::Call { id, .. } | Frame::CallResult { id, .. } => id,
            Frame::CallError(e) => &e.id,
        }
    }

    pub fn to_text(&self) -> String {
        let v = match self {
            Frame::Call {
                id,
                action,
                payload,
            } => json!([2, id, action, payload]),
            Frame::CallResult { id, payload } => json!([3, id, payload]),
            Frame::CallError(e) => json!([4, e.id, e.code, e.description, e.details]),
        };
        v.to_string()
    }

    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        let bad = |id: Option<String>, code, description: &str| FrameError {
            id,
            code,
            description: description.to_string(),
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|_| bad(None, error_code::FORMATION_VIOLATION, "not JSON"))?;
        let Value::Array(items) = value else {
            return Err(bad(
                None,
                error_code::FORMATION_VIOLATION,
                "not a JSON array",
            ));
        };
        let type_id = items
            .first()
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(None, error_code::FORMATION_VIOLATION, "no MessageTypeId"))?;
        let id = items
            .get(1)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(None, error_code::FORMATION_VIOLATION, "no message id"))?;
        let incomplete = |what: &str| bad(Some(id.clone()), error_code::PROTOCOL_ERROR, what);
        match type_id {
            2 => {
                let action = items
                    .get(2)
                    .and_then(Value::as_str)
                    .ok_or_else(|| incomplete("CALL without action"))?;
                let payload = items
                    .get(3)
                    .cloned()
                    .ok_or_else(|| incomplete("CALL without payload"))?;
                if !payload.is_object() {
                    return Err(bad(
                        Some(id),
                        error_code::FORMATION_VIOLATION,
                        "payload is not an object",
                    ));
                }
                Ok(Frame::Call {
                    id,
                    action: action.to_string(),
                    payload,
                })
            }
            3 => {
                let payload = items
                    .get(2)
                    .cloned()
                    .ok_or_else(|| incomplete("CALLRESULT without payload"))?;
                Ok(Frame::CallResult { id, payload })
            }
            4 => {
                let code = items
                    .get(2)
                    .and_then(Value::as_str)
                    .unwrap_or(error_code::GENERIC_ERROR);
                let description = items.get(3).and_then(Value::as_str).unwrap_or("");
                let details = items.get(4).cloned().unwrap_or_else(|| json!({}));
                Ok(Frame::CallError(CallError {
                    id,
                    code: code.to_string(),
                    description: description.to_string(),
                    details,
                }))
            }
            _ => Err(bad(
                Some(id),
                error_code::NOT_SUPPORTED,
                "unknown MessageTypeId",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_round_trips() {
        let f = Frame::call("1", "Heartbeat", json!({}));
        assert_eq!(f.to_text(), r#"[2,"1","Heartbeat",{}]"#);
        assert_eq!(Frame::parse(&f.to_text()).unwrap(), f);
    }

    #[test]
    fn results_and_errors_parse() {
        assert_eq!(
            Frame::parse(r#"[3,"7",{"currentTime":"x"}]"#).unwrap(),
            Frame::result("7", json!({"currentTime":"x"}))
        );
        let Frame::CallError(e) = Frame::parse(r#"[4,"8","NotImplemented","no",{}]"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((e.id.as_str(), e.code.as_str()), ("8", "NotImplemented"));
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        assert_eq!(Frame::parse("nope").unwrap_err().code, "FormationViolation");
        assert_eq!(Frame::parse("{}").unwrap_err().code, "FormationViolation");
        let e = Frame::parse(r#"[2,"5","Reset"]"#).unwrap_err();
        assert_eq!((e.id.as_deref(), e.code), (Some("5"), "ProtocolError"));
        assert!(Frame::parse(r#"[9,"5"]"#).unwrap_err().is_unknown_type());
    }
}
