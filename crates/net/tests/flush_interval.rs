//! A flush interval batches frames of several loop turns into one write: later, never lost or reordered.

mod util;

use std::time::{Duration, Instant};

use gamewire_proto::Move;
use util::{TestServer, each_backend};

#[test]
fn a_flush_interval_delays_but_never_loses_or_reorders_frames() {
    each_backend(|mut config| {
        config.flush_interval = Duration::from_millis(40);
        config.world.max_speed = 1000.0;
        let server = TestServer::start(config);
        let mut mover = server.join("mover");
        let mut viewer = server.join("viewer");
        mover.sync();
        viewer.sync();
        let sent = Instant::now();
        for step in 1..=20u32 {
            mover.send_move(Move::new(500.0, 0.0, 500.0 + step as f32 * 0.1, 1.0, step));
        }
        let received: Vec<u32> = (0..20).map(|_| viewer.recv().as_move().client_time.get()).collect();
        assert_eq!(received, (1..=20).collect::<Vec<_>>(), "every MOVE, in order");
        // The first frame waited for the interval to come round (up to 40 ms), not for ever.
        assert!(sent.elapsed() < Duration::from_secs(2));
    });
}
