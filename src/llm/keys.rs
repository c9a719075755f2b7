//! The API key pool: round-robin over the configured keys, a key answered with 429
//! cools down (for `Retry-After`, or a default), a key answered with 401/403 is disabled
//! for the rest of the run.
//!
//! A key is on probation until the server has answered one request made with it with
//! anything but 401/403 ([`KeyPool::confirm`]): for a short grace period after that
//! request went out ([`KeyPool::set_grace`], a refusal's round trip), the key is not
//! handed out again ([`Pick::Pending`]). A server refuses a key before it does any work,
//! so a refused key costs one request, not one per agent that was about to use it; a
//! good key is not held back for the length of a whole answer (which, unstreamed, is
//! the whole generation). Once confirmed, a key carries any number of requests at once.
//!
//! The pool only deals in key *indices*: the secrets stay in the client, so nothing here
//! can leak one. Time comes from a [`Clock`], so the logic is tested without sleeping.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Where the pool gets the current time from.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the pool says when asked for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Use the key with this index.
    Key(usize),
    /// Every usable key is cooling down; the earliest is free again after this long.
    Wait(Duration),
    /// Every key has been disabled (401/403).
    AllDisabled,
    /// Every usable key is on probation with a request out: wait for its verdict
    /// ([`KeyPool::confirm`], [`KeyPool::disable`] or [`KeyPool::release`]), at most
    /// this long (the end of the earliest grace period).
    Pending(Duration),
}

#[derive(Debug, Clone, Default)]
struct KeyState {
    cooling_until: Option<Instant>,
    disabled: bool,
    /// The server has answered a request with this key with something else than
    /// 401/403.
    confirmed: bool,
    /// Not confirmed yet, and a request with it went out then.
    probing_since: Option<Instant>,
}

#[derive(Debug)]
struct State {
    keys: Vec<KeyState>,
    next: usize,
    grace: Duration,
}

/// How long an unconfirmed key is held back after its first request, unless the
/// client measures the server's round trip ([`KeyPool::set_grace`]).
pub const DEFAULT_GRACE: Duration = Duration::from_millis(250);

/// Round-robin key pool with cool-downs and disabling.
pub struct KeyPool<C: Clock = SystemClock> {
    state: Mutex<State>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for KeyPool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("KeyPool")
            .field("keys", &state.keys.len())
            .field("next", &state.next)
            .finish()
    }
}

impl KeyPool<SystemClock> {
    /// A pool of `n` keys on the real clock.
    pub fn new(n: usize) -> Self {
        KeyPool::with_clock(n, SystemClock)
    }
}

