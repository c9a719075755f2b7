//! The OpenAI-compatible chat client: key pool, retries with backoff, streaming (SSE),
//! timeouts and cancellation.
//!
//! Keys go into the `Authorization` header and nowhere else: errors and logs name a key
//! by its position (`key #2`), and any text that comes back from the server is scrubbed
//! of key text before it is shown.
//!
//! Requests are bounded, and the client is shared by every agent of a run, so what one
//! request learns about the server applies to all:
//!
//! - **Timeouts.** A non-streamed request has a total bound ([`LlmSettings::timeout`]);
//!   a streamed one only a stall bound ([`LlmSettings::stall_timeout`]: no byte for that
//!   long), so a slow model that keeps sending is never cut off.
//! - **A busy server is not sent more work.** A local server (llama.cpp) has one slot
//!   and goes on generating an answer after the client that asked for it has gone. So
//!   after a timeout the client sends one request at a time to it from then on, and
//!   the next request first waits as long as the abandoned one may still keep the
//!   server busy: its `max_tokens` at a conservative
//!   [`LlmSettings::drain_tokens_per_sec`], at most [`LlmSettings::max_drain`]. A
//!   request that timed out while it had the server to itself is not retried (it would
//!   time out again). This is said once ([`Notice::Serial`]). OpenRouter, which routes
//!   each request to a provider of its own, is exempt
//!   ([`LlmSettings::serial_after_timeout`]).
//! - **A circuit breaker.** When the server cannot be reached (connection refused,
//!   DNS, TLS) or refuses every key, the first such failure stops the client: every
//!   later request fails at once with [`LlmError::NotSent`], without being sent, and
//!   the reason is said once ([`Notice::Stopped`]). Connection failures are not
//!   retried. Until a key has been answered once with anything but 401/403, at most
//!   one request with it is out (see [`super::keys`]), so a refused key costs one
//!   request, not one per agent.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod response;
mod stream;

use super::error::LlmError;
use super::keys::{parse_retry_after, KeyPool, Pick};
pub use super::settings::{LlmSettings, DEFAULT_REFERER, DEFAULT_TITLE};
pub use super::types::{ChatRequest, ChatResponse, Message, Usage};
use crate::config::REDACTED;
use response::error_message;
use tokio::sync::{Notify, Semaphore};

/// How one attempt failed, and what the retry loop does about it.
enum Failure {
    /// 429: cool the key down, try another.
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// 401/403: disable the key.
    Refused { status: u16, message: String },
    /// 5xx, a broken connection: back off (at least `retry_after`) and retry.
    Transient {
        what: String,
        retry_after: Option<Duration>,
    },
    /// No answer (or no byte of a stream) in time; the server may still be working on
    /// it. `partial`: content went out already, so it cannot be retried.
    TimedOut {
        what: String,
        partial: Option<LlmError>,
    },
    /// The server cannot be reached (connection refused, DNS, TLS): stop.
    Unreachable(String),
    /// Anything else: give up now.
    Fatal(LlmError),
}

fn transient(what: String) -> Failure {
    Failure::Transient {
        what,
        retry_after: None,
    }
}

/// A key on probation is held back this long plus four round trips to the server (a
/// refusal is one round trip and a little work), and never longer than the cap.
const GRACE_FLOOR: Duration = Duration::from_millis(50);
const GRACE_CAP: Duration = Duration::from_secs(2);

/// The host and port a request to `base_url` connects to directly, or `None` when a
/// proxy from the environment is in the way (or the URL has no host).
fn direct_host_port(base_url: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(base_url).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default()?;
    let proxy_vars: &[&str] = match url.scheme() {
        "https" => &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"],
        _ => &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"],
    };
    let proxied = proxy_vars
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()));
    let exempt = ["NO_PROXY", "no_proxy"].iter().any(|v| {
        std::env::var(v).is_ok_and(|list| {
            list.split(',')
                .map(|e| e.trim().trim_start_matches('.'))
                .any(|e| {
                    e == "*" || e == host || (!e.is_empty() && host.ends_with(&format!(".{e}")))
                })
        })
    });
    (!proxied || exempt).then_some((host, port))
}

