//! `PoolBytes`: an immutable, reference-counted view into a chunk (or a heap fallback).

use std::fmt;
use std::ops::{Bound, Deref, RangeBounds};
use std::ptr::NonNull;
use std::slice;
use std::sync::Arc;

use crate::pool::Shared;

/// Who keeps a [`PoolBytes`]'s memory alive.
enum Owner {
    /// A pooled chunk; one reference on `refs[index]`. `shared` holds the chunk's strong count.
    Chunk { shared: NonNull<Shared>, index: u32 },
    /// One strong count on an `Arc<Vec<u8>>`, from `Arc::into_raw`.
    Heap(NonNull<Vec<u8>>),
    /// `'static` memory: nothing to count.
    Static,
}

/// An immutable, cheaply cloneable byte slice, usually a frame frozen from a pooled chunk.
///
/// Cloning costs one atomic increment and dropping one atomic decrement, with no heap allocation;
/// the chunk goes back to its pool when the last reference to it (its [`ChunkMut`] or any
/// `PoolBytes` frozen or sliced from it) is dropped. The memory stays valid for as long as the
/// `PoolBytes` lives, even after every [`Pool`] handle is gone. 32 bytes on 64-bit targets.
///
/// [`ChunkMut`]: crate::ChunkMut
/// [`Pool`]: crate::Pool
///
/// # Examples
///
/// ```
/// use gamewire_pool::PoolBytes;
///
/// let frame = PoolBytes::from_vec(b"hello world".to_vec());
/// let word = frame.slice(6..);
/// assert_eq!(&word[..], b"world");
/// assert!(!word.is_pooled());
/// ```
pub struct PoolBytes {
    ptr: NonNull<u8>,
    len: usize,
    owner: Owner,
}

// SAFETY: the bytes are immutable while any `PoolBytes` refers to them (see `ChunkMut::freeze`), and
// the owner's counts are atomic: chunk reference counts, or an `Arc<Vec<u8>>` (which is Send + Sync).
unsafe impl Send for PoolBytes {}
// SAFETY: `&PoolBytes` only reads immutable bytes; clone and drop use atomic counts.
unsafe impl Sync for PoolBytes {}

impl PoolBytes {
    /// Wraps frozen bytes of a chunk.
    ///
    /// # Safety
    ///
    /// The caller must hand over one reference to chunk `index` (already counted), `shared` must come
    /// from `Arc::into_raw` of the allocating `Arc<Shared>`, and `[ptr, ptr + len)` must lie inside the
    /// chunk and not be written while any reference to the chunk taken from this one lives.
    pub(crate) unsafe fn from_chunk(
        shared: NonNull<Shared>,
        index: u32,
        ptr: NonNull<u8>,
        len: usize,
    ) -> PoolBytes {
        PoolBytes { ptr, len, owner: Owner::Chunk { shared, index } }
    }

    /// Moves `bytes` to the heap behind a shared count: the fallback for when the pool is exhausted,
    /// so that no frame has to be dropped.
    ///
    /// Allocates once (the count); the bytes are not copied. Clones are as cheap as pooled ones.
    pub fn from_vec(bytes: Vec<u8>) -> PoolBytes {
        let len = bytes.len();
        let heap = Arc::new(bytes);
        // Moving the `Vec` into the Arc did not move its buffer, and nothing will mutate it again.
        let ptr = NonNull::new(heap.as_ptr().cast_mut()).unwrap_or(NonNull::dangling());
        let raw = Arc::into_raw(heap);
        // SAFETY: `Arc::into_raw` never returns null.
        let owner = Owner::Heap(unsafe { NonNull::new_unchecked(raw.cast_mut()) });
        PoolBytes { ptr, len, owner }
    }

    /// Wraps `'static` bytes (a constant frame, or an empty one) without counting or allocating.
    pub const fn from_static(bytes: &'static [u8]) -> PoolBytes {
        PoolBytes {
            // SAFETY: a slice's pointer is never null.
            ptr: unsafe { NonNull::new_unchecked(bytes.as_ptr().cast_mut()) },
            len: bytes.len(),
            owner: Owner::Static,
        }
    }

    /// An empty `PoolBytes`; no allocation.
    pub const fn new() -> PoolBytes {
        PoolBytes::from_static(&[])
    }

    /// Whether the bytes live in a pool chunk (as opposed to the heap fallback or static memory).
    pub fn is_pooled(&self) -> bool {
        matches!(self.owner, Owner::Chunk { .. })
    }

