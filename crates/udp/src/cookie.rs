//! Stateless handshake cookies: a keyed MAC over the client's address and nonce, with an expiry.
//!
//! The server answers a CONNECT with a [`Cookie`] instead of remembering anything about the sender; a
//! RESPONSE that echoes a cookie this server issued, for the same address, port and nonce, within its
//! lifetime, proves that the client receives datagrams at the address it claims (docs/protocol.md
//! §10.3). Only then does the server create a session.
//!
//! The MAC is SipHash-2-4 with a 128-bit output under a 16-byte secret from the operating system's
//! CSPRNG. Forging a cookie means guessing 128 bits online, one datagram per guess. SipHash is a PRF
//! built for short inputs (ours is 31 bytes, one call ~20 ns), which matters because the server computes
//! it for every CONNECT and RESPONSE it receives, spoofed or not. A general-purpose MAC (HMAC-SHA-256,
//! keyed BLAKE3) would be just as good here and slower, with a larger dependency; the cookie needs only
//! unforgeability under a secret key, and confidentiality of nothing.
//!
//! Nothing here reads a clock: every call takes `now`, the time since an epoch the caller picks and
//! keeps (the server's start, or the UNIX epoch), so tests drive expiry and rotation by hand.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use siphasher::sip128::SipHasher24;

/// Bytes of a cookie on the wire: `expires` (u32, little-endian) then the 16-byte MAC.
pub const COOKIE_LEN: usize = 4 + MAC_LEN;
/// Bytes of the MAC in a cookie.
pub const MAC_LEN: usize = 16;
/// Bytes of a [`CookieKey`] (SipHash's key size).
pub const KEY_LEN: usize = 16;
/// How long a cookie stays valid unless [`Cookies::with_lifetime`] says otherwise: 15 s, as quinn's
/// retry tokens. Long enough for a client on a slow, lossy path to resend its RESPONSE several times;
/// short enough that a cookie read off the wire is soon useless.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15);
/// How often a server should give [`Cookies::rotate`] a new key: 60 s. Never less than the lifetime,
/// so that a cookie issued just before a rotation is still checked against the key that made it
/// (the previous one) until it expires.
pub const ROTATION_INTERVAL: Duration = Duration::from_secs(60);
/// The longest lifetime [`Cookies::with_lifetime`] takes: one hour. A cookie is a proof of address
/// for a handshake in progress, not a credential to keep.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Separates this MAC's inputs from any other use of the same key: protocol version 1's cookie.
const DOMAIN: u8 = 1;

/// A handshake cookie as it travels in CHALLENGE and RESPONSE: when it expires, and a MAC over that
/// expiry and the client's address, port and nonce.
///
/// Any 20 bytes are a cookie; only [`Cookies::verify`] says whether it is one the server issued.
///
/// # Examples
///
/// ```
/// use gamewire_udp::cookie::{COOKIE_LEN, Cookie};
///
/// let bytes = [7u8; COOKIE_LEN];
/// let cookie = Cookie::from_bytes(bytes);
/// assert_eq!(cookie.to_bytes(), bytes);
/// assert_eq!(cookie.expires(), u32::from_le_bytes([7; 4]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cookie {
    expires: u32,
    mac: [u8; MAC_LEN],
}

impl Cookie {
    /// The cookie held in `bytes`, as they lie on the wire.
    pub fn from_bytes(bytes: [u8; COOKIE_LEN]) -> Cookie {
        let [e0, e1, e2, e3, mac @ ..] = bytes;
        Cookie { expires: u32::from_le_bytes([e0, e1, e2, e3]), mac }
    }

    /// The cookie's wire bytes.
    pub fn to_bytes(&self) -> [u8; COOKIE_LEN] {
        let mut bytes = [0; COOKIE_LEN];
        bytes[..4].copy_from_slice(&self.expires.to_le_bytes());
        bytes[4..].copy_from_slice(&self.mac);
        bytes
    }

