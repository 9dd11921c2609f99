//! One datagram to send, as iovec pieces: the recipient's own small header, then the shared frames.

use std::fmt;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr};

use gamewire_proto::HEADER_LEN;

use crate::datagram::{
    CHALLENGE_LEN, DATA_HEADER_MAX_LEN, DISCONNECT_LEN, MAX_DATAGRAM, RELIABLE_PREFIX_LEN,
};
use crate::seq::Seq;

/// Room for the owned bytes at the front of any datagram the listener sends: a DATA header (with
/// the nonce echo), a whole CHALLENGE or a whole DISCONNECT.
const HEAD_MAX: usize = max(DATA_HEADER_MAX_LEN, max(CHALLENGE_LEN, DISCONNECT_LEN));

/// Room for an ERROR frame the listener encodes itself: a 12-byte header, the 4-byte code and the
/// code's name (at most 14 bytes, UNKNOWN_PACKET).
pub(super) const OWN_ERROR_MAX: usize = 32;

/// Most pieces after the head: two per reliable item of at least 14 bytes (a prefix and a frame
/// header), which is more per byte than unreliable frames of at least 12 bytes give.
const MAX_PIECES: usize = 2 * (MAX_DATAGRAM / (RELIABLE_PREFIX_LEN + HEADER_LEN));

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// One piece after the head.
enum Piece<F> {
    /// A reliable item's message id.
    Prefix([u8; RELIABLE_PREFIX_LEN]),
    /// A frame shared with other recipients (reliable or unreliable).
    Frame(F),
    /// The ERROR frame the listener encoded itself, in [`Transmit::own_error`].
    OwnError,
}

/// The caller's reusable slot for one outgoing datagram, filled by
/// [`Listener::poll_transmit`](super::Listener::poll_transmit).
///
/// The datagram is a list of byte slices to send back to back, as one `sendmsg` iovec (or one
/// entry of a `sendmmsg` batch): the owned head (a DATA header for this recipient, or a whole small
/// datagram: CHALLENGE, DISCONNECT), then for each reliable item its 2-byte message id and the frame
/// `F` it shares with every other recipient of that frame, then the unreliable frames `F`. No frame
/// byte is copied; holding the datagram holds a clone of each `F` (a refcount, for pooled frames),
/// which [`clear`](Self::clear) or the next fill releases.
///
/// At most [`MAX_DATAGRAM`] bytes; [`segment_count`](Self::segment_count) is at most 171 (the head,
/// then two per reliable item of at least 14 bytes), far under `IOV_MAX` (1024 on Linux).
///
/// # Examples
///
/// ```
/// use std::io::IoSlice;
/// use gamewire_udp::listener::Transmit;
///
/// let transmit = Transmit::<Vec<u8>>::new();
/// let mut iovec = [IoSlice::new(&[]); 8];
/// let used = transmit.io_slices(&mut iovec);
/// assert_eq!((used, transmit.len()), (1, 0), "an unfilled transmit is an empty head");
/// ```
pub struct Transmit<F> {
    destination: SocketAddr,
    head: [u8; HEAD_MAX],
    head_len: usize,
    pieces: Vec<Piece<F>>,
    own_error: [u8; OWN_ERROR_MAX],
    own_error_len: usize,
    len: usize,
}

impl<F: AsRef<[u8]>> Transmit<F> {
    /// An empty transmit, with room for the most pieces a datagram can have (it never allocates
    /// again).
    pub fn new() -> Transmit<F> {
        Transmit {
            destination: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            head: [0; HEAD_MAX],
            head_len: 0,
            pieces: Vec::with_capacity(MAX_PIECES),
            own_error: [0; OWN_ERROR_MAX],
            own_error_len: 0,
            len: 0,
        }
    }

    /// Where the datagram goes.
    pub fn destination(&self) -> SocketAddr {
        self.destination
    }

    /// The datagram's length in bytes: the sum of its segments.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing (never filled, or cleared).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many segments [`segments`](Self::segments) yields: the head, then one per prefix and
    /// frame.
    pub fn segment_count(&self) -> usize {
        1 + self.pieces.len()
    }

