//! Reading a streamed answer (server-sent events): content deltas as they arrive, the
//! final usage, and a stream that stalls or stops before its end.

use futures_util::StreamExt;
use serde_json::Value;

use super::response::preview;
use super::{Failure, LlmClient};
use crate::llm::error::LlmError;
use crate::llm::sse::{SseParser, StreamState};
use crate::llm::types::ChatResponse;

impl LlmClient {
    /// Reads the SSE body of a streamed completion with key `key_index`, handing each
    /// piece of content to `on_delta`; no byte for the stall timeout fails it.
    pub(super) async fn read_stream<'d>(
        &self,
        resp: reqwest::Response,
        key_index: usize,
        on_delta: &mut (dyn FnMut(&str) + Send + 'd),
    ) -> Result<ChatResponse, Failure> {
        let cut = |state: &StreamState, detail: String| LlmError::Truncated {
            endpoint: self.endpoint.clone(),
            received_chars: state.content.chars().count(),
            detail,
        };
        let truncated = |state: &StreamState, detail: String| Failure::Fatal(cut(state, detail));
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        let mut state = StreamState::default();
        loop {
            // No total bound: a stream that keeps sending is never cut off.
            let next = tokio::time::timeout(self.settings.stall_timeout, body.next()).await;
            let chunk = match next {
                Err(_) => {
                    if state.finish_reason.is_some() {
                        break;
                    }
                    // Nothing was passed on yet: trying again is safe; else the
                    // content so far is lost.
                    return Err(match self.timed_out(true, None) {
                        Failure::TimedOut { what, .. } if !state.content.is_empty() => {
                            let partial = cut(&state, format!("the stream stalled: {what}"));
                            Failure::TimedOut {
                                what,
                                partial: Some(partial),
                            }
                        }
                        f => f,
                    });
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    if state.finish_reason.is_some() {
                        break;
                    }
                    if state.content.is_empty() {
                        return Err(self.transport_failure(&e, true));
                    }
                    return Err(truncated(
                        &state,
                        format!("the connection failed: {}", self.scrub(&e.to_string())),
                    ));
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            for data in parser.push(&chunk) {
                if data == "[DONE]" {
                    state.done = true;
                    break;
                }
                let v: Value = match serde_json::from_str(&data) {
                    Ok(v) => v,
                    Err(e) => {
                        return Err(Failure::Fatal(LlmError::InvalidResponse {
                            endpoint: self.endpoint.clone(),
                            detail: format!(
                                "a stream event is not JSON ({e}): {:?}",
                                self.scrub(&preview(&data))
                            ),
                        }))
                    }
                };
                if let Some(f) = self.embedded_error(&v) {
                    if state.content.is_empty() {
                        return Err(f);
                    }
                    // Content went out already: a retry would repeat it.
                    let what = match f {
                        Failure::Transient { what, .. }
                        | Failure::TimedOut { what, .. }
                        | Failure::Unreachable(what) => what,
                        Failure::RateLimited { message, .. } | Failure::Refused { message, .. } => {
                            message
                        }
                        Failure::Fatal(e) => e.to_string(),
                    };
                    return Err(truncated(&state, format!("the server reported: {what}")));
                }
                if let Some(delta) = state.apply(&v) {
                    on_delta(&delta);
                }
            }
            if state.done {
                break;
            }
        }
        if !state.done {
            // A final event without the blank line that ends it.
            if let Some(data) = parser.finish() {
                if data == "[DONE]" {
                    state.done = true;
                } else if let Ok(v) = serde_json::from_str::<Value>(&data) {
                    if let Some(delta) = state.apply(&v) {
                        on_delta(&delta);
                    }
                }
            }
        }
        if !state.done && state.finish_reason.is_none() {
            return Err(truncated(
                &state,
                "the stream ended before `data: [DONE]` or a finish_reason".into(),
            ));
        }
        Ok(ChatResponse {
            content: state.content,
            usage: state.usage.unwrap_or_default(),
            model: state.model.unwrap_or_else(|| self.settings.model.clone()),
            finish_reason: state.finish_reason,
            key_index,
            attempts: 0,
        })
    }
}
