//! A flush interval batches a client's frames of several loop turns into one write: fewer writes, later,
//! never lost or reordered.

mod util;

use std::time::Duration;

use gamewire_net::ServerConfig;
use gamewire_proto::Move;
use util::{TestServer, base_rules, each_backend};

/// 20 MOVEs sent 5 ms apart (each in its own loop turn) reach a viewer in order; returns the server's
/// count of writes once it has stopped.
fn relay_spaced_moves(mut config: ServerConfig, flush_interval: Duration) -> u64 {
    config.flush_interval = flush_interval;
    let rules = gamewire_world::Config { max_speed: 1000.0, ..base_rules() };
    let mut server = TestServer::start_with(config, rules);
    let mut mover = server.join("mover");
    let mut viewer = server.join("viewer");
    mover.sync();
    viewer.sync();
    for step in 1..=20u32 {
        mover.send_move(Move::new(500.0, 0.0, 500.0 + step as f32 * 0.1, 1.0, step));
        std::thread::sleep(Duration::from_millis(5));
    }
    let received: Vec<u32> = (0..20).map(|_| viewer.recv().as_move().client_time.get()).collect();
    assert_eq!(received, (1..=20).collect::<Vec<_>>(), "every MOVE, in order");
    drop((mover, viewer));
    server.shutdown_handle().shutdown();
    let stats = server.wait_stopped(Duration::from_secs(10)).expect("the server stops cleanly");
    assert_eq!(stats.frames_in, 2 + 2 + 20, "two HELLOs, two PINGs of sync, 20 MOVEs");
    stats.writes
}

#[test]
fn a_flush_interval_batches_frames_into_fewer_writes_without_loss_or_reordering() {
    each_backend(|config| {
        let unbatched = relay_spaced_moves(config.clone(), Duration::ZERO);
        // 100 ms of MOVEs fit in two 400 ms windows of the viewer's queue.
        let batched = relay_spaced_moves(config, Duration::from_millis(400));
        eprintln!("writes: {unbatched} flushing every turn, {batched} with a 400 ms interval");
        assert!(
            batched + 10 <= unbatched,
            "a flush interval must cut the writes: {batched} batched vs {unbatched} unbatched"
        );
    });
}