impl<C: Clock> KeyPool<C> {
    /// A pool of `n` keys on `clock`.
    pub fn with_clock(n: usize, clock: C) -> Self {
        KeyPool {
            state: Mutex::new(State {
                keys: vec![KeyState::default(); n],
                next: 0,
                grace: DEFAULT_GRACE,
            }),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every operation, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of keys in the pool (usable or not).
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether the pool has no key at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long an unconfirmed key is held back after its first request went out:
    /// long enough for the server to refuse it (the client sets it from the round trip
    /// it measured).
    pub fn set_grace(&self, grace: Duration) {
        self.lock().grace = grace;
    }

    /// The next key in round-robin order that is neither disabled, nor cooling down,
    /// nor within the grace period of its probation. An unconfirmed key handed out is
    /// on probation until its verdict.
    pub fn pick(&self) -> Pick {
        let now = self.clock.now();
        let mut state = self.lock();
        let n = state.keys.len();
        let grace = state.grace;
        let mut earliest: Option<Instant> = None;
        let mut pending: Option<Instant> = None;
        for step in 0..n {
            let i = (state.next + step) % n;
            let key = &state.keys[i];
            if key.disabled {
                continue;
            }
            if let Some(since) = key.probing_since.filter(|s| *s + grace > now) {
                let end = since + grace;
                pending = Some(pending.map_or(end, |p| p.min(end)));
                continue;
            }
            match key.cooling_until {
                Some(until) if until > now => {
                    earliest = Some(earliest.map_or(until, |e| e.min(until)));
                }
                _ => {
                    let key = &mut state.keys[i];
                    key.cooling_until = None;
                    if !key.confirmed && key.probing_since.is_none() {
                        key.probing_since = Some(now);
                    }
                    state.next = (i + 1) % n;
                    return Pick::Key(i);
                }
            }
        }
        // A verdict may free a key before any cool-down ends.
        if let Some(end) = pending {
            return Pick::Pending(end - now);
        }
        match earliest {
            Some(until) => Pick::Wait(until - now),
            None => Pick::AllDisabled,
        }
    }

    /// The server answered a request with key `i` (with anything but 401/403): the
    /// key is no longer on probation.
    pub fn confirm(&self, i: usize) {
        if let Some(key) = self.lock().keys.get_mut(i) {
            key.confirmed = true;
            key.probing_since = None;
        }
    }

    /// The request with key `i` ended without a verdict (a timeout, a connection
    /// failure, cancellation): the key may be tried again.
    pub fn release(&self, i: usize) {
        if let Some(key) = self.lock().keys.get_mut(i) {
            key.probing_since = None;
        }
    }

    /// Key `i` was rate-limited: do not use it for `period`. A longer cool-down already
    /// in force is kept.
    pub fn cool_down(&self, i: usize, period: Duration) {
        let until = self.clock.now() + period;
        let mut state = self.lock();
        if let Some(key) = state.keys.get_mut(i) {
            key.cooling_until = Some(key.cooling_until.map_or(until, |u| u.max(until)));
        }
    }

    /// Key `i` was refused (401/403): never use it again in this run.
    pub fn disable(&self, i: usize) {
        if let Some(key) = self.lock().keys.get_mut(i) {
            key.disabled = true;
            key.probing_since = None;
        }
    }

    /// Whether key `i` has been disabled.
    pub fn is_disabled(&self, i: usize) -> bool {
        self.lock().keys.get(i).is_some_and(|k| k.disabled)
    }

    /// How many keys are not disabled.
    pub fn usable(&self) -> usize {
        self.lock().keys.iter().filter(|k| !k.disabled).count()
    }
}

/// Parses a `Retry-After` header value: delay seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, relative to `now`; a date in the past is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Some servers send fractional seconds.
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(1e9)));
        }
        return None;
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose keys the server has accepted already.
    fn pool(n: usize) -> (KeyPool<ManualClock>, ManualClock) {
        let clock = ManualClock::default();
        let p = KeyPool::with_clock(n, clock.clone());
        for i in 0..n {
            p.confirm(i);
        }
        (p, clock)
    }

    #[test]
    fn an_unconfirmed_key_is_held_back_for_its_grace_period_after_its_first_request() {
        let clock = ManualClock::default();
        let p = KeyPool::with_clock(2, clock.clone());
        p.set_grace(Duration::from_millis(100));
        assert_eq!(p.pick(), Pick::Key(0));
        assert_eq!(p.pick(), Pick::Key(1));
        assert_eq!(
            p.pick(),
            Pick::Pending(Duration::from_millis(100)),
            "both keys have a request out"
        );
        p.release(1);
        assert_eq!(p.pick(), Pick::Key(1), "no verdict: tried again");
        clock.advance(Duration::from_millis(40));
        assert_eq!(p.pick(), Pick::Pending(Duration::from_millis(60)));
        p.confirm(0);
        assert_eq!(p.pick(), Pick::Key(0));
        assert_eq!(
            p.pick(),
            Pick::Key(0),
            "a confirmed key carries many requests"
        );
        p.disable(1);
        assert_eq!(p.pick(), Pick::Key(0));

        let refused = KeyPool::with_clock(1, clock.clone());
        refused.set_grace(Duration::from_millis(100));
        assert_eq!(refused.pick(), Pick::Key(0));
        assert!(matches!(refused.pick(), Pick::Pending(_)));
        refused.disable(0);
        assert_eq!(refused.pick(), Pick::AllDisabled);

        // No verdict within the grace period (a server that only answers once the
        // whole answer is written): the key is used without waiting any longer.
        let slow = KeyPool::with_clock(1, clock.clone());
        slow.set_grace(Duration::from_millis(100));
        assert_eq!(slow.pick(), Pick::Key(0));
        clock.advance(Duration::from_millis(100));
        assert_eq!(slow.pick(), Pick::Key(0));
        assert_eq!(
            slow.pick(),
            Pick::Key(0),
            "the grace runs from the first request"
        );
    }

    #[test]
    fn round_robin() {
        let (p, _) = pool(3);
        let picks: Vec<_> = (0..7).map(|_| p.pick()).collect();
        assert_eq!(
            picks,
            [0, 1, 2, 0, 1, 2, 0].map(Pick::Key).to_vec(),
            "keys are used in turn"
        );
    }

    #[test]
    fn cooling_key_is_skipped_until_its_time() {
        let (p, clock) = pool(3);
        assert_eq!(p.pick(), Pick::Key(0));
        p.cool_down(0, Duration::from_secs(10));
        assert_eq!(p.pick(), Pick::Key(1));
        assert_eq!(p.pick(), Pick::Key(2));
        assert_eq!(p.pick(), Pick::Key(1), "key 0 is cooling down");
        clock.advance(Duration::from_secs(10));
        assert_eq!(p.pick(), Pick::Key(2));
        assert_eq!(p.pick(), Pick::Key(0), "key 0 is back after its cool-down");
    }

    #[test]
    fn all_cooling_waits_for_the_earliest() {
        let (p, clock) = pool(2);
        p.cool_down(0, Duration::from_secs(30));
        p.cool_down(1, Duration::from_secs(5));
        assert_eq!(p.pick(), Pick::Wait(Duration::from_secs(5)));
        clock.advance(Duration::from_secs(2));
        assert_eq!(p.pick(), Pick::Wait(Duration::from_secs(3)));
        clock.advance(Duration::from_secs(3));
        assert_eq!(p.pick(), Pick::Key(1));
    }

    #[test]
    fn longer_cool_down_is_kept() {
        let (p, clock) = pool(1);
        p.cool_down(0, Duration::from_secs(30));
        p.cool_down(0, Duration::from_secs(1));
        clock.advance(Duration::from_secs(2));
        assert_eq!(p.pick(), Pick::Wait(Duration::from_secs(28)));
    }

    #[test]
    fn disabled_keys_are_never_used_again() {
        let (p, clock) = pool(3);
        p.disable(1);
        let picks: Vec<_> = (0..4).map(|_| p.pick()).collect();
        assert_eq!(picks, [0, 2, 0, 2].map(Pick::Key).to_vec());
        clock.advance(Duration::from_secs(3600));
        assert_eq!(p.pick(), Pick::Key(0));
        assert!(p.is_disabled(1));
        assert_eq!(p.usable(), 2);
    }

    #[test]
    fn all_disabled_is_reported() {
        let (p, _) = pool(2);
        p.disable(0);
        p.cool_down(1, Duration::from_secs(5));
        assert_eq!(p.pick(), Pick::Wait(Duration::from_secs(5)));
        p.disable(1);
        assert_eq!(p.pick(), Pick::AllDisabled);
        let (empty, _) = pool(0);
        assert_eq!(empty.pick(), Pick::AllDisabled);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
