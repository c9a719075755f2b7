//! The client's settings: endpoint, keys, model, timeouts and the server's manners,
//! built from the configuration or by hand (tests).

use std::time::Duration;

use crate::config::{Config, Secret};

/// OpenRouter's app attribution headers.
pub const DEFAULT_REFERER: &str = "https://crates.io/crates/cargo-eterna-port";
/// The default of OpenRouter's app title header (`X-Title`).
pub const DEFAULT_TITLE: &str = "cargo-eterna-port";

/// Everything the client needs; built from the [`Config`] or by hand (tests).
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// Base URL of an OpenAI-compatible API, e.g. `https://openrouter.ai/api/v1`;
    /// requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// The model asked (`ETERNA_PORT_MODEL`).
    pub model: String,
    /// API keys, used round-robin. Empty: no `Authorization` header (local servers).
    pub keys: Vec<Secret>,
    /// Total bound of a non-streamed request (`chat`): the whole answer.
    pub timeout: Duration,
    /// Bound of a streamed request (`chat_stream`) while nothing arrives: until the
    /// response headers, then each gap between bytes (keep-alive comments count).
    pub stall_timeout: Duration,
    /// After a timeout, send one request at a time to the server and wait for it to
    /// finish the abandoned one (see the module documentation). Off for OpenRouter.
    pub serial_after_timeout: bool,
    /// The generation rate assumed for a server that was left working on a
    /// timed-out request, in tokens per second: low, so the wait is long enough.
    pub drain_tokens_per_sec: u32,
    /// Upper bound of the wait for a busy server, however many requests timed out.
    pub max_drain: Duration,
    /// Attempts (the first one included) when the server fails with 5xx, times out or
    /// cannot be reached.
    pub max_attempts: u32,
    /// First backoff delay; doubled per failed attempt, with jitter.
    pub backoff_base: Duration,
    /// Upper bound of one backoff delay.
    pub backoff_max: Duration,
    /// Cool-down of a rate-limited key when the server sends no `Retry-After`.
    pub default_cooldown: Duration,
    /// Give up instead of waiting longer than this for a rate-limited key.
    pub max_key_wait: Duration,
    /// How many 429 answers one request tolerates before it fails.
    pub max_rate_limited: u32,
    /// `HTTP-Referer` header (OpenRouter app attribution); `None` to omit.
    pub referer: Option<String>,
    /// `X-Title` header (OpenRouter app attribution); `None` to omit.
    pub title: Option<String>,
    /// Ask for usage accounting with OpenRouter's `usage: {include: true}`. Other servers
    /// get OpenAI's `stream_options.include_usage` on streams instead.
    pub openrouter_usage: bool,
    /// How long a key on probation is held back after its first request
    /// ([`KeyPool::set_grace`]); `None`: from the round trip measured when the client
    /// first connects.
    pub probation_grace: Option<Duration>,
}

impl LlmSettings {
    /// Defaults for `base_url`, `model` and `keys`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, keys: Vec<Secret>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_string();
        let openrouter_usage = is_openrouter(&base_url);
        LlmSettings {
            base_url,
            model: model.into(),
            keys,
            timeout: Duration::from_secs(crate::config::DEFAULT_LLM_TIMEOUT_SECS),
            stall_timeout: Duration::from_secs(crate::config::DEFAULT_LLM_STALL_TIMEOUT_SECS),
            serial_after_timeout: !openrouter_usage,
            drain_tokens_per_sec: 20,
            max_drain: Duration::from_secs(600),
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            default_cooldown: Duration::from_secs(20),
            max_key_wait: Duration::from_secs(300),
            max_rate_limited: 12,
            referer: Some(DEFAULT_REFERER.to_string()),
            title: Some(DEFAULT_TITLE.to_string()),
            openrouter_usage,
            probation_grace: None,
        }
    }

    /// The settings of the effective configuration (`ETERNA_PORT_LLM_BASE_URL`,
    /// `ETERNA_PORT_MODEL`, `OPENROUTER_API_KEY1..3`, `OPENROUTER_API_KEY`,
    /// `ETERNA_PORT_LLM_TIMEOUT`, `ETERNA_PORT_LLM_STALL_TIMEOUT`).
    pub fn from_config(config: &Config) -> Self {
        let keys = config
            .api_keys
            .iter()
            .map(|(_, s)| s.value.clone())
            .collect();
        let mut s = LlmSettings::new(
            config.base_url.value.clone(),
            config.model.value.clone(),
            keys,
        );
        s.timeout = Duration::from_secs(config.llm_timeout_secs.value);
        s.stall_timeout = Duration::from_secs(config.llm_stall_timeout_secs.value);
        s
    }

    /// `{base_url}/chat/completions`.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

fn is_openrouter(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h == "openrouter.ai" || h.ends_with(".openrouter.ai"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openrouter_is_recognised_by_host() {
        assert!(is_openrouter("https://openrouter.ai/api/v1"));
        assert!(!is_openrouter("http://127.0.0.1:11434/v1"));
        assert!(!is_openrouter("http://openrouter.ai.example.com/v1"));
    }
}
