//! The round-trip time estimate and the resend timeout derived from it (RFC 6298's smoothing).

use std::time::Duration;

/// Smoothed round-trip time and its variation, from acknowledged datagrams.
///
/// The smoothing is [RFC 6298] section 2: the first sample `R` sets `srtt = R` and `rttvar = R / 2`;
/// every later one sets `rttvar = 3/4 rttvar + 1/4 |srtt - R|`, then `srtt = 7/8 srtt + 1/8 R`.
/// The [`resend_timeout`](RttEstimator::resend_timeout) is `max(srtt x 1.25, srtt + 4 x rttvar)`,
/// clamped to `[min, max]`: 1.25 x RTT on a steady link (the issue's rule, much sooner than TCP's), but
/// the variance term keeps a jittery link from resending most messages before their ack could be back
/// (ENet uses the same `rtt + 4 x variance`).
///
/// Which datagrams give samples is decided by [`Endpoint`](super::Endpoint) (see its docs on RTT).
///
/// [RFC 6298]: https://www.rfc-editor.org/rfc/rfc6298#section-2
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use gamewire_udp::reliable::RttEstimator;
///
/// let ms = Duration::from_millis;
/// let mut rtt = RttEstimator::new(ms(200));
/// assert_eq!(rtt.smoothed(), ms(200), "no sample yet: the initial guess");
/// rtt.on_sample(ms(40));
/// assert_eq!((rtt.smoothed(), rtt.variance()), (ms(40), ms(20)));
/// // 40 + 4 x 20 = 120 ms beats 40 x 1.25 = 50 ms while the variance is still the first guess.
/// assert_eq!(rtt.resend_timeout(ms(50), ms(1000)), ms(120));
/// ```
#[derive(Clone, Debug)]
pub struct RttEstimator {
    smoothed: Duration,
    variance: Duration,
    samples: u64,
}

impl RttEstimator {
    /// An estimate with no sample yet: `initial` stands for the smoothed RTT, with no variance.
    pub fn new(initial: Duration) -> Self {
        RttEstimator { smoothed: initial, variance: Duration::ZERO, samples: 0 }
    }

    /// Folds in one round-trip measurement. O(1).
    pub fn on_sample(&mut self, sample: Duration) {
        if self.samples == 0 {
            self.smoothed = sample;
            self.variance = sample / 2;
        } else {
            // Written as `x - x/4 + y/4` rather than `x * 3/4 + ...` so that no step can overflow: the
            // result never exceeds the larger of the two inputs.
            let deviation = self.smoothed.abs_diff(sample);
            self.variance = (self.variance - self.variance / 4).saturating_add(deviation / 4);
            self.smoothed = (self.smoothed - self.smoothed / 8).saturating_add(sample / 8);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// The smoothed round-trip time (`srtt`), or the initial guess before any sample.
    pub fn smoothed(&self) -> Duration {
        self.smoothed
    }

    /// The round-trip time variation (`rttvar`), zero before any sample.
    pub fn variance(&self) -> Duration {
        self.variance
    }

    /// How many samples were folded in.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// How long to wait for an ack before sending a message again the first time:
    /// `max(srtt x 1.25, srtt + 4 x rttvar)` clamped to `[min, max]` (`max` wins if `min > max`).
    pub fn resend_timeout(&self, min: Duration, max: Duration) -> Duration {
        let steady = self.smoothed.saturating_mul(5) / 4;
        let jittery = self.smoothed.saturating_add(self.variance.saturating_mul(4));
        steady.max(jittery).max(min).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reliable::Config;

    const fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// The default clamp of the resend timeout (50 ms ..= 1 s today), from the config that sets it.
    fn bounds() -> (Duration, Duration) {
        let config = Config::default();
        (config.min_resend_timeout, config.max_resend_timeout)
    }

    #[test]
    fn later_samples_follow_rfc_6298() {
        let mut rtt = RttEstimator::new(ms(500));
        rtt.on_sample(ms(100));
        rtt.on_sample(ms(180));
        // rttvar = 3/4 x 50 + 1/4 x 80 = 57.5; srtt = 7/8 x 100 + 1/8 x 180 = 110.
        assert_eq!(rtt.variance(), Duration::from_micros(57_500));
        assert_eq!(rtt.smoothed(), ms(110));
        assert_eq!(rtt.samples(), 2);
    }

    #[test]
    fn a_steady_link_converges_to_its_round_trip_and_resends_at_one_and_a_quarter_of_it() {
        let mut rtt = RttEstimator::new(ms(200));
        for _ in 0..100 {
            rtt.on_sample(ms(80));
        }
        assert_eq!(rtt.smoothed(), ms(80));
        assert!(rtt.variance() < ms(1), "{:?}", rtt.variance());
        let (min, max) = bounds();
        assert!(min < ms(100) && ms(100) < max);
        assert_eq!(rtt.resend_timeout(min, max), ms(100));
    }

    #[test]
    fn the_resend_timeout_is_clamped_both_ways() {
        let (min, max) = bounds();
        let mut fast = RttEstimator::new(ms(1));
        fast.on_sample(ms(1));
        assert_eq!(fast.resend_timeout(min, max), min);
        let mut slow = RttEstimator::new(ms(1));
        slow.on_sample(max * 5);
        assert_eq!(slow.resend_timeout(min, max), max);
        assert_eq!(RttEstimator::new(ms(200)).resend_timeout(min, max), ms(250), "before samples");
    }

    #[test]
    fn huge_samples_saturate_instead_of_panicking() {
        let mut rtt = RttEstimator::new(Duration::MAX);
        rtt.on_sample(Duration::MAX);
        rtt.on_sample(Duration::ZERO);
        rtt.on_sample(Duration::MAX);
        let (min, max) = bounds();
        assert_eq!(rtt.resend_timeout(min, max), max);
    }
}
