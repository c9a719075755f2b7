//! Reading the server's answers: a completion body, an error object inside a 200, and
//! what an HTTP status means for the retry loop.

use std::time::Duration;

use serde_json::Value;

use super::{transient, Failure, LlmClient};
use crate::llm::error::LlmError;
use crate::llm::types::{ChatResponse, Usage};

impl LlmClient {
    pub(super) fn classify(
        &self,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    ) -> Failure {
        match status {
            429 => Failure::RateLimited {
                retry_after,
                message,
            },
            401 | 403 => Failure::Refused { status, message },
            408 | 500..=599 => Failure::Transient {
                what: format!("HTTP {status}: {message}"),
                retry_after,
            },
            _ => Failure::Fatal(LlmError::Http {
                endpoint: self.endpoint.clone(),
                status,
                message,
            }),
        }
    }

    /// An error object inside a 200 answer (OpenRouter passes provider errors so).
    pub(super) fn embedded_error(&self, v: &Value) -> Option<Failure> {
        let err = v.get("error")?;
        if err.is_null() {
            return None;
        }
        let message = self.scrub(
            err.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string())
                .as_str(),
        );
        let code = err
            .get("code")
            .and_then(|c| {
                c.as_u64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            })
            .map(|c| c as u16);
        Some(match code {
            Some(c) if c >= 400 => self.classify(c, message, None),
            _ => transient(format!("server error: {message}")),
        })
    }

    pub(super) fn parse_completion(
        &self,
        text: &str,
        key_index: usize,
    ) -> Result<ChatResponse, Failure> {
        let invalid = |detail: String| {
            Failure::Fatal(LlmError::InvalidResponse {
                endpoint: self.endpoint.clone(),
                detail,
            })
        };
        let v: Value = serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "the body is not JSON ({e}); it starts with {:?}",
                self.scrub(&preview(text))
            ))
        })?;
        if let Some(f) = self.embedded_error(&v) {
            return Err(f);
        }
        let choice = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .ok_or_else(|| invalid("the answer has no `choices[0]`".into()))?;
        let message = choice
            .get("message")
            .ok_or_else(|| invalid("`choices[0]` has no `message`".into()))?;
        let content = match message.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => {
                return Err(invalid(format!(
                    "`choices[0].message.content` is not a string but {}",
                    json_kind(other)
                )))
            }
        };
        Ok(ChatResponse {
            content,
            usage: v
                .get("usage")
                .and_then(Usage::from_json)
                .unwrap_or_default(),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(&self.settings.model)
                .to_string(),
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            key_index,
            attempts: 0,
        })
    }
}

/// The server's error message: `error.message` of an OpenAI-style error body, else the
/// body itself (shortened).
pub(super) fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let err = v.get("error").unwrap_or(&v);
        if let Some(m) = err.get("message").and_then(Value::as_str) {
            return preview(m);
        }
        if let Some(m) = err.as_str() {
            return preview(m);
        }
    }
    let t = body.trim();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        preview(t)
    }
}

pub(super) fn preview(s: &str) -> String {
    const MAX: usize = 300;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
