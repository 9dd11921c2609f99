//! Token buckets for the per-player packet limits.

use std::time::Instant;

use crate::Rate;

/// A token bucket that starts full and refills continuously.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    tokens: f32,
    updated: Instant,
}

impl TokenBucket {
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket { tokens: rate.burst, updated: now }
    }

    /// Takes one token if there is one. O(1), no allocation.
    pub(crate) fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f32();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_sustained_rate() {
        let rate = Rate::new(4.0, 4.0);
        let start = Instant::now();
        let mut bucket = TokenBucket::full(rate, start);
        for _ in 0..4 {
            assert!(bucket.try_take(rate, start));
        }
        assert!(!bucket.try_take(rate, start));
        assert!(!bucket.try_take(rate, start + Duration::from_millis(200)));
        assert!(bucket.try_take(rate, start + Duration::from_millis(260)));
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(60);
        for _ in 0..4 {
            assert!(bucket.try_take(rate, later));
        }
        assert!(!bucket.try_take(rate, later));
    }
}
