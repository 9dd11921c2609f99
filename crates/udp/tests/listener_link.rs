//! End to end: a listener and clients written from the spec, over a seeded lossy, duplicating and
//! reordering link; every reliable frame arrives once and in order, both ways.

mod listener_util;

use std::time::Duration;

use gamewire_udp::listener::ListenerConfig;
use listener_util::{LinkParams, Sim, Traffic};
use proptest::prelude::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Runs a simulation and checks everything that must hold at its end.
fn check(mut sim: Sim, traffic: Duration) -> Result<(), TestCaseError> {
    let delivered = sim.run(traffic, Duration::from_secs(20));
    prop_assert!(sim.closed.is_empty(), "sessions closed: {:?}", sim.closed);
    prop_assert!(delivered, "not everything arrived: {:?}", sim.listener);
    prop_assert_eq!(sim.listener.session_count(), sim.clients.len());
    for (i, client) in sim.clients.iter().enumerate() {
        prop_assert!(client.is_connected(), "client {} never connected", i);
        let side = &sim.sessions[&sim.session_of[&i]];
        prop_assert_eq!(side.client, i);
        // Unreliable frames: some may be lost or skipped, never more than were sent.
        prop_assert!(client.unreliable_received <= side.unreliable_sent);
        prop_assert!(side.unreliable_received <= client.unreliable_sent);
    }
    Ok(())
}

prop_compose! {
    fn link()(
        loss in 0.0..=0.2,
        duplicate in 0.0..=0.1,
        delay in 0u64..=60,
        jitter in 0u64..=40,
    ) -> LinkParams {
        LinkParams { loss, duplicate, delay: ms(delay), jitter: ms(jitter) }
    }
}

prop_compose! {
    fn traffic()(
        reliable_chance in 0.02..=0.5,
        unreliable_chance in 0.0..=0.5,
        max_padding in 0usize..=400,
    ) -> Traffic {
        Traffic { reliable_chance, unreliable_chance, max_padding }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Up to 20% loss, 10% duplication and reordering by jitter, on the handshake too: every client
    /// gets a session, every reliable frame both ways arrives once and in order (checked as each
    /// arrives), accepted unreliable frames never go backwards, no datagram exceeds 1200 bytes, and no
    /// session ends.
    #[test]
    fn every_reliable_frame_arrives_once_and_in_order_both_ways(
        seed: u64,
        clients in 1usize..=4,
        link in link(),
        traffic in traffic(),
    ) {
        let sim = Sim::new(seed, clients, link, traffic, ListenerConfig::default());
        check(sim, Duration::from_secs(3))?;
    }
}

/// Many clients at once, with a window small enough that frames wait in the send queue behind it.
#[test]
fn forty_clients_through_a_lossy_link_with_frames_waiting_behind_the_window() {
    let mut config = ListenerConfig::default();
    config.reliability_mut().max_unacked_messages(16);
    let link = LinkParams { loss: 0.1, duplicate: 0.02, delay: ms(20), jitter: ms(15) };
    let traffic = Traffic { reliable_chance: 0.6, unreliable_chance: 0.5, max_padding: 200 };
    let sim = Sim::new(7, 40, link, traffic, config);
    check(sim, Duration::from_secs(4)).unwrap();
}
