//! `ChunkMut`: exclusive write access to one allocated chunk, from which frames are frozen off.

use std::fmt;
use std::ptr::NonNull;
use std::slice;

use crate::bytes::PoolBytes;
use crate::pool::Shared;

/// An allocated chunk: exclusive, writable, and the source of the [`PoolBytes`] frozen from it.
///
/// The chunk's bytes are laid out as
///
/// ```text
/// [ frozen or cleared | filled | spare ]
/// 0                start        end   capacity
/// ```
///
/// Writers fill [`spare_mut`](ChunkMut::spare_mut) and [`advance`](ChunkMut::advance); the filled
/// bytes are then either [`freeze`](ChunkMut::freeze)d into an immutable, shareable [`PoolBytes`]
/// (after which writing continues behind them: many small frames carved from one chunk) or
/// [`clear`](ChunkMut::clear)ed. Dropping the `ChunkMut` gives up its reference; the chunk returns to
/// the pool when the frozen slices are gone too.
///
/// # Examples
///
/// ```
/// use gamewire_pool::{Pool, PoolConfig};
///
/// let pool = Pool::new(PoolConfig { chunk_size: 64, chunk_count: 1 })?;
/// let mut chunk = pool.try_alloc().unwrap();
/// chunk.spare_mut()[..3].copy_from_slice(b"one");
/// chunk.advance(3);
/// let one = chunk.freeze();
/// chunk.spare_mut()[..3].copy_from_slice(b"two");
/// chunk.advance(3);
/// let two = chunk.freeze();
/// drop(chunk);
/// assert_eq!((&one[..], &two[..]), (&b"one"[..], &b"two"[..]));
/// assert_eq!(pool.free_chunks(), 0, "the frames still hold the chunk");
/// drop((one, two));
/// assert_eq!(pool.free_chunks(), 1);
/// # Ok::<(), gamewire_pool::PoolError>(())
/// ```
pub struct ChunkMut {
    /// Holds the chunk's strong count on `Shared` (shared with its `PoolBytes`).
    shared: NonNull<Shared>,
    /// Start of the chunk.
    data: NonNull<u8>,
    index: u32,
    /// First filled byte; everything before it is frozen or forgotten.
    start: usize,
    /// First spare byte.
    end: usize,
}

// SAFETY: a `ChunkMut` owns its chunk's writable part exclusively and one counted reference; moving it
// to another thread moves that ownership (the count and the free list are atomic).
unsafe impl Send for ChunkMut {}
// SAFETY: `&ChunkMut` only allows reading the filled bytes, which nothing writes while the shared
// borrow lasts.
unsafe impl Sync for ChunkMut {}

impl ChunkMut {
    /// Wraps a freshly allocated chunk.
    ///
    /// # Safety
    ///
    /// The caller must own chunk `index` of `shared` with exactly one reference (now owned by the
    /// `ChunkMut`) and the chunk's strong count, `shared` must come from `Arc::into_raw`, and `data`
    /// must be `shared.chunk_ptr(index)`.
    pub(crate) unsafe fn from_raw_parts(shared: NonNull<Shared>, data: NonNull<u8>, index: u32) -> ChunkMut {
        ChunkMut { shared, data, index, start: 0, end: 0 }
    }

    fn shared(&self) -> &Shared {
        // SAFETY: our reference keeps the chunk allocated, and an allocated chunk holds a strong count
        // on `Shared`.
        unsafe { self.shared.as_ref() }
    }

    /// The chunk's size in bytes (the pool's chunk size).
    pub fn capacity(&self) -> usize {
        self.shared().chunk_size()
    }

    /// The chunk's index in its pool, in `0..chunk_count`: a stable identity for the chunk, e.g. a
    /// buffer id.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The bytes written (and [`advance`](ChunkMut::advance)d over) since the last
    /// [`freeze`](ChunkMut::freeze) or [`clear`](ChunkMut::clear).
    pub fn filled(&self) -> &[u8] {
        // SAFETY: `start <= end <= capacity`, inside our chunk; the filled bytes are written only
        // through `&mut self`, and no `PoolBytes` covers them (frozen bytes lie before `start`).
        unsafe { slice::from_raw_parts(self.data.as_ptr().add(self.start), self.end - self.start) }
    }

    /// The writable tail after the filled bytes, [`remaining`](ChunkMut::remaining) bytes long.
    ///
    /// Its contents are arbitrary (left over from earlier use) but initialized. Write into it, then
    /// call [`advance`](ChunkMut::advance) with the number of bytes written.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let len = self.remaining();
        // SAFETY: `end <= capacity`, so `[end, capacity)` is inside our chunk. Only this `ChunkMut`
        // ever touches bytes from `start` on (frozen `PoolBytes` lie before it), and `&mut self`
        // makes the borrow exclusive. Mapped memory is always initialized.
        unsafe { slice::from_raw_parts_mut(self.data.as_ptr().add(self.end), len) }
    }

    /// Number of spare bytes: `capacity - end of the filled bytes`.
    pub fn remaining(&self) -> usize {
        self.capacity() - self.end
    }

    /// Marks the first `n` spare bytes as filled. O(1).
    ///
    /// # Panics
    ///
    /// If `n > self.remaining()` (a caller bug: more bytes than were available to write).
    pub fn advance(&mut self, n: usize) {
        let remaining = self.remaining();
        assert!(n <= remaining, "advance({n}) past the end of the chunk ({remaining} bytes remaining)");
        self.end += n;
    }

    /// Forgets the filled bytes (they are not frozen, so nothing refers to them). O(1).
    ///
    /// If no [`PoolBytes`] frozen from this chunk is still alive, the whole chunk becomes spare again,
    /// so one receive chunk can be refilled forever; otherwise only the filled part is reclaimed.
    pub fn clear(&mut self) {
        if self.shared().is_unique(self.index) {
            self.start = 0;
        }
        self.end = self.start;
    }

    /// Splits the filled bytes off as an immutable [`PoolBytes`] sharing this chunk; writing then
    /// continues after them. O(1), one atomic increment, no heap allocation.
    ///
    /// With nothing filled this returns an empty `PoolBytes` (which still holds the chunk).
    pub fn freeze(&mut self) -> PoolBytes {
        self.shared().acquire_ref(self.index);
        // SAFETY: `start <= capacity`, inside our chunk.
        let ptr = unsafe { self.data.add(self.start) };
        let len = self.end - self.start;
        self.start = self.end;
        // SAFETY: we just took a reference for the new `PoolBytes`; `shared` holds the chunk's strong
        // count; `[ptr, ptr + len)` lies before the new `start`, so this `ChunkMut` never writes it
        // again while the reference lives (`clear` rewinds only once it is gone).
        unsafe { PoolBytes::from_chunk(self.shared, self.index, ptr, len) }
    }
}

