//! CLOCK_MONOTONIC in microseconds: the time base bots stamp into MOVE and measure latency against.

/// Microseconds of CLOCK_MONOTONIC. Every process on the machine reads the same clock, so a
/// `client_time` stamped by one bot process and read back by another measures delivery latency.
pub(crate) fn monotonic_micros() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// `client_time` for a MOVE sent at `micros`: the protocol's u32, truncated (it wraps every 71 min).
pub(crate) fn client_time(micros: u64) -> u32 {
    micros as u32
}

/// Delivery latency of a MOVE stamped `client_time` and received at `now_micros`, robust to the u32
/// wrap: the difference is taken modulo 2^32.
pub(crate) fn latency_micros(client_time: u32, now_micros: u64) -> u32 {
    (now_micros as u32).wrapping_sub(client_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_survives_the_u32_wrap() {
        let sent = u32::MAX as u64 - 10;
        assert_eq!(latency_micros(client_time(sent), sent + 25), 25);
        assert_eq!(latency_micros(client_time(1_000), 1_500), 500);
        let a = monotonic_micros();
        let b = monotonic_micros();
        assert!(b >= a);
    }
}
