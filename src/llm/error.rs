//! Errors of the LLM client. Each says what happened, at which endpoint and after how
//! many attempts; none ever holds an API key (keys are named by position, `key #2`, and
//! server text is scrubbed of key text before it gets here).

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
/// Why a model request failed; each says at which endpoint and after how many attempts.
pub enum LlmError {
    /// The client's settings cannot be used (a bad URL or header).
    #[error("LLM client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },

    #[error(
        "{endpoint} refused {} (HTTP {status}: {message}); check OPENROUTER_API_KEY1..3 / OPENROUTER_API_KEY",
        refused_keys(*keys)
    )]
    /// Every key was refused (401/403), or the server wants a key and none is set.
    AllKeysRefused {
        /// The chat completions URL.
        endpoint: String,
        /// Number of configured keys (0: the server wants a key and none is set).
        keys: usize,
        /// The last HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },

    #[error(
        "{endpoint} is rate-limiting every API key (HTTP 429 after {attempts} attempt(s); next key free in {:.1}s): {message}; try again later or add keys (OPENROUTER_API_KEY1..3)",
        retry_in.as_secs_f64()
    )]
    /// Every key is rate-limited (429) and the attempts ran out.
    RateLimited {
        /// The chat completions URL.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// When the next key is free again.
        retry_in: Duration,
        /// The server's message.
        message: String,
    },

    /// Transient failures (5xx, timeouts) until the attempts ran out.
    #[error("LLM request to {endpoint} failed after {attempts} attempt(s); last error: {last}")]
    RetriesExhausted {
        /// The chat completions URL.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },

    /// The server rejected the request (a 4xx other than 401/403/429).
    #[error("{endpoint} rejected the request (HTTP {status}): {message}")]
    Http {
        /// The chat completions URL.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },

    /// A 200 whose body is not a chat completion.
    #[error(
        "{endpoint} sent an answer that is not an OpenAI-compatible chat completion: {detail}"
    )]
    InvalidResponse {
        /// The chat completions URL.
        endpoint: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A streamed answer that stopped before its end.
    #[error("the answer streamed from {endpoint} was cut off after {received_chars} character(s): {detail}")]
    Truncated {
        /// The chat completions URL.
        endpoint: String,
        /// Characters received before it stopped.
        received_chars: usize,
        /// How it ended.
        detail: String,
    },

    /// The request was cancelled (Ctrl-C or the run's token).
    #[error("LLM request to {endpoint} was cancelled")]
    Cancelled {
        /// The chat completions URL.
        endpoint: String,
    },

    /// The server could not be reached at all (connection refused, DNS, TLS). Not
    /// retried: the client stops sending (see [`crate::llm::LlmClient::stopped`]).
    #[error(
        "cannot reach {endpoint}: {detail}; start the server, or check ETERNA_PORT_LLM_BASE_URL"
    )]
    Unreachable {
        /// The chat completions URL.
        endpoint: String,
        /// The connection error.
        detail: String,
    },

    /// The client had stopped sending requests (the server cannot be reached or
    /// refuses every key) before this one was sent.
    #[error("not sent: {reason}")]
    NotSent {
        /// Why the client stopped sending.
        reason: String,
    },
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
