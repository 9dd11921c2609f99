//! A packet id the arena does not accept is refused by the core before game code runs:
//! ERROR(UNKNOWN_PACKET), then the connection closes, on every backend and worker count.

mod util;

use gamewire_arena::protocol::{self, ServerPacket};
use gamewire_net::IoBackend;
use gamewire_proto::{ErrorCode, Move, Packet, encode_frame_to_vec};
use util::{Client, Running, config_with_spawns};

#[test]
fn protocol_v1_move_is_unknown_packet_on_every_backend_and_worker_count() {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        for workers in [1, 2] {
            eprintln!("--- backend {io:?}, {workers} worker(s)");
            let Some(server) = Running::start(config_with_spawns(&[(100.0, 100.0)]), io, workers) else {
                continue;
            };
            // Protocol v1's MOVE (id 3) is a valid frame of another game, not of this one.
            let v1_move = encode_frame_to_vec(0, &Packet::Move(&Move::new(1.0, 0.0, 1.0, 0.0, 1)));

            let mut joined = server.join("a");
            joined.send_bytes(&v1_move);
            expect_unknown_packet(joined.until_closed());

            // Before HELLO too: the decoder refuses the id from the header alone.
            let mut fresh = Client::connect(server.addr);
            fresh.send_bytes(&v1_move);
            expect_unknown_packet(fresh.until_closed());
        }
    }
}

fn expect_unknown_packet(frames: Vec<util::Frame>) {
    let last = frames.last().expect("an ERROR before the close");
    assert_eq!(last.packet_id, protocol::ERROR, "frames {frames:?}");
    let ServerPacket::Error { code, .. } = last.packet() else { unreachable!() };
    assert_eq!(code, ErrorCode::UnknownPacket.code(), "frames {frames:?}");
    assert_eq!(code, 3);
}
