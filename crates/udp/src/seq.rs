//! Wrapping 16-bit sequence numbers, compared by distance on the circle.

use std::cmp::Ordering;
use std::fmt;

/// A 16-bit sequence number that wraps from 65535 to 0: datagram sequences and reliable message ids.
///
/// Two numbers are ordered by the shorter way round the circle: `b` is newer than `a` when it lies
/// less than half the circle (32768) ahead of it. So the order holds as long as the numbers compared
/// are never half the circle apart, which the windows of the channels guarantee (a few hundred at
/// most).
///
/// ```
/// use gamewire_udp::seq::Seq;
///
/// let last = Seq(65535);
/// assert_eq!(last.next(), Seq(0));
/// assert!(Seq(0).is_newer_than(last), "0 follows 65535");
/// assert_eq!(Seq(2).distance_from(last), 3);
/// assert_eq!(last.distance_from(Seq(2)), -3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seq(pub u16);

impl Seq {
    /// The number after this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.wrapping_add(1))
    }

    /// This number advanced by `steps` (wrapping).
    #[must_use]
    pub fn plus(self, steps: u16) -> Seq {
        Seq(self.0.wrapping_add(steps))
    }

    /// How far ahead of `earlier` this number is, the short way round: positive when newer, negative
    /// when older, in `-32768..=32767`.
    pub fn distance_from(self, earlier: Seq) -> i32 {
        i32::from(self.0.wrapping_sub(earlier.0) as i16)
    }

    /// Whether this number is newer than `other` (strictly).
    pub fn is_newer_than(self, other: Seq) -> bool {
        self.distance_from(other) > 0
    }

    /// Orders by [`Seq::distance_from`]: meaningful only for numbers less than half the circle apart.
    pub fn compare(self, other: Seq) -> Ordering {
        self.distance_from(other).cmp(&0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_number_ahead_by_less_than_half_the_circle_is_newer(start: u16, steps in 1u16..32768) {
            let a = Seq(start);
            let b = a.plus(steps);
            prop_assert!(b.is_newer_than(a));
            prop_assert!(!a.is_newer_than(b));
            prop_assert_eq!(b.distance_from(a), i32::from(steps));
            prop_assert_eq!(a.compare(b), Ordering::Less);
        }
    }

    #[test]
    fn a_number_is_not_newer_than_itself() {
        assert!(!Seq(7).is_newer_than(Seq(7)));
        assert_eq!(Seq(7).compare(Seq(7)), Ordering::Equal);
    }
}