/// The chat client. Cheap to share (`Arc`) between tasks.
pub struct LlmClient {
    settings: LlmSettings,
    http: reqwest::Client,
    pool: KeyPool,
    endpoint: String,
    /// The last 401/403 (status, message), for the error once every key is disabled,
    /// which may be in a later request than the refusals.
    last_refusal: Mutex<Option<(u16, String)>>,
    /// Set once the client stops sending (the circuit breaker is open): why.
    stopped: Mutex<Option<String>>,
    /// Cancelled when the breaker opens, to wake requests waiting for their turn.
    stop: CancellationToken,
    /// Serial mode and when the server is expected to be free again.
    busy: Mutex<Busy>,
    /// One permit: taken by every request once in serial mode.
    serial_gate: Semaphore,
    /// Requests out now (sent, answer not complete), and a signal when one ends: in
    /// serial mode a request waits until those sent before the switch are done too.
    in_flight: Mutex<usize>,
    idle: Notify,
    /// Woken whenever a key on probation gets its verdict.
    verdict: Notify,
    /// Whether the server accepts connections, probed once ([`LlmClient::reach`]).
    reach: tokio::sync::OnceCell<Result<(), String>>,
    /// Where [`Notice`]s go.
    notice: RwLock<NoticeHook>,
}

/// What the client says once, while it works, about the server (see [`LlmClient::on_notice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The server did not answer in time: one request at a time from now on.
    Serial {
        /// What to tell the user.
        message: String,
    },
    /// No more requests are sent to the server in this run.
    Stopped {
        /// What to tell the user, with the URL and what to do.
        message: String,
    },
}

impl Notice {
    /// What to tell the user.
    pub fn message(&self) -> &str {
        match self {
            Notice::Serial { message } | Notice::Stopped { message } => message,
        }
    }
}

type NoticeHook = Arc<dyn Fn(&Notice) + Send + Sync>;

#[derive(Debug, Default)]
struct Busy {
    /// One request at a time (after a timeout).
    serial: bool,
    /// The server may be busy with abandoned requests until then.
    until: Option<tokio::time::Instant>,
}

/// Ends a key's probation without a verdict when the attempt ends without one (a
/// timeout, a failed connection, cancellation: the attempt's future dropped).
struct Probe<'c> {
    client: &'c LlmClient,
    key: usize,
}

/// Counts a request as out while it lives.
struct Sending<'c>(&'c LlmClient);

impl<'c> Sending<'c> {
    fn new(client: &'c LlmClient) -> Self {
        *client.in_flight.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Sending(client)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        drop(n);
        self.0.idle.notify_waiters();
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.client.pool.release(self.key);
        self.client.verdict.notify_waiters();
    }
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.settings.model)
            .field("keys", &self.settings.keys.len())
            .finish()
    }
}

