//! The chat wire types of an OpenAI-compatible server: messages, requests, usage and
//! the answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// An assistant message (an earlier answer, when one is sent back).
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// A chat completion request; the model comes from the settings unless overridden.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature; `None`: the server's default.
    pub temperature: Option<f32>,
    /// Bound on the answer's tokens; `None`: the server's default.
    pub max_tokens: Option<u32>,
    /// Another model than [`LlmSettings::model`] for this request.
    pub model: Option<String>,
}

impl ChatRequest {
    /// A request of `messages` with the server's defaults.
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest {
            messages,
            ..ChatRequest::default()
        }
    }
}

/// Token usage of one answer, as the server reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// Both together, as the server counts them.
    pub total_tokens: u64,
    /// OpenRouter's `usage.cost` (credits, USD), when the server reports it.
    pub cost: Option<f64>,
}

impl Usage {
    /// Adds `other` (the usage of a task is the sum over its requests).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cost = match (self.cost, other.cost) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }

    pub(crate) fn from_json(v: &Value) -> Option<Usage> {
        let obj = v.as_object()?;
        let n = |k: &str| obj.get(k).and_then(Value::as_u64).unwrap_or(0);
        let prompt_tokens = n("prompt_tokens");
        let completion_tokens = n("completion_tokens");
        let total_tokens = obj
            .get("total_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(prompt_tokens + completion_tokens);
        Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cost: obj.get("cost").and_then(Value::as_f64),
        })
    }
}

/// The answer to a [`ChatRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The answer's text.
    pub content: String,
    /// Zero when the server reported no usage.
    pub usage: Usage,
    /// The model that answered (as the server names it).
    pub model: String,
    /// `stop`, `length` (cut at `max_tokens`), …; `None` if the server did not say.
    pub finish_reason: Option<String>,
    /// Which key (index into [`LlmSettings::keys`]) was used.
    pub key_index: usize,
    /// Attempts it took (1 when the first one succeeded).
    pub attempts: u32,
}