impl Drop for ChunkMut {
    fn drop(&mut self) {
        // SAFETY: we own one reference and do not use the chunk afterwards; `shared` came from
        // `Arc::into_raw` in `Pool::try_alloc`.
        unsafe { Shared::release(self.shared, self.index) }
    }
}

impl fmt::Debug for ChunkMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkMut")
            .field("index", &self.index)
            .field("capacity", &self.capacity())
            .field("filled", &(self.end - self.start))
            .field("remaining", &self.remaining())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{Pool, PoolConfig};

    fn pool(chunk_size: usize, chunk_count: usize) -> Pool {
        Pool::new(PoolConfig { chunk_size, chunk_count }).unwrap()
    }

    fn put(chunk: &mut super::ChunkMut, bytes: &[u8]) {
        chunk.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        chunk.advance(bytes.len());
    }

    #[test]
    fn fill_advance_remaining() {
        let pool = pool(64, 1);
        let mut chunk = pool.try_alloc().unwrap();
        assert_eq!((chunk.capacity(), chunk.remaining()), (64, 64));
        assert!(chunk.filled().is_empty());
        put(&mut chunk, b"abc");
        assert_eq!(chunk.filled(), b"abc");
        assert_eq!(chunk.remaining(), 61);
        assert_eq!(chunk.spare_mut().len(), 61);
        chunk.advance(61);
        assert_eq!(chunk.remaining(), 0);
        assert!(chunk.spare_mut().is_empty());
    }

    #[test]
    #[should_panic(expected = "advance(2) past the end")]
    fn advance_past_end_panics() {
        let pool = pool(64, 1);
        let mut chunk = pool.try_alloc().unwrap();
        chunk.advance(63);
        chunk.advance(2);
    }

    #[test]
    fn freeze_carves_frames_and_chunk_returns_after_last_reference() {
        let pool = pool(128, 2);
        let mut chunk = pool.try_alloc().unwrap();
        let frames: Vec<_> = [&b"first"[..], b"second frame", b"", b"3"]
            .into_iter()
            .map(|frame| {
                put(&mut chunk, frame);
                chunk.freeze()
            })
            .collect();
        assert!(chunk.filled().is_empty());
        assert_eq!(chunk.remaining(), 128 - 18);
        assert_eq!(frames[0], b"first"[..]);
        assert_eq!(frames[1], b"second frame"[..]);
        assert!(frames[2].is_empty());
        assert_eq!(frames[3], b"3"[..]);
        // Frames are contiguous in the chunk.
        assert_eq!(frames[1].as_ptr(), frames[0].as_ptr().wrapping_add(5));
        assert_eq!(pool.free_chunks(), 1);
        drop(chunk);
        assert_eq!(pool.free_chunks(), 1, "frames still hold the chunk");
        let mut frames = frames;
        let kept = frames.pop().unwrap();
        drop(frames);
        assert_eq!(pool.free_chunks(), 1);
        assert_eq!(kept, b"3"[..]);
        drop(kept);
        assert_eq!(pool.free_chunks(), 2);
    }

    #[test]
    fn clear_rewinds_only_when_nothing_is_frozen() {
        let pool = pool(64, 1);
        let mut chunk = pool.try_alloc().unwrap();
        put(&mut chunk, b"frozen");
        let frozen = chunk.freeze();
        put(&mut chunk, b"scratch");
        chunk.clear();
        assert!(chunk.filled().is_empty());
        assert_eq!(chunk.remaining(), 64 - 6, "frozen bytes are kept");
        chunk.spare_mut().fill(0xee);
        assert_eq!(frozen, b"frozen"[..]);
        drop(frozen);
        chunk.clear();
        assert_eq!(chunk.remaining(), 64, "rewound to the start");
    }

    #[test]
    fn receive_chunk_reused_forever() {
        let pool = pool(64, 1);
        let mut chunk = pool.try_alloc().unwrap();
        for i in 0..10_000u32 {
            put(&mut chunk, &i.to_le_bytes());
            let frame = chunk.freeze();
            assert_eq!(frame[..], i.to_le_bytes());
            drop(frame);
            chunk.clear();
            assert_eq!(chunk.remaining(), 64);
        }
        assert!(pool.try_alloc().is_none());
    }

    #[test]
    fn debug_output() {
        let pool = pool(64, 1);
        let mut chunk = pool.try_alloc().unwrap();
        put(&mut chunk, b"ab");
        assert_eq!(format!("{chunk:?}"), "ChunkMut { index: 0, capacity: 64, filled: 2, remaining: 62 }");
    }

    #[test]
    fn chunk_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::ChunkMut>();
    }
}