    /// The last second (on the issuing server's clock, truncated to 32 bits) at which the cookie is
    /// valid. Clients treat it as opaque.
    pub fn expires(&self) -> u32 {
        self.expires
    }
}

/// A 16-byte secret for the cookie MAC. Its `Debug` output does not show it.
///
/// # Examples
///
/// ```
/// use gamewire_udp::cookie::CookieKey;
///
/// let key = CookieKey::random().expect("the OS has a CSPRNG");
/// assert_eq!(format!("{key:?}"), "CookieKey(..)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CookieKey([u8; KEY_LEN]);

impl CookieKey {
    /// A fresh key from the operating system's CSPRNG (`getrandom`).
    ///
    /// # Errors
    ///
    /// When the operating system cannot provide random bytes; a server should refuse to start (or keep
    /// its current key, on rotation) rather than fall back to anything guessable.
    pub fn random() -> Result<CookieKey, getrandom::Error> {
        let mut key = [0; KEY_LEN];
        getrandom::fill(&mut key)?;
        Ok(CookieKey(key))
    }

    /// A key with the given bytes: for tests, and for servers that share one key between processes.
    /// The bytes must be secret and unpredictable, or anyone can forge cookies.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> CookieKey {
        CookieKey(bytes)
    }

    fn mac(&self, message: &[u8]) -> [u8; MAC_LEN] {
        SipHasher24::new_with_key(&self.0).hash(message).as_bytes()
    }
}

impl fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

/// Why [`Cookies::verify`] refused a cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// Its expiry is past, or further ahead than the lifetime (not issued by this clock).
    #[error("cookie expired")]
    Expired,
    /// The MAC matches neither key for this address, port and nonce: forged, tampered with, issued to
    /// another client, or made by a key rotated out since.
    #[error("cookie does not match")]
    Invalid,
}

/// Issues and checks cookies under the current secret, and accepts the previous one too, so that a
/// cookie stays valid across one [`Cookies::rotate`].
///
/// Every worker of a server that may receive a client's RESPONSE must check it with the keys that
/// issued its CHALLENGE: give them all the same keys (`Cookies` is `Clone`; rotate them together), or
/// make sure a client's datagrams always reach the same worker.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use gamewire_udp::cookie::{CookieError, CookieKey, Cookies};
///
/// let mut cookies = Cookies::new(CookieKey::random().unwrap());
/// let client = "192.0.2.7:40000".parse().unwrap();
/// let nonce = 0x1234;
/// let now = Duration::from_secs(100); // since the server's start, say
///
/// // CONNECT arrives: answer with a cookie, remember nothing.
/// let cookie = cookies.issue(now, client, nonce);
/// // RESPONSE arrives, 1 s later, with the cookie echoed.
/// assert_eq!(cookies.verify(now + Duration::from_secs(1), client, nonce, &cookie), Ok(()));
/// // The same cookie from another port, or too late, is refused.
/// let other = "192.0.2.7:40001".parse().unwrap();
/// assert_eq!(cookies.verify(now, other, nonce, &cookie), Err(CookieError::Invalid));
/// let late = now + Duration::from_secs(60);
/// assert_eq!(cookies.verify(late, client, nonce, &cookie), Err(CookieError::Expired));
///
/// // Rotation: the previous key still checks, the one before it no longer does.
/// cookies.rotate(CookieKey::random().unwrap());
/// assert_eq!(cookies.verify(now, client, nonce, &cookie), Ok(()));
/// cookies.rotate(CookieKey::random().unwrap());
/// assert_eq!(cookies.verify(now, client, nonce, &cookie), Err(CookieError::Invalid));
/// ```
#[derive(Clone, Debug)]
pub struct Cookies {
    current: CookieKey,
    previous: Option<CookieKey>,
    lifetime_secs: u32,
}

