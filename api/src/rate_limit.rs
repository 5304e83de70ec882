//! The limit on changes per credential: `mutations_per_minute` per token (per account
//! for the session cookie), with bursts of as many, answered 429 with `Retry-After`;
//! the cap on requests held open (`?wait=` long polls and event streams), per
//! credential and in all; and the limit on failed authentications per source address.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::SecuritySettings;
use crate::problem::ApiError;

/// Limiters past this many keys forget the ones that are full again.
const RETAIN_ABOVE: usize = 10_000;

/// A keyed limiter of changes, shared by every worker of a server.
#[derive(Clone)]
pub struct MutationLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    clock: DefaultClock,
}

impl fmt::Debug for MutationLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutationLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

type Shared = Mutex<HashMap<(Vec<u8>, u32), Arc<DefaultKeyedRateLimiter<String>>>>;

impl MutationLimiter {
    /// A fresh limiter of `per_minute` changes per key; 0 limits nothing.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)))),
            clock: DefaultClock::default(),
        }
    }

    /// The limiter of these settings, the same for every call with equal settings:
    /// `configure` runs once per worker, and the limit is per process.
    pub fn shared(settings: &SecuritySettings) -> Self {
        static LIMITERS: OnceLock<Shared> = OnceLock::new();
        let Some(per_minute) = NonZeroU32::new(settings.mutations_per_minute) else {
            return Self::new(0);
        };
        let limiters = LIMITERS.get_or_init(Shared::default);
        let Ok(mut limiters) = limiters.lock() else {
            return Self::new(per_minute.get());
        };
        let limiter = limiters
            .entry((settings.session_key.clone(), per_minute.get()))
            .or_insert_with(|| {
                Arc::new(RateLimiter::keyed(
                    Quota::per_minute(per_minute).allow_burst(per_minute),
                ))
            })
            .clone();
        Self {
            limiter: Some(limiter),
            clock: DefaultClock::default(),
        }
    }

    /// Counts a change by `key`.
    ///
    /// # Errors
    /// A 429 saying when to retry once the key's quota is spent.
    pub fn check(&self, key: String) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > RETAIN_ABOVE {
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| {
            ApiError::too_many_requests(
                not_until.wait_time_from(self.clock.now()),
                "too many changes in a minute with this credential",
            )
        })
    }
}

/// Requests held open (long polls, event streams): at most `per_credential` for one
/// token and `total` for the whole process. A slot is taken for as long as its
/// [`StreamPermit`] lives. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct StreamLimiter {
    open: Arc<Mutex<OpenStreams>>,
    per_credential: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct OpenStreams {
    by_key: HashMap<String, usize>,
    total: usize,
}

/// The stream limiters of a process, by session key and limits.
type SharedStreams = Mutex<HashMap<(Vec<u8>, usize, usize), StreamLimiter>>;

/// One open stream's slot, given back when dropped.
#[derive(Debug)]
pub struct StreamPermit {
    limiter: StreamLimiter,
    key: String,
}

impl StreamLimiter {
    /// A limiter of its own (tests); servers use [`Self::shared`]. 0 means no limit.
    pub fn new(per_credential: usize, total: usize) -> Self {
        Self {
            open: Arc::default(),
            per_credential: if per_credential == 0 {
                usize::MAX
            } else {
                per_credential
            },
            total: if total == 0 { usize::MAX } else { total },
        }
    }

    /// The limiter of these settings, one per process like the change limiter:
    /// `configure` runs once per worker.
    pub fn shared(settings: &SecuritySettings) -> Self {
        static LIMITERS: OnceLock<SharedStreams> = OnceLock::new();
        let make = || Self::new(settings.streams_per_credential, settings.streams_total);
        let Ok(mut limiters) = LIMITERS.get_or_init(Mutex::default).lock() else {
            return make();
        };
        limiters
            .entry((
                settings.session_key.clone(),
                settings.streams_per_credential,
                settings.streams_total,
            ))
            .or_insert_with(make)
            .clone()
    }

    /// Takes a slot for `key` (a credential), or refuses with a 429.
    ///
    /// # Errors
    /// 429 with `Retry-After` when the credential, or the process, holds as many open
    /// requests as it may.
    pub fn acquire(&self, key: String) -> Result<StreamPermit, ApiError> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = open.by_key.get(&key).copied().unwrap_or(0);
        if mine >= self.per_credential || open.total >= self.total {
            let why = if mine >= self.per_credential {
                "too many requests held open (long polls and event streams) with this credential"
            } else {
                "too many requests held open (long polls and event streams) on this server"
            };
            return Err(ApiError::too_many_requests(
                std::time::Duration::from_secs(5),
                why,
            ));
        }
        open.total += 1;
        open.by_key.insert(key.clone(), mine + 1);
        Ok(StreamPermit {
            limiter: self.clone(),
            key,
        })
    }

    /// How many requests are held open now.
    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |open| open.total)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_key.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_key.remove(&self.key);
            }
        }
    }
}