    /// The datagram's bytes as slices to send back to back, in order.
    pub fn segments(&self) -> Segments<'_, F> {
        Segments { transmit: self, next: None }
    }

    /// Fills `out` with the segments, as `writev`/`sendmsg` take them, and returns how many it
    /// filled: all of them ([`segment_count`](Self::segment_count)) if `out` is long enough.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, segment) in out.iter_mut().zip(self.segments()) {
            *slot = IoSlice::new(segment);
            filled += 1;
        }
        filled
    }

    /// Copies the datagram, flattened, to the start of `buf` and returns its length: for senders
    /// without iovecs, and tests.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`len`](Self::len) (at most [`MAX_DATAGRAM`]).
    pub fn copy_to(&self, buf: &mut [u8]) -> usize {
        assert!(buf.len() >= self.len, "a buffer of {} bytes for a datagram of {}", buf.len(), self.len);
        let mut at = 0;
        for segment in self.segments() {
            buf[at..at + segment.len()].copy_from_slice(segment);
            at += segment.len();
        }
        at
    }

    /// Empties it and releases the frames it holds (their pool memory, for pooled frames), without
    /// freeing its own room. Call it once the datagram is sent, if the transmit is not refilled soon.
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.head_len = 0;
        self.own_error_len = 0;
        self.len = 0;
    }

    /// Starts a datagram to `destination` whose head is `head_len` bytes, written by `write` into the
    /// head buffer.
    pub(super) fn start(&mut self, destination: SocketAddr, write: impl FnOnce(&mut [u8]) -> usize) {
        self.clear();
        self.destination = destination;
        self.head_len = write(&mut self.head);
        self.len = self.head_len;
    }

    /// Overwrites the head (same length): a DATA header whose `reliable_count` is known only once its
    /// items are in.
    pub(super) fn rewrite_head(&mut self, write: impl FnOnce(&mut [u8]) -> usize) {
        let len = write(&mut self.head);
        debug_assert_eq!(len, self.head_len);
    }

    pub(super) fn push_reliable(&mut self, id: Seq, frame: F) {
        self.len += RELIABLE_PREFIX_LEN + frame.as_ref().len();
        self.pieces.push(Piece::Prefix(id.0.to_le_bytes()));
        self.pieces.push(Piece::Frame(frame));
    }

    pub(super) fn push_unreliable(&mut self, frame: F) {
        self.len += frame.as_ref().len();
        self.pieces.push(Piece::Frame(frame));
    }

    /// A reliable item whose frame is `frame`'s bytes, copied (at most [`OWN_ERROR_MAX`]).
    pub(super) fn push_own_error(&mut self, id: Seq, frame: &[u8]) {
        self.own_error[..frame.len()].copy_from_slice(frame);
        self.own_error_len = frame.len();
        self.len += RELIABLE_PREFIX_LEN + frame.len();
        self.pieces.push(Piece::Prefix(id.0.to_le_bytes()));
        self.pieces.push(Piece::OwnError);
    }
}

impl<F: AsRef<[u8]>> Default for Transmit<F> {
    fn default() -> Self {
        Transmit::new()
    }
}

impl<F> fmt::Debug for Transmit<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("destination", &self.destination)
            .field("len", &self.len)
            .field("segments", &(1 + self.pieces.len()))
            .finish()
    }
}

/// The segments of a [`Transmit`], from [`Transmit::segments`].
pub struct Segments<'a, F> {
    transmit: &'a Transmit<F>,
    /// Index of the next piece; `None` before the head.
    next: Option<usize>,
}

impl<'a, F: AsRef<[u8]>> Iterator for Segments<'a, F> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let transmit = self.transmit;
        let Some(index) = self.next else {
            self.next = Some(0);
            return Some(&transmit.head[..transmit.head_len]);
        };
        let piece = transmit.pieces.get(index)?;
        self.next = Some(index + 1);
        Some(match piece {
            Piece::Prefix(prefix) => prefix,
            Piece::Frame(frame) => frame.as_ref(),
            Piece::OwnError => &transmit.own_error[..transmit.own_error_len],
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.transmit.segment_count() - self.next.map_or(0, |index| index + 1);
        (left, Some(left))
    }
}

impl<F: AsRef<[u8]>> ExactSizeIterator for Segments<'_, F> {}

impl<F> fmt::Debug for Segments<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments").field("next", &self.next).finish_non_exhaustive()
    }
}