impl Cookies {
    /// Cookies under `key`, valid for [`DEFAULT_LIFETIME`].
    pub fn new(key: CookieKey) -> Cookies {
        Cookies { current: key, previous: None, lifetime_secs: DEFAULT_LIFETIME.as_secs() as u32 }
    }

    /// Cookies under a fresh random key ([`CookieKey::random`]).
    ///
    /// # Errors
    ///
    /// As [`CookieKey::random`].
    pub fn random() -> Result<Cookies, getrandom::Error> {
        CookieKey::random().map(Cookies::new)
    }

    /// The same cookies with another lifetime, counted in whole seconds (rounded down).
    ///
    /// # Panics
    ///
    /// If `lifetime` is under 1 s or over [`MAX_LIFETIME`]: a configuration error.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Cookies {
        assert!(
            (Duration::from_secs(1)..=MAX_LIFETIME).contains(&lifetime),
            "cookie lifetime must be within 1 s ..= {} s, got {lifetime:?}",
            MAX_LIFETIME.as_secs()
        );
        self.lifetime_secs = lifetime.as_secs() as u32;
        self
    }

    /// How long a cookie stays valid after it is issued.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.lifetime_secs))
    }

    /// Makes `key` the current key and the current one the previous; the previous one is forgotten,
    /// and every cookie it made is invalid from now on. Call it every [`ROTATION_INTERVAL`] or so
    /// (never more often than the lifetime, or cookies die before they expire).
    pub fn rotate(&mut self, key: CookieKey) {
        self.previous = Some(std::mem::replace(&mut self.current, key));
    }

    /// A cookie for the client at `client` that sent `client_nonce` in its CONNECT, valid until `now`
    /// plus the lifetime. Costs one SipHash of 31 bytes; allocates nothing.
    ///
    /// `now` is the time since the caller's epoch, the same for every call on these cookies.
    pub fn issue(&self, now: Duration, client: SocketAddr, client_nonce: u64) -> Cookie {
        let expires = secs(now).wrapping_add(self.lifetime_secs);
        Cookie { expires, mac: self.current.mac(&message(client, client_nonce, expires)) }
    }

    /// Checks that `cookie` was issued by these cookies, under the current or the previous key, for the
    /// client at `client` with `client_nonce`, and has not expired at `now`.
    ///
    /// The expiry is checked first, as it costs nothing; then one MAC, two if the cookie is from the
    /// previous key. The MACs are compared in constant time.
    ///
    /// # Errors
    ///
    /// [`CookieError::Expired`] when the cookie's expiry is past (or implausibly far ahead),
    /// [`CookieError::Invalid`] when its MAC matches neither key.
    pub fn verify(
        &self,
        now: Duration,
        client: SocketAddr,
        client_nonce: u64,
        cookie: &Cookie,
    ) -> Result<(), CookieError> {
        // Seconds truncated to 32 bits wrap every 136 years: compare by wrapping distance, so that
        // any epoch works. Valid while 0 <= expires - now <= lifetime.
        if cookie.expires.wrapping_sub(secs(now)) > self.lifetime_secs {
            return Err(CookieError::Expired);
        }
        let message = message(client, client_nonce, cookie.expires);
        let matches = |key: &CookieKey| constant_time_eq(&key.mac(&message), &cookie.mac);
        if matches(&self.current) || self.previous.as_ref().is_some_and(matches) {
            Ok(())
        } else {
            Err(CookieError::Invalid)
        }
    }
}

/// `now` in whole seconds, truncated to the cookie's 32 bits (see [`Cookies::verify`]).
fn secs(now: Duration) -> u32 {
    now.as_secs() as u32
}