/// Failed authentications (a malformed, unknown, expired or revoked credential) per
/// source address: `per_minute` in bursts of as many; past that, every request of that
/// address that carries a credential is answered 429 before any lookup, until the
/// quota refills. A guessing client costs no database query, and cannot guess fast.
#[derive(Clone)]
pub struct FailedAuthLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    /// Addresses refused until the given time, checked before a credential is looked at.
    blocked: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    clock: DefaultClock,
}

impl fmt::Debug for FailedAuthLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

type SharedFailures = Mutex<HashMap<(Vec<u8>, u32), FailedAuthLimiter>>;

impl FailedAuthLimiter {
    /// A limiter of its own (tests); servers use [`Self::shared`]. 0 limits nothing.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)))),
            blocked: Arc::default(),
            clock: DefaultClock::default(),
        }
    }

    /// The limiter of these settings, one per process like the others.
    pub fn shared(settings: &SecuritySettings) -> Self {
        static LIMITERS: OnceLock<SharedFailures> = OnceLock::new();
        let per_minute = settings.failed_authentications_per_minute;
        let Ok(mut limiters) = LIMITERS.get_or_init(Mutex::default).lock() else {
            return Self::new(per_minute);
        };
        limiters
            .entry((settings.session_key.clone(), per_minute))
            .or_insert_with(|| Self::new(per_minute))
            .clone()
    }

    /// Refuses `source` while it has used up its failures.
    ///
    /// # Errors
    /// 429 with the time left as `Retry-After`.
    pub fn check(&self, source: &str) -> Result<(), ApiError> {
        if self.limiter.is_none() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match blocked.get(source) {
            Some(until) if *until > now => Err(ApiError::too_many_requests(
                *until - now,
                "too many failed authentications from this address in a minute",
            )),
            Some(_) => {
                blocked.remove(source);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication from `source`; the one past the quota blocks it.
    pub fn failed(&self, source: &str) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        if limiter.len() > RETAIN_ABOVE {
            limiter.retain_recent();
        }
        if let Err(not_until) = limiter.check_key(&source.to_owned()) {
            let wait = not_until.wait_time_from(self.clock.now());
            let mut blocked = self
                .blocked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if blocked.len() > RETAIN_ABOVE {
                let now = std::time::Instant::now();
                blocked.retain(|_, until| *until > now);
            }
            blocked.insert(source.to_owned(), std::time::Instant::now() + wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_streams_are_capped_per_credential_and_in_all_and_given_back_when_done() {
        let limiter = StreamLimiter::new(2, 3);
        let a1 = limiter.acquire("a".to_owned()).expect("first");
        let _a2 = limiter.acquire("a".to_owned()).expect("second");
        let refused = limiter.acquire("a".to_owned()).expect_err("a third for a");
        assert_eq!(refused.problem().status, 429);
        assert!(
            refused.problem().detail.starts_with(
                "too many requests held open (long polls and event streams) with this credential; retry in"
            ),
            "{}",
            refused.problem().detail
        );
        let _b1 = limiter.acquire("b".to_owned()).expect("b has room");
        let full = limiter
            .acquire("c".to_owned())
            .expect_err("three open in all");
        assert!(
            full.problem().detail.contains("on this server"),
            "{}",
            full.problem().detail
        );
        drop(a1);
        assert_eq!(limiter.open(), 2);
        let _c1 = limiter
            .acquire("c".to_owned())
            .expect("a slot was given back");
        let unlimited = StreamLimiter::new(0, 0);
        let permits: Vec<_> = (0..100)
            .map(|_| unlimited.acquire("a".to_owned()).expect("no limit"))
            .collect();
        assert_eq!(unlimited.open(), permits.len());
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_until_its_quota_refills() {
        let limiter = FailedAuthLimiter::new(60);
        for _ in 0..60 {
            assert!(limiter.check("10.0.0.1").is_ok());
            limiter.failed("10.0.0.1");
        }
        assert!(limiter.check("10.0.0.1").is_ok(), "60 failures are allowed");
        limiter.failed("10.0.0.1");
        let refused = limiter.check("10.0.0.1").expect_err("blocked");
        assert_eq!(refused.problem().status, 429);
        assert!(
            refused.problem().detail.starts_with(
                "too many failed authentications from this address in a minute; retry in"
            ),
            "{}",
            refused.problem().detail
        );
        assert!(limiter.check("10.0.0.2").is_ok(), "other addresses are not");
        // One cell refills each second at 60 a minute.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(limiter.check("10.0.0.1").is_ok());
        let unlimited = FailedAuthLimiter::new(0);
        for _ in 0..100 {
            unlimited.failed("a");
        }
        assert!(unlimited.check("a").is_ok());
    }

    #[test]
    fn a_key_gets_its_quota_then_a_retry_time_and_others_are_unaffected() {
        let limiter = MutationLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check("a".to_owned()).is_ok());
        }
        let refused = limiter.check("a".to_owned()).expect_err("limited");
        assert_eq!(refused.problem().status, 429);
        assert!(
            refused
                .problem()
                .detail
                .starts_with("too many changes in a minute with this credential; retry in"),
            "{}",
            refused.problem().detail
        );
        assert!(limiter.check("b".to_owned()).is_ok());
        let unlimited = MutationLimiter::new(0);
        for _ in 0..100 {
            assert!(unlimited.check("a".to_owned()).is_ok());
        }
    }
}
