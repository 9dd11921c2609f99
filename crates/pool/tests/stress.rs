//! Multi-threaded stress: chunks allocated on one thread, frames read and freed on others.

use std::sync::mpsc;
use std::thread;

use gamewire_pool::{Pool, PoolBytes, PoolConfig};

const THREADS: usize = 4;
const ITERATIONS: u32 = 20_000;
const FRAMES_PER_CHUNK: u32 = 4;

/// The byte at `offset` of frame `frame` of iteration `iteration` on thread `thread`.
fn pattern(thread: usize, iteration: u32, frame: u32, offset: usize) -> u8 {
    (thread as u32 * 31 + iteration * 7 + frame * 13 + offset as u32) as u8
}

fn frame_len(iteration: u32, frame: u32) -> usize {
    8 + ((iteration + frame) % 24) as usize
}

struct Message {
    thread: usize,
    iteration: u32,
    frame: u32,
    bytes: PoolBytes,
}

fn verify(message: &Message) {
    let expected_len = frame_len(message.iteration, message.frame);
    assert_eq!(message.bytes.len(), expected_len);
    assert!(message.bytes.is_pooled());
    for (offset, &byte) in message.bytes.iter().enumerate() {
        assert_eq!(
            byte,
            pattern(message.thread, message.iteration, message.frame, offset),
            "thread {} iteration {} frame {} offset {offset}",
            message.thread,
            message.iteration,
            message.frame
        );
    }
}

#[test]
fn frames_cross_threads_and_every_chunk_comes_back() {
    // Few chunks, so threads keep hitting exhaustion and reusing each other's chunks.
    let pool = Pool::new(PoolConfig { chunk_size: 128, chunk_count: 8 }).unwrap();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Message>()).unzip();
    let mut receivers: Vec<Option<mpsc::Receiver<Message>>> = receivers.into_iter().map(Some).collect();

    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let pool = pool.clone();
            // Each thread sends to the next two, and receives from its own inbox.
            let to: Vec<_> = (1..=2).map(|k| senders[(thread + k) % THREADS].clone()).collect();
            let inbox = receivers[thread].take().unwrap();
            thread::spawn(move || {
                let mut received = 0u64;
                let mut exhausted = 0u64;
                for iteration in 0..ITERATIONS {
                    let mut chunk = loop {
                        match pool.try_alloc() {
                            Some(chunk) => break chunk,
                            None => {
                                // Backpressure: consume (and free) what others sent us, then retry.
                                exhausted += 1;
                                for message in inbox.try_iter() {
                                    verify(&message);
                                    received += 1;
                                }
                                thread::yield_now();
                            }
                        }
                    };
                    for frame in 0..FRAMES_PER_CHUNK {
                        let len = frame_len(iteration, frame);
                        for (offset, byte) in chunk.spare_mut()[..len].iter_mut().enumerate() {
                            *byte = pattern(thread, iteration, frame, offset);
                        }
                        chunk.advance(len);
                        let bytes = chunk.freeze();
                        // The chunk keeps being written while these frames are read elsewhere.
                        for sender in &to {
                            let message = Message { thread, iteration, frame, bytes: bytes.clone() };
                            sender.send(message).unwrap();
                        }
                    }
                    drop(chunk);
                    for message in inbox.try_iter() {
                        verify(&message);
                        received += 1;
                    }
                }
                // Keep freeing what others send until they are all done: a finished thread that
                // stopped draining would strand chunks in its inbox and starve the rest.
                drop(to);
                for message in inbox.iter() {
                    verify(&message);
                    received += 1;
                }
                (received, exhausted)
            })
        })
        .collect();
    drop(senders);

    let mut total = 0;
    let mut exhausted = 0;
    for handle in handles {
        let (received, times_exhausted) = handle.join().unwrap();
        total += received;
        exhausted += times_exhausted;
    }
    println!("pool exhausted {exhausted} times");
    let expected = THREADS as u64 * u64::from(ITERATIONS) * u64::from(FRAMES_PER_CHUNK) * 2;
    assert_eq!(total, expected);
    assert_eq!(pool.free_chunks(), pool.chunk_count());
}

#[test]
fn concurrent_alloc_free_never_hands_out_a_chunk_twice() {
    let pool = Pool::new(PoolConfig { chunk_size: 64, chunk_count: 4 }).unwrap();
    thread::scope(|scope| {
        for thread in 0..THREADS {
            let pool = &pool;
            scope.spawn(move || {
                for iteration in 0..20_000u32 {
                    let Some(mut chunk) = pool.try_alloc() else {
                        continue;
                    };
                    // Exclusive: nobody else may write this chunk between our write and our read.
                    let tag = (thread as u32 ^ iteration).to_le_bytes();
                    chunk.spare_mut()[..4].copy_from_slice(&tag);
                    chunk.advance(4);
                    std::hint::spin_loop();
                    assert_eq!(chunk.filled(), tag);
                }
            });
        }
    });
    assert_eq!(pool.free_chunks(), 4);
}
