//! What the `client_time`s of the MOVEs an honest bot receives say about the server's delivery: order,
//! loss, latency.

use super::args::Transport;
use super::engine::Sim;
use super::play::Bot;
use crate::clock::latency_micros;

/// What a MOVE's `client_time` says about delivery, against the previous one about the same player.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// The next one, a period later (give or take half a period).
    InOrder,
    /// Not after the previous one: out of order, or a duplicate.
    Reordered,
    /// After the previous one by this many periods too many: that many MOVEs never arrived.
    Missing(u64),
}

/// Classifies a MOVE stamped `current` that follows one stamped `previous` from a sender that stamps
/// one every `period_us`. Stamps are CLOCK_MONOTONIC µs truncated to u32, so they are compared modulo
/// 2^32 (a difference of up to 35 minutes either way is read correctly).
fn classify_delivery(previous: u32, current: u32, period_us: u64) -> Delivery {
    let gap = current.wrapping_sub(previous);
    if gap as i32 <= 0 {
        return Delivery::Reordered;
    }
    let (gap, period) = (u64::from(gap), period_us.max(1));
    // More than 1.5 periods: rounding to whole periods absorbs the jitter of the sender's clock reads.
    if 2 * gap > 3 * period { Delivery::Missing((gap + period / 2) / period - 1) } else { Delivery::InOrder }
}

impl Sim<'_> {
    /// A MOVE about another player, at `position`, stamped `stamp`: the bot's view follows it, and
    /// between honest bots the stamp counts MOVEs reordered or lost and the delivery latency.
    pub(super) fn check_move(
        &mut self,
        bot: &mut Bot,
        about: u32,
        position: (f32, f32),
        stamp: u32,
        now: u64,
    ) {
        let (x, z) = position;
        let honest_receiver = bot.chaos.is_none();
        let entry = bot.seen.iter_mut().find(|seen| seen.id == about);
        let honest_mover = entry.as_ref().is_none_or(|seen| seen.honest);
        if let Some(entry) = entry {
            entry.x = x;
            entry.z = z;
            if stamp == 0 {
                // The server's own MOVE (a respawn): the sender's sequence starts afresh.
                entry.last_client_time = None;
            } else if let Some(previous) = entry.last_client_time.replace(stamp)
                && honest_receiver
                && entry.honest
            {
                match classify_delivery(previous, stamp, self.period) {
                    Delivery::Reordered => self.counters.moves_reordered += 1,
                    // MOVE is unreliable over UDP: a gap is the channel's loss, not the server's fault.
                    Delivery::Missing(n) if self.args.transport == Transport::Udp => {
                        self.counters.moves_lost_unreliable += n
                    }
                    Delivery::Missing(n) => self.counters.moves_missing += n,
                    Delivery::InOrder => {}
                }
            }
        }
        // A stalled chaos bot reads late, and a chaos bot's bursts share one client_time
        // sequence: neither says anything about the server's delivery latency.
        if stamp != 0 && honest_receiver && honest_mover {
            let _ = self.counters.latency.record(u64::from(latency_micros(stamp, now)).max(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: u64 = 100_000;

    #[test]
    fn consecutive_moves_are_in_order() {
        assert_eq!(classify_delivery(1_000, 101_000, PERIOD), Delivery::InOrder);
        // The sender's stamps are exact multiples of the period apart; anything up to 1.5 is one.
        assert_eq!(classify_delivery(1_000, 151_000, PERIOD), Delivery::InOrder);
        assert_eq!(classify_delivery(1_000, 1_001, PERIOD), Delivery::InOrder);
    }

    #[test]
    fn gaps_count_the_moves_lost() {
        assert_eq!(classify_delivery(1_000, 151_001, PERIOD), Delivery::Missing(1));
        assert_eq!(classify_delivery(1_000, 201_000, PERIOD), Delivery::Missing(1));
        assert_eq!(classify_delivery(1_000, 301_000, PERIOD), Delivery::Missing(2));
        assert_eq!(classify_delivery(0, 1_000_000, PERIOD), Delivery::Missing(9));
        // Rounded to the nearest period.
        assert_eq!(classify_delivery(0, 249_999, PERIOD), Delivery::Missing(1));
        assert_eq!(classify_delivery(0, 250_000, PERIOD), Delivery::Missing(2));
    }

    #[test]
    fn stamps_not_after_the_previous_are_reordered() {
        assert_eq!(classify_delivery(500_000, 400_000, PERIOD), Delivery::Reordered);
        assert_eq!(classify_delivery(500_000, 500_000, PERIOD), Delivery::Reordered, "a duplicate");
        assert_eq!(classify_delivery(500_000, 0, PERIOD), Delivery::Reordered);
    }

    #[test]
    fn the_u32_wrap_is_not_a_reorder() {
        let before_wrap = u32::MAX - 30_000;
        let after_wrap = before_wrap.wrapping_add(100_000);
        assert!(after_wrap < before_wrap);
        assert_eq!(classify_delivery(before_wrap, after_wrap, PERIOD), Delivery::InOrder);
        assert_eq!(
            classify_delivery(before_wrap, before_wrap.wrapping_add(300_000), PERIOD),
            Delivery::Missing(2)
        );
        assert_eq!(classify_delivery(after_wrap, before_wrap, PERIOD), Delivery::Reordered);
    }
}