/// The MAC's input: a domain byte, the client's IP as 16 bytes (IPv4 mapped into IPv6, so that a
/// client is the same whether a dual-stack socket shows it as `a.b.c.d` or `::ffff:a.b.c.d`), its
/// port, its nonce and the expiry.
fn message(client: SocketAddr, client_nonce: u64, expires: u32) -> [u8; 31] {
    let ip = match client.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    let mut message = [0; 31];
    message[0] = DOMAIN;
    message[1..17].copy_from_slice(&ip);
    message[17..19].copy_from_slice(&client.port().to_le_bytes());
    message[19..27].copy_from_slice(&client_nonce.to_le_bytes());
    message[27..31].copy_from_slice(&expires.to_le_bytes());
    message
}

/// Compares without an early exit, so that the time a refusal takes does not tell an attacker how
/// many leading bytes of a guessed MAC were right.
fn constant_time_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(byte: u8) -> CookieKey {
        CookieKey::from_bytes([byte; KEY_LEN])
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    const NONCE: u64 = 0x0123_4567_89ab_cdef;
    const T0: Duration = Duration::from_secs(1_000);

    fn at(secs: u64) -> Duration {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_cookie_is_valid_for_its_client_within_its_lifetime() {
        let cookies = Cookies::new(key(1));
        let client = addr("198.51.100.4:5000");
        let cookie = cookies.issue(T0, client, NONCE);
        for secs in 0..=15 {
            assert_eq!(cookies.verify(at(secs), client, NONCE, &cookie), Ok(()), "{secs} s later");
        }
        assert_eq!(cookies.verify(at(16), client, NONCE, &cookie), Err(CookieError::Expired));
        assert_eq!(cookies.verify(at(3600), client, NONCE, &cookie), Err(CookieError::Expired));
    }

    #[test]
    fn a_cookie_from_the_future_is_refused() {
        let cookies = Cookies::new(key(1));
        let client = addr("198.51.100.4:5000");
        let cookie = cookies.issue(at(100), client, NONCE);
        assert_eq!(cookies.verify(at(99), client, NONCE, &cookie), Err(CookieError::Expired));
        assert_eq!(cookies.verify(at(100), client, NONCE, &cookie), Ok(()));
    }

    #[test]
    fn a_cookie_is_bound_to_address_port_and_nonce() {
        let cookies = Cookies::new(key(1));
        let client = addr("198.51.100.4:5000");
        let cookie = cookies.issue(T0, client, NONCE);
        for (other, nonce) in [
            (addr("198.51.100.5:5000"), NONCE),
            (addr("198.51.100.4:5001"), NONCE),
            (addr("[2001:db8::4]:5000"), NONCE),
            (client, NONCE ^ 1),
            (client, 0),
        ] {
            assert_eq!(
                cookies.verify(T0, other, nonce, &cookie),
                Err(CookieError::Invalid),
                "{other} {nonce}"
            );
        }
    }

    #[test]
    fn an_ipv4_client_is_the_same_seen_through_a_dual_stack_socket() {
        let cookies = Cookies::new(key(1));
        let cookie = cookies.issue(T0, addr("198.51.100.4:5000"), NONCE);
        assert_eq!(cookies.verify(T0, addr("[::ffff:198.51.100.4]:5000"), NONCE, &cookie), Ok(()));
    }

    #[test]
    fn every_tampered_byte_is_caught() {
        let cookies = Cookies::new(key(1));
        let client = addr("198.51.100.4:5000");
        let bytes = cookies.issue(T0, client, NONCE).to_bytes();
        for i in 0..COOKIE_LEN {
            for bit in 0..8 {
                let mut tampered = bytes;
                tampered[i] ^= 1 << bit;
                let result = cookies.verify(T0, client, NONCE, &Cookie::from_bytes(tampered));
                assert!(result.is_err(), "byte {i} bit {bit} flipped and accepted");
            }
        }
        // A later expiry within the lifetime passes the clock check but not the MAC.
        let mut later = bytes;
        later[0] = later[0].wrapping_sub(1);
        assert_eq!(cookies.verify(T0, client, NONCE, &Cookie::from_bytes(later)), Err(CookieError::Invalid));
    }

    #[test]
    fn a_cookie_survives_one_rotation_not_two() {
        let mut cookies = Cookies::new(key(1));
        let client = addr("198.51.100.4:5000");
        let old = cookies.issue(T0, client, NONCE);
        cookies.rotate(key(2));
        let new = cookies.issue(T0, client, NONCE);
        assert_ne!(old, new, "a new key makes another cookie");
        assert_eq!(cookies.verify(T0, client, NONCE, &old), Ok(()), "previous key");
        assert_eq!(cookies.verify(T0, client, NONCE, &new), Ok(()), "current key");
        cookies.rotate(key(3));
        assert_eq!(cookies.verify(T0, client, NONCE, &old), Err(CookieError::Invalid), "two rotations");
        assert_eq!(cookies.verify(T0, client, NONCE, &new), Ok(()), "one rotation");
    }

    #[test]
    fn another_key_does_not_check() {
        let client = addr("198.51.100.4:5000");
        let cookie = Cookies::new(key(1)).issue(T0, client, NONCE);
        assert_eq!(Cookies::new(key(9)).verify(T0, client, NONCE, &cookie), Err(CookieError::Invalid));
    }

    #[test]
    fn expiry_wraps_with_the_clock() {
        let cookies = Cookies::new(key(1));
        let client = addr("198.51.100.4:5000");
        // 3 s before the 32-bit seconds wrap: the cookie expires just after it.
        let now = Duration::from_secs(u64::from(u32::MAX) - 2);
        let cookie = cookies.issue(now, client, NONCE);
        assert_eq!(cookies.verify(now + Duration::from_secs(10), client, NONCE, &cookie), Ok(()));
        assert_eq!(
            cookies.verify(now + Duration::from_secs(16), client, NONCE, &cookie),
            Err(CookieError::Expired)
        );
    }

    #[test]
    fn the_lifetime_is_configurable() {
        let cookies = Cookies::new(key(1)).with_lifetime(Duration::from_secs(3));
        assert_eq!(cookies.lifetime(), Duration::from_secs(3));
        let client = addr("198.51.100.4:5000");
        let cookie = cookies.issue(T0, client, NONCE);
        assert_eq!(cookies.verify(at(3), client, NONCE, &cookie), Ok(()));
        assert_eq!(cookies.verify(at(4), client, NONCE, &cookie), Err(CookieError::Expired));
    }

    #[test]
    #[should_panic(expected = "cookie lifetime")]
    fn a_zero_lifetime_is_a_configuration_error() {
        let _ = Cookies::new(key(1)).with_lifetime(Duration::from_millis(999));
    }

    #[test]
    fn random_keys_differ() {
        let a = CookieKey::random().unwrap();
        let b = CookieKey::random().unwrap();
        assert_ne!(a, b, "128 random bits collided");
    }

    proptest! {
        #[test]
        fn only_the_issued_inputs_verify(
            key_bytes: [u8; KEY_LEN],
            ip: [u8; 16],
            port: u16,
            nonce: u64,
            now in 0u64..1 << 40,
            other_ip: [u8; 16],
            other_port: u16,
            other_nonce: u64,
            later in 0u64..15,
        ) {
            let cookies = Cookies::new(CookieKey::from_bytes(key_bytes));
            let client = SocketAddr::from((ip, port));
            let now = Duration::from_secs(now);
            let cookie = cookies.issue(now, client, nonce);
            let then = now + Duration::from_secs(later);
            prop_assert_eq!(cookies.verify(then, client, nonce, &cookie), Ok(()));
            let other = SocketAddr::from((other_ip, other_port));
            let same = (other.ip(), other_port, other_nonce) == (client.ip(), port, nonce);
            prop_assert_eq!(cookies.verify(then, other, other_nonce, &cookie).is_ok(), same);
            prop_assert_eq!(Cookie::from_bytes(cookie.to_bytes()), cookie);
        }
    }
}