impl LlmClient {
    /// A client for `settings`; fails on a base URL or header value it cannot use.
    pub fn new(settings: LlmSettings) -> Result<Self, LlmError> {
        let endpoint = settings.endpoint();
        let url = reqwest::Url::parse(&endpoint).map_err(|e| LlmError::Config {
            message: format!(
                "LLM base URL `{}` is not a valid URL ({e}); set ETERNA_PORT_LLM_BASE_URL to e.g. https://openrouter.ai/api/v1",
                settings.base_url
            ),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::Config {
                message: format!(
                    "LLM base URL `{}` must start with http:// or https://",
                    settings.base_url
                ),
            });
        }
        for (i, key) in settings.keys.iter().enumerate() {
            if HeaderValue::from_str(&format!("Bearer {}", key.expose())).is_err() {
                return Err(LlmError::Config {
                    message: format!(
                        "API key #{} contains characters that cannot be sent in an HTTP header",
                        i + 1
                    ),
                });
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("HTTP-Referer", &settings.referer),
            ("X-Title", &settings.title),
        ] {
            if let Some(v) = value {
                let v = HeaderValue::from_str(v).map_err(|_| LlmError::Config {
                    message: format!("{name} header value `{v}` is not a valid header value"),
                })?;
                headers.insert(name, v);
            }
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(settings.timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| LlmError::Config {
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        // No key: one anonymous slot, so the pool logic is the same.
        let pool = KeyPool::new(settings.keys.len().max(1));
        if let Some(grace) = settings.probation_grace {
            pool.set_grace(grace);
        }
        Ok(LlmClient {
            settings,
            http,
            pool,
            endpoint,
            last_refusal: Mutex::new(None),
            stopped: Mutex::new(None),
            stop: CancellationToken::new(),
            busy: Mutex::new(Busy::default()),
            serial_gate: Semaphore::new(1),
            in_flight: Mutex::new(0),
            idle: Notify::new(),
            verdict: Notify::new(),
            reach: tokio::sync::OnceCell::new(),
            notice: RwLock::new(Arc::new(|n: &Notice| warn!("{}", n.message()))),
        })
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// Where the client's [`Notice`]s go (by default: a `tracing` warning). Each kind
    /// is said at most once per client.
    pub fn on_notice(&self, hook: impl Fn(&Notice) + Send + Sync + 'static) {
        *self.notice.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hook);
    }

    /// Why the client stopped sending requests (the server cannot be reached, or
    /// refuses every key), if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether requests go out one at a time (a request timed out).
    pub fn is_serial(&self) -> bool {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).serial
    }

    fn say(&self, notice: Notice) {
        let hook = self
            .notice
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        hook(&notice);
    }

    /// Opens the circuit breaker (once): no request is sent after this.
    fn stop_sending(&self, reason: String) {
        {
            let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
            if stopped.is_some() {
                return;
            }
            *stopped = Some(reason.clone());
        }
        self.stop.cancel();
        self.verdict.notify_waiters();
        self.say(Notice::Stopped {
            message: format!("{reason}; no more requests are sent to it in this run"),
        });
    }

    /// The error of a request the open breaker keeps from being sent.
    fn not_sent(&self) -> Option<LlmError> {
        self.stopped().map(|reason| LlmError::NotSent { reason })
    }

    /// A request timed out after `waited`: the server may go on working on it for as
    /// long as `max_tokens` take at [`LlmSettings::drain_tokens_per_sec`] (the request
    /// timeout when the request set no bound). Every later request waits until then,
    /// one at a time.
    fn server_busy(&self, max_tokens: Option<u64>, waited: Duration) {
        if !self.settings.serial_after_timeout {
            return;
        }
        let rate = f64::from(self.settings.drain_tokens_per_sec.max(1));
        let drain = max_tokens
            .map(|n| Duration::from_secs_f64(n as f64 / rate))
            .unwrap_or(self.settings.timeout)
            .min(self.settings.max_drain);
        let now = tokio::time::Instant::now();
        let was_serial = {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            let from = busy.until.filter(|u| *u > now).unwrap_or(now);
            busy.until = Some((from + drain).min(now + self.settings.max_drain));
            std::mem::replace(&mut busy.serial, true)
        };
        if !was_serial {
            self.say(Notice::Serial {
                message: format!(
                    "{} did not answer within {} s; sending one request at a time from now on, each after the server has had {} s to finish what was abandoned",
                    self.settings.base_url,
                    waited.as_secs_f64().round(),
                    drain.as_secs_f64().ceil()
                ),
            });
        }
    }

    /// Waits for the serial gate (in serial mode) and for the server to be free.
    async fn take_turn(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, LlmError> {
        let permit = if self.is_serial() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.cancelled()),
                _ = self.stop.cancelled() => return Err(self.not_sent().unwrap_or_else(|| self.cancelled())),
                p = self.serial_gate.acquire() => p.ok(),
            }
        } else {
            None
        };
        // One at a time means none of those sent before the switch is still out.
        while permit.is_some() {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) == 0 {
                break;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.cancelled()),
                _ = self.stop.cancelled() => break,
                _ = idle => {}
            }
        }
        let until = self.busy.lock().unwrap_or_else(|e| e.into_inner()).until;
        if let Some(until) = until.filter(|u| *u > tokio::time::Instant::now()) {
            debug!(endpoint = %self.endpoint, wait_ms = (until - tokio::time::Instant::now()).as_millis() as u64, "waiting for the server to finish an abandoned request");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.cancelled()),
                _ = self.stop.cancelled() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        Ok(permit)
    }

    fn cancelled(&self) -> LlmError {
        LlmError::Cancelled {
            endpoint: self.endpoint.clone(),
        }
    }

    /// The chat/completions URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A non-streaming chat completion.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, LlmError> {
        self.run(req, cancel, None).await
    }

    /// A streaming chat completion (SSE). `on_delta` sees each piece of content as it
    /// arrives; the result holds the whole content and the final usage. A stream that
    /// ends before `[DONE]` or a `finish_reason` is [`LlmError::Truncated`].
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        cancel: &CancellationToken,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ChatResponse, LlmError> {
        self.run(req, cancel, Some(on_delta)).await
    }

    fn body(&self, req: &ChatRequest, stream: bool) -> Value {
        let mut body = json!({
            "model": req.model.as_deref().unwrap_or(&self.settings.model),
            "messages": req.messages,
            "stream": stream,
        });
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = req.max_tokens {
            body["max_tokens"] = json!(m);
        }
        if self.settings.openrouter_usage {
            body["usage"] = json!({ "include": true });
        } else if stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    }

    async fn run(
        &self,
        req: &ChatRequest,
        cancel: &CancellationToken,
        mut on_delta: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<ChatResponse, LlmError> {
        let stream = on_delta.is_some();
        let body = self.body(req, stream);
        let waited = if stream {
            self.settings.stall_timeout
        } else {
            self.settings.timeout
        };
        let mut attempts = 0u32;
        let mut transient = 0u32;
        let mut rate_limited = 0u32;
        let mut last_rate_limit = String::new();
        loop {
            if let Some(e) = self.not_sent() {
                return Err(e);
            }
            if let Err(detail) = self.reach().await {
                return Err(self.unreachable(detail));
            }
            let permit = self.take_turn(cancel).await?;
            if let Some(e) = self.not_sent() {
                return Err(e);
            }
            // Registered before the pick, so a verdict between the two is not missed.
            let verdict = self.verdict.notified();
            tokio::pin!(verdict);
            verdict.as_mut().enable();
            let key_index = match self.pool.pick() {
                Pick::Key(i) => i,
                Pick::Pending(grace) => {
                    drop(permit);
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(self.cancelled()),
                        _ = verdict => {}
                        // The grace period is over: the key is handed out anyway.
                        _ = tokio::time::sleep(grace) => {}
                    }
                    continue;
                }
                Pick::AllDisabled => {
                    let (status, message) = self
                        .last_refusal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                        .unwrap_or_default();
                    let e = LlmError::AllKeysRefused {
                        endpoint: self.endpoint.clone(),
                        keys: self.settings.keys.len(),
                        status,
                        message,
                    };
                    self.stop_sending(e.to_string());
                    return Err(e);
                }
                Pick::Wait(wait) => {
                    drop(permit);
                    if wait > self.settings.max_key_wait {
                        return Err(LlmError::RateLimited {
                            endpoint: self.endpoint.clone(),
                            attempts,
                            retry_in: wait,
                            message: last_rate_limit,
                        });
                    }
                    debug!(endpoint = %self.endpoint, wait_ms = wait.as_millis() as u64, "every API key is cooling down; waiting");
                    self.sleep(wait, cancel).await?;
                    continue;
                }
            };
            let probe = Probe {
                client: self,
                key: key_index,
            };
            let serial = permit.is_some();
            attempts += 1;
            let sending = Sending::new(self);
            let attempt = self.attempt(&body, key_index, on_delta.as_deref_mut());
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.cancelled()),
                r = attempt => r,
            };
            drop(sending);
            drop(probe);
            drop(permit);
            match outcome {
                Ok(mut resp) => {
                    resp.attempts = attempts;
                    debug!(
                        endpoint = %self.endpoint,
                        key = key_index + 1,
                        attempts,
                        prompt_tokens = resp.usage.prompt_tokens,
                        completion_tokens = resp.usage.completion_tokens,
                        "LLM answer received"
                    );
                    return Ok(resp);
                }
                Err(Failure::RateLimited {
                    retry_after,
                    message,
                }) => {
                    rate_limited += 1;
                    // `Retry-After: 0` must not turn into a busy loop.
                    let period = retry_after
                        .unwrap_or(self.settings.default_cooldown)
                        .max(self.settings.backoff_base);
                    warn!(
                        endpoint = %self.endpoint,
                        key = key_index + 1,
                        cooldown_ms = period.as_millis() as u64,
                        "API key rate-limited (HTTP 429); cooling it down"
                    );
                    self.pool.cool_down(key_index, period);
                    last_rate_limit = message;
                    if rate_limited >= self.settings.max_rate_limited.max(1) {
                        return Err(LlmError::RateLimited {
                            endpoint: self.endpoint.clone(),
                            attempts,
                            retry_in: period,
                            message: last_rate_limit,
                        });
                    }
                }
                Err(Failure::Refused { status, message }) => {
                    // Not a warning: once every key is refused the client says so,
                    // once; a key refused among good ones shows in `-vv`.
                    info!(
                        endpoint = %self.endpoint,
                        key = key_index + 1,
                        status,
                        "API key refused; not using it again in this run"
                    );
                    *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((status, message));
                    self.pool.disable(key_index);
                }
                Err(Failure::Unreachable(detail)) => return Err(self.unreachable(detail)),
                Err(Failure::TimedOut { what, partial }) => {
                    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
                    self.server_busy(max_tokens, waited);
                    if let Some(e) = partial {
                        return Err(e);
                    }
                    transient += 1;
                    // Timed out with the server to itself: it would time out again.
                    if serial || transient >= self.settings.max_attempts.max(1) {
                        return Err(LlmError::RetriesExhausted {
                            endpoint: self.endpoint.clone(),
                            attempts,
                            last: what,
                        });
                    }
                    if !self.settings.serial_after_timeout {
                        let delay = self.backoff(transient);
                        warn!(endpoint = %self.endpoint, attempt = attempts, retry_in_ms = delay.as_millis() as u64, error = %what, "LLM request timed out; retrying");
                        self.sleep(delay, cancel).await?;
                    } else {
                        // The switch to serial mode was said (once).
                        info!(endpoint = %self.endpoint, attempt = attempts, error = %what, "LLM request timed out; retrying once the server is free");
                    }
                }
                Err(Failure::Transient { what, retry_after }) => {
                    transient += 1;
                    if transient >= self.settings.max_attempts.max(1) {
                        return Err(LlmError::RetriesExhausted {
                            endpoint: self.endpoint.clone(),
                            attempts,
                            last: what,
                        });
                    }
                    // A server that says when to come back is believed, within bounds.
                    let delay = self.backoff(transient).max(
                        retry_after
                            .unwrap_or_default()
                            .min(self.settings.backoff_max),
                    );
                    warn!(
                        endpoint = %self.endpoint,
                        attempt = attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %what,
                        "LLM request failed; retrying"
                    );
                    self.sleep(delay, cancel).await?;
                }
                Err(Failure::Fatal(e)) => {
                    if let LlmError::Config { message } = &e {
                        self.stop_sending(format!(
                            "the LLM client cannot send to {}: {message}",
                            self.settings.base_url
                        ));
                    }
                    return Err(e);
                }
            }
        }
    }

    /// `backoff_base * 2^(n-1)`, capped, with "equal jitter" (half fixed, half random).
    fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
        let capped = exp.min(self.settings.backoff_max);
        let half = capped / 2;
        half + half.mul_f64(jitter())
    }

    async fn sleep(&self, d: Duration, cancel: &CancellationToken) -> Result<(), LlmError> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(LlmError::Cancelled { endpoint: self.endpoint.clone() }),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Replaces any key text in `s` (server messages may echo what they were sent).
    fn scrub(&self, s: &str) -> String {
        let mut out = s.to_string();
        for key in &self.settings.keys {
            let k = key.expose();
            if !k.is_empty() && out.contains(k) {
                out = out.replace(k, REDACTED);
            }
        }
        out
    }

    async fn attempt<'d>(
        &self,
        body: &Value,
        key_index: usize,
        on_delta: Option<&mut (dyn FnMut(&str) + Send + 'd)>,
    ) -> Result<ChatResponse, Failure> {
        let stream = on_delta.is_some();
        let mut rb = self
            .http
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .json(body);
        if let Some(key) = self.settings.keys.get(key_index) {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    Failure::Fatal(LlmError::Config {
                        message: format!("API key #{} cannot be sent in a header", key_index + 1),
                    })
                })?;
            v.set_sensitive(true);
            rb = rb.header(AUTHORIZATION, v);
        }
        // Streamed: only silence is bounded (until the headers, then between bytes);
        // else the whole answer.
        let bound = if stream {
            rb = rb.header(reqwest::header::ACCEPT, "text/event-stream");
            self.settings.stall_timeout
        } else {
            rb = rb.timeout(self.settings.timeout);
            self.settings.timeout
        };
        debug!(endpoint = %self.endpoint, key = key_index + 1, stream, "sending LLM request");
        let sent = tokio::time::timeout(bound, rb.send()).await;
        let resp = match sent {
            Err(_) => return Err(self.timed_out(stream, None)),
            Ok(Err(e)) => return Err(self.transport_failure(&e, stream)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !matches!(status.as_u16(), 401 | 403) {
            // The server knows the key (or wants none): off probation.
            self.pool.confirm(key_index);
            self.verdict.notify_waiters();
        }
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let text = tokio::time::timeout(bound, resp.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let message = self.scrub(&error_message(&text));
            if matches!(status.as_u16(), 401 | 403) {
                // The verdict, before the key leaves probation: no other request
                // may take the key in between.
                *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((status.as_u16(), message.clone()));
                self.pool.disable(key_index);
                self.verdict.notify_waiters();
            }
            return Err(self.classify(status.as_u16(), message, retry_after));
        }
        match on_delta {
            None => {
                let text = match resp.text().await {
                    Ok(t) => t,
                    Err(e) => return Err(self.transport_failure(&e, false)),
                };
                self.parse_completion(&text, key_index)
            }
            Some(on_delta) => {
                let json = resp
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json"));
                if !json {
                    return self.read_stream(resp, key_index, on_delta).await;
                }
                // A server that does not stream answers with one completion.
                let text = tokio::time::timeout(self.settings.timeout, resp.text())
                    .await
                    .map_err(|_| self.timed_out(false, None))?
                    .map_err(|e| self.transport_failure(&e, false))?;
                let resp = self.parse_completion(&text, key_index)?;
                if !resp.content.is_empty() {
                    on_delta(&resp.content);
                }
                Ok(resp)
            }
        }
    }

    /// A timeout of a streamed request (the stall bound) or not (the total bound);
    /// `partial`: the error to give when content went out already.
    fn timed_out(&self, stream: bool, partial: Option<LlmError>) -> Failure {
        let what = if stream {
            format!(
                "nothing received for {:.1}s (the stall timeout, ETERNA_PORT_LLM_STALL_TIMEOUT)",
                self.settings.stall_timeout.as_secs_f64()
            )
        } else {
            format!(
                "no answer within {:.1}s (the request timeout, ETERNA_PORT_LLM_TIMEOUT)",
                self.settings.timeout.as_secs_f64()
            )
        };
        Failure::TimedOut { what, partial }
    }

    /// The server cannot be reached: no request is sent from now on.
    fn unreachable(&self, detail: String) -> LlmError {
        self.stop_sending(format!(
            "{} cannot be reached ({detail}); start the server, or check ETERNA_PORT_LLM_BASE_URL",
            self.settings.base_url
        ));
        LlmError::Unreachable {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }

    /// Whether the server accepts connections, found out once per client before the
    /// first request: a TCP connection to its host and port, which no HTTP server
    /// counts as a request. A server that is down costs no request at all (every agent
    /// would otherwise send one at the same moment), and the round trip sets how long a
    /// key on probation is held back ([`KeyPool::set_grace`]). Behind a proxy the
    /// connection says nothing about the server: not probed.
    async fn reach(&self) -> Result<(), String> {
        self.reach
            .get_or_init(|| async {
                let Some((host, port)) = direct_host_port(&self.settings.base_url) else {
                    return Ok(());
                };
                let start = tokio::time::Instant::now();
                let bound = self.settings.timeout.min(Duration::from_secs(30));
                match tokio::time::timeout(
                    bound,
                    tokio::net::TcpStream::connect((host.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        let rtt = start.elapsed();
                        let grace = self
                            .settings
                            .probation_grace
                            .unwrap_or((GRACE_FLOOR + rtt * 4).min(GRACE_CAP));
                        self.pool.set_grace(grace);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("cannot connect: {}", self.scrub(&e.to_string()))),
                    Err(_) => Err(format!(
                        "cannot connect: no answer in {} s",
                        bound.as_secs()
                    )),
                }
            })
            .await
            .clone()
    }

    fn transport_failure(&self, e: &reqwest::Error, stream: bool) -> Failure {
        if e.is_timeout() && !e.is_connect() {
            return self.timed_out(stream, None);
        }
        // The causes, without reqwest's "error sending request for url (…)": the
        // error names the endpoint already.
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            causes.push(s.to_string());
            source = s.source();
        }
        let msg = if causes.is_empty() {
            e.to_string()
        } else {
            causes.join(": ")
        };
        if e.is_connect() {
            Failure::Unreachable(format!("cannot connect: {}", self.scrub(&msg)))
        } else if e.is_builder() {
            Failure::Fatal(LlmError::Config {
                message: self.scrub(&msg),
            })
        } else {
            transient(self.scrub(&msg))
        }
    }
}

/// A number in `[0, 1)` for backoff jitter (xorshift; not for anything secret).
fn jitter() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            (t ^ (&t as *const u64 as u64)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_openai_error_bodies() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad model","code":400}}"#),
            "bad model"
        );
        assert_eq!(error_message("  "), "(empty body)");
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
        assert!(error_message(&"x".repeat(1000)).ends_with('…'));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let mut s = LlmSettings::new("http://127.0.0.1:1/v1", "m", vec![]);
        s.backoff_base = Duration::from_millis(100);
        s.backoff_max = Duration::from_millis(1000);
        let c = LlmClient::new(s).unwrap();
        for _ in 0..50 {
            let d1 = c.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = c.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d30 = c.backoff(30);
            assert!(d30 >= Duration::from_millis(500) && d30 <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn requests_can_run_on_spawned_tasks() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<LlmClient>();
        let c = LlmClient::new(LlmSettings::new("http://127.0.0.1:1/v1", "m", vec![])).unwrap();
        let cancel = CancellationToken::new();
        let req = ChatRequest::default();
        assert_send(&c.chat(&req, &cancel));
        let mut sink = |_: &str| {};
        assert_send(&c.chat_stream(&req, &cancel, &mut sink));
    }

    #[test]
    fn usage_adds_up() {
        let mut u = Usage::default();
        u.add(&Usage::from_json(&json!({"prompt_tokens": 3, "completion_tokens": 4})).unwrap());
        u.add(
            &Usage::from_json(&json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost": 0.5}))
                .unwrap(),
        );
        assert_eq!(u.prompt_tokens, 4);
        assert_eq!(u.total_tokens, 9);
        assert_eq!(u.cost, Some(0.5));
    }
}
