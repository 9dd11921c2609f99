//! Random alloc / write / freeze / clone / slice / clear / drop sequences checked against a model.

use gamewire_pool::{ChunkMut, Pool, PoolBytes, PoolConfig};
use proptest::prelude::*;

const CHUNK_SIZE: usize = 64;
const CHUNK_COUNT: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    /// Write `len` bytes of `fill` into a live chunk (clamped to its spare room).
    Write {
        chunk: usize,
        len: usize,
        fill: u8,
    },
    Freeze {
        chunk: usize,
    },
    Clear {
        chunk: usize,
    },
    DropChunk {
        chunk: usize,
    },
    CloneBytes {
        bytes: usize,
    },
    Slice {
        bytes: usize,
        from: usize,
        to: usize,
    },
    DropBytes {
        bytes: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Alloc),
        4 => (any::<usize>(), 0..40usize, any::<u8>())
            .prop_map(|(chunk, len, fill)| Op::Write { chunk, len, fill }),
        3 => any::<usize>().prop_map(|chunk| Op::Freeze { chunk }),
        1 => any::<usize>().prop_map(|chunk| Op::Clear { chunk }),
        2 => any::<usize>().prop_map(|chunk| Op::DropChunk { chunk }),
        2 => any::<usize>().prop_map(|bytes| Op::CloneBytes { bytes }),
        2 => (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(bytes, from, to)| Op::Slice { bytes, from, to }),
        3 => any::<usize>().prop_map(|bytes| Op::DropBytes { bytes }),
    ]
}

/// Model identity of an allocation (not the pool's chunk index: a chunk reused later is a new one).
type Allocation = usize;

struct LiveChunk {
    chunk: ChunkMut,
    allocation: Allocation,
    /// What `filled()` must return.
    filled: Vec<u8>,
    /// Bytes frozen or cleared but possibly still referenced, i.e. the offset of `filled`.
    consumed: usize,
}

struct LiveBytes {
    bytes: PoolBytes,
    allocation: Allocation,
    expected: Vec<u8>,
}

#[derive(Default)]
struct Model {
    chunks: Vec<LiveChunk>,
    bytes: Vec<LiveBytes>,
    next_allocation: Allocation,
}

impl Model {
    /// Allocations with at least one live reference: each holds exactly one pool chunk.
    fn live_allocations(&self) -> usize {
        let mut live: Vec<Allocation> =
            self.chunks.iter().map(|c| c.allocation).chain(self.bytes.iter().map(|b| b.allocation)).collect();
        live.sort_unstable();
        live.dedup();
        live.len()
    }

    fn references_to(&self, allocation: Allocation) -> usize {
        self.chunks.iter().filter(|c| c.allocation == allocation).count()
            + self.bytes.iter().filter(|b| b.allocation == allocation).count()
    }
}

fn apply(pool: &Pool, model: &mut Model, op: Op) {
    match op {
        Op::Alloc => {
            let expect_some = model.live_allocations() < CHUNK_COUNT;
            match pool.try_alloc() {
                Some(chunk) => {
                    assert!(expect_some, "allocated from a full pool");
                    assert_eq!(chunk.remaining(), CHUNK_SIZE);
                    model.chunks.push(LiveChunk {
                        chunk,
                        allocation: model.next_allocation,
                        filled: Vec::new(),
                        consumed: 0,
                    });
                    model.next_allocation += 1;
                }
                None => assert!(!expect_some, "exhausted with free chunks"),
            }
        }
        Op::Write { chunk, len, fill } if !model.chunks.is_empty() => {
            let index = chunk % model.chunks.len();
            let live = &mut model.chunks[index];
            assert_eq!(live.chunk.remaining(), CHUNK_SIZE - live.consumed - live.filled.len());
            let len = len.min(live.chunk.remaining());
            let data: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
            live.chunk.spare_mut()[..len].copy_from_slice(&data);
            live.chunk.advance(len);
            live.filled.extend_from_slice(&data);
        }
        Op::Freeze { chunk } if !model.chunks.is_empty() => {
            let index = chunk % model.chunks.len();
            let live = &mut model.chunks[index];
            let bytes = live.chunk.freeze();
            assert!(bytes.is_pooled());
            live.consumed += live.filled.len();
            let expected = std::mem::take(&mut live.filled);
            let allocation = live.allocation;
            model.bytes.push(LiveBytes { bytes, allocation, expected });
        }
        Op::Clear { chunk } if !model.chunks.is_empty() => {
            let index = chunk % model.chunks.len();
            let allocation = model.chunks[index].allocation;
            let unique = model.references_to(allocation) == 1;
            let live = &mut model.chunks[index];
            live.chunk.clear();
            live.filled.clear();
            if unique {
                live.consumed = 0;
            }
        }
        Op::DropChunk { chunk } if !model.chunks.is_empty() => {
            let index = chunk % model.chunks.len();
            model.chunks.swap_remove(index);
        }
        Op::CloneBytes { bytes } if !model.bytes.is_empty() => {
            let live = &model.bytes[bytes % model.bytes.len()];
            let clone = LiveBytes {
                bytes: live.bytes.clone(),
                allocation: live.allocation,
                expected: live.expected.clone(),
            };
            model.bytes.push(clone);
        }
        Op::Slice { bytes, from, to } if !model.bytes.is_empty() => {
            let live = &model.bytes[bytes % model.bytes.len()];
            let len = live.expected.len();
            let (mut from, mut to) = (from % (len + 1), to % (len + 1));
            if from > to {
                std::mem::swap(&mut from, &mut to);
            }
            let sliced = LiveBytes {
                bytes: live.bytes.slice(from..to),
                allocation: live.allocation,
                expected: live.expected[from..to].to_vec(),
            };
            model.bytes.push(sliced);
        }
        Op::DropBytes { bytes } if !model.bytes.is_empty() => {
            let index = bytes % model.bytes.len();
            model.bytes.swap_remove(index);
        }
        _ => {}
    }
}

fn check(pool: &Pool, model: &Model) {
    assert_eq!(pool.free_chunks(), CHUNK_COUNT - model.live_allocations());
    for live in &model.bytes {
        assert_eq!(live.bytes[..], live.expected[..]);
    }
    for live in &model.chunks {
        assert_eq!(live.chunk.filled(), &live.filled[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pool_matches_model(ops in prop::collection::vec(op(), 1..200)) {
        let pool = Pool::new(PoolConfig { chunk_size: CHUNK_SIZE, chunk_count: CHUNK_COUNT }).unwrap();
        let mut model = Model::default();
        for op in ops {
            apply(&pool, &mut model, op);
            check(&pool, &model);
        }
        drop(model);
        prop_assert_eq!(pool.free_chunks(), CHUNK_COUNT);
    }
}
