//! The limit on changes per credential: `mutations_per_minute` per token (per account
//! for the session cookie), with bursts of as many, answered 429 with `Retry-After`.

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
            ApiError::too_many_requests(not_until.wait_time_from(self.clock.now()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_quota_then_a_retry_time_and_others_are_unaffected() {
        let limiter = MutationLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check("a".to_owned()).is_ok());
        }
        let refused = limiter.check("a".to_owned()).expect_err("limited");
        assert_eq!(refused.problem().status, 429);
        assert!(limiter.check("b".to_owned()).is_ok());
        let unlimited = MutationLimiter::new(0);
        for _ in 0..100 {
            assert!(unlimited.check("a".to_owned()).is_ok());
        }
    }
}
