//! Errors of the LLM client. Each says what happened, at which endpoint and after how
//! many attempts; none ever holds an API key (keys are named by position, `key #2`, and
//! server text is scrubbed of key text before it gets here).

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LlmError {
    #[error("LLM client configuration: {message}")]
    Config { message: String },

    #[error(
        "{endpoint} refused {} (HTTP {status}: {message}); check OPENROUTER_API_KEY1..3 / OPENROUTER_API_KEY",
        refused_keys(*keys)
    )]
    AllKeysRefused {
        endpoint: String,
        /// Number of configured keys (0: the server wants a key and none is set).
        keys: usize,
        status: u16,
        message: String,
    },

    #[error(
        "{endpoint} is rate-limiting every API key (HTTP 429 after {attempts} attempt(s); next key free in {:.1}s): {message}; try again later or add keys (OPENROUTER_API_KEY1..3)",
        retry_in.as_secs_f64()
    )]
    RateLimited {
        endpoint: String,
        attempts: u32,
        retry_in: Duration,
        message: String,
    },

    #[error("LLM request to {endpoint} failed after {attempts} attempt(s); last error: {last}")]
    RetriesExhausted {
        endpoint: String,
        attempts: u32,
        last: String,
    },

    #[error("{endpoint} rejected the request (HTTP {status}): {message}")]
    Http {
        endpoint: String,
        status: u16,
        message: String,
    },

    #[error(
        "{endpoint} sent an answer that is not an OpenAI-compatible chat completion: {detail}"
    )]
    InvalidResponse { endpoint: String, detail: String },

    #[error("the answer streamed from {endpoint} was cut off after {received_chars} character(s): {detail}")]
    Truncated {
        endpoint: String,
        received_chars: usize,
        detail: String,
    },

    #[error("LLM request to {endpoint} was cancelled")]
    Cancelled { endpoint: String },

    /// The server could not be reached at all (connection refused, DNS, TLS). Not
    /// retried: the client stops sending (see [`crate::llm::LlmClient::stopped`]).
    #[error(
        "cannot reach {endpoint}: {detail}; start the server, or check ETERNA_PORT_LLM_BASE_URL"
    )]
    Unreachable { endpoint: String, detail: String },

    /// The client had stopped sending requests (the server cannot be reached or
    /// refuses every key) before this one was sent.
    #[error("not sent: {reason}")]
    NotSent { reason: String },
}

fn refused_keys(keys: usize) -> String {
    match keys {
        0 => "the request without an API key".into(),
        1 => "the API key".into(),
        n => format!("all {n} API keys"),
    }
}

impl LlmError {
    /// Whether the client has stopped sending requests to the server because of this
    /// error or an earlier one like it (the circuit breaker is open): every later
    /// request fails the same way without being sent.
    pub fn stops_requests(&self) -> bool {
        matches!(
            self,
            LlmError::AllKeysRefused { .. }
                | LlmError::Unreachable { .. }
                | LlmError::NotSent { .. }
                | LlmError::Config { .. }
        )
    }
}