    /// A sub-view sharing the same memory. O(1): one atomic increment, no allocation, no copy.
    ///
    /// # Panics
    ///
    /// If the range's start is after its end, or its end is past `self.len()`.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> PoolBytes {
        let len = self.len;
        let start = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.checked_add(1).expect("range start overflows usize"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.checked_add(1).expect("range end overflows usize"),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => len,
        };
        assert!(start <= end, "slice start {start} is after its end {end}");
        assert!(end <= len, "slice end {end} is out of range for length {len}");
        let mut sub = self.clone();
        // SAFETY: `start <= len`, so the pointer stays inside (or one past) our bytes.
        sub.ptr = unsafe { self.ptr.add(start) };
        sub.len = end - start;
        sub
    }
}

impl Clone for PoolBytes {
    /// One atomic increment (none for static bytes); no allocation.
    fn clone(&self) -> PoolBytes {
        let owner = match self.owner {
            Owner::Chunk { shared, index } => {
                // SAFETY: our reference keeps the chunk allocated, which keeps `Shared` alive.
                unsafe { shared.as_ref() }.acquire_ref(index);
                Owner::Chunk { shared, index }
            }
            Owner::Heap(heap) => {
                // SAFETY: `heap` came from `Arc::into_raw` and we hold one of its strong counts.
                unsafe { Arc::increment_strong_count(heap.as_ptr()) };
                Owner::Heap(heap)
            }
            Owner::Static => Owner::Static,
        };
        PoolBytes { ptr: self.ptr, len: self.len, owner }
    }
}

impl Drop for PoolBytes {
    /// One atomic decrement; the last reference to a chunk returns it to its pool.
    fn drop(&mut self) {
        match self.owner {
            // SAFETY: we own one reference, counted when this `PoolBytes` was made, and do not use
            // the chunk afterwards; `shared` came from `Arc::into_raw` in `Pool::try_alloc`.
            Owner::Chunk { shared, index } => unsafe { Shared::release(shared, index) },
            // SAFETY: `heap` came from `Arc::into_raw` and we give up our strong count.
            Owner::Heap(heap) => unsafe { Arc::decrement_strong_count(heap.as_ptr()) },
            Owner::Static => {}
        }
    }
}

impl Deref for PoolBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `[ptr, ptr + len)` is inside memory our owner keeps alive and nobody writes while
        // we hold the reference (frozen chunk bytes, an immutable Vec, or static bytes).
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for PoolBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Default for PoolBytes {
    fn default() -> PoolBytes {
        PoolBytes::new()
    }
}

impl From<Vec<u8>> for PoolBytes {
    fn from(bytes: Vec<u8>) -> PoolBytes {
        PoolBytes::from_vec(bytes)
    }
}

impl From<&'static [u8]> for PoolBytes {
    fn from(bytes: &'static [u8]) -> PoolBytes {
        PoolBytes::from_static(bytes)
    }
}

impl PartialEq for PoolBytes {
    fn eq(&self, other: &PoolBytes) -> bool {
        self[..] == other[..]
    }
}

impl Eq for PoolBytes {}

impl PartialEq<[u8]> for PoolBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self[..] == *other
    }
}

impl PartialEq<&[u8]> for PoolBytes {
    fn eq(&self, other: &&[u8]) -> bool {
        self[..] == **other
    }
}

impl PartialEq<PoolBytes> for [u8] {
    fn eq(&self, other: &PoolBytes) -> bool {
        *self == other[..]
    }
}

/// How many bytes `Debug` shows.
const DEBUG_PREVIEW: usize = 16;

