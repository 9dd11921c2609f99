//! Atomics used by the lock-free parts, swapped for loom's model-checked ones in `cfg(loom)` tests.

// loom is a dev-dependency, so only test builds can use it (as in tokio-rs/bytes' `src/loom.rs`).
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