impl fmt::Debug for PoolBytes {
    /// Length, backing, and the first 16 bytes in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Hex<'a>(&'a [u8], bool);
        impl fmt::Debug for Hex<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (i, byte) in self.0.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                if self.1 {
                    f.write_str(" ..")?;
                }
                Ok(())
            }
        }
        let shown = self.len.min(DEBUG_PREVIEW);
        let backing = match self.owner {
            Owner::Chunk { .. } => "pool",
            Owner::Heap(_) => "heap",
            Owner::Static => "static",
        };
        f.debug_struct("PoolBytes")
            .field("len", &self.len)
            .field("backing", &format_args!("{backing}"))
            .field("bytes", &Hex(&self[..shown], shown < self.len))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Pool, PoolConfig};

    fn frozen(pool: &Pool, bytes: &[u8]) -> PoolBytes {
        let mut chunk = pool.try_alloc().unwrap();
        chunk.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        chunk.advance(bytes.len());
        chunk.freeze()
    }

    #[test]
    fn small_handles() {
        assert_eq!(size_of::<PoolBytes>(), 4 * size_of::<usize>());
        assert_eq!(size_of::<Option<PoolBytes>>(), 4 * size_of::<usize>());
    }

    #[test]
    fn slice_shares_the_chunk() {
        let pool = Pool::new(PoolConfig { chunk_size: 64, chunk_count: 1 }).unwrap();
        let bytes = frozen(&pool, b"0123456789");
        assert!(bytes.is_pooled());
        assert_eq!(bytes.slice(..), b"0123456789"[..]);
        assert_eq!(bytes.slice(2..5), b"234"[..]);
        assert_eq!(bytes.slice(2..=5), b"2345"[..]);
        assert_eq!(bytes.slice(8..), b"89"[..]);
        assert_eq!(bytes.slice(..3), b"012"[..]);
        assert!(bytes.slice(10..).is_empty());
        let inner = bytes.slice(1..9).slice(1..3);
        assert_eq!(inner, b"23"[..]);
        assert_eq!(inner.as_ptr(), bytes[2..].as_ptr());
        assert!(inner.is_pooled());
        drop(bytes);
        assert_eq!(pool.free_chunks(), 0, "the slice holds the chunk");
        drop(inner);
        assert_eq!(pool.free_chunks(), 1);
    }

    #[test]
    #[should_panic(expected = "slice end 11 is out of range for length 10")]
    fn slice_past_end_panics() {
        let _ = PoolBytes::from_vec(vec![0; 10]).slice(5..11);
    }

    #[test]
    #[should_panic(expected = "slice start 6 is after its end 5")]
    fn inverted_slice_panics() {
        #[allow(clippy::reversed_empty_ranges)]
        let _ = PoolBytes::from_vec(vec![0; 10]).slice(6..5);
    }

    #[test]
    fn heap_fallback_behaves_the_same() {
        let bytes = PoolBytes::from_vec(b"fallback".to_vec());
        assert!(!bytes.is_pooled());
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(clone, b"fallback"[..]);
        assert_eq!(clone.slice(4..), b"back"[..]);
        let empty = PoolBytes::from_vec(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty.clone(), PoolBytes::new());
    }

    #[test]
    fn static_and_default() {
        let bytes = PoolBytes::from_static(b"const");
        assert_eq!(bytes.clone().slice(1..), b"onst"[..]);
        assert!(!bytes.is_pooled());
        assert!(PoolBytes::default().is_empty());
        assert_eq!(PoolBytes::from(&b"x"[..]), PoolBytes::from(vec![b'x']));
    }

    #[test]
    fn debug_shows_len_backing_and_short_hex() {
        let bytes = PoolBytes::from_vec(vec![0x00, 0x1f, 0xab]);
        assert_eq!(format!("{bytes:?}"), "PoolBytes { len: 3, backing: heap, bytes: 00 1f ab }");
        let long = PoolBytes::from_vec((0..40).collect());
        assert_eq!(
            format!("{long:?}"),
            "PoolBytes { len: 40, backing: heap, bytes: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f .. }"
        );
        let pool = Pool::new(PoolConfig { chunk_size: 64, chunk_count: 1 }).unwrap();
        assert_eq!(format!("{:?}", frozen(&pool, b"\x01")), "PoolBytes { len: 1, backing: pool, bytes: 01 }");
    }

    #[test]
    fn outlives_every_pool_handle() {
        let pool = Pool::new(PoolConfig { chunk_size: 64, chunk_count: 4 }).unwrap();
        let mut chunk = pool.try_alloc().unwrap();
        let bytes = frozen(&pool, b"still here");
        let clone = pool.clone();
        drop(pool);
        drop(clone);
        chunk.spare_mut()[..4].copy_from_slice(b"more");
        chunk.advance(4);
        let more = chunk.freeze();
        drop(chunk);
        assert_eq!(bytes, b"still here"[..]);
        let copy = bytes.clone();
        drop(bytes);
        assert_eq!(copy, b"still here"[..]);
        assert_eq!(more, b"more"[..]);
    }

    #[test]
    fn equality() {
        let a = PoolBytes::from_vec(b"abc".to_vec());
        assert_eq!(a, PoolBytes::from_static(b"abc"));
        assert_eq!(a, &b"abc"[..]);
        assert!(b"abc"[..] == a);
        assert_ne!(a, b"abd"[..]);
    }

    #[test]
    fn bytes_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PoolBytes>();
    }
}
