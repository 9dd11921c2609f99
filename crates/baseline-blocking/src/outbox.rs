//! The naive outbox: every frame encoded into a fresh `Vec` once per recipient.

use std::collections::HashMap;
use std::sync::Arc;

use gamewire_proto::{Encode, encode_frame_to_vec};
use gamewire_world::{Outbox, PlayerId, Recipients};

use crate::conn::Conn;

/// Collects the world's frames as `(recipient, bytes)` while the world lock is held.
///
/// This is the chapter's "before" broadcast on purpose: a frame for 200 viewers is allocated and
/// encoded 200 times. gamewire encodes it once into pooled memory and shares it.
#[derive(Debug)]
pub(crate) struct NaiveOutbox<'a> {
    players: &'a HashMap<PlayerId, Arc<Conn>>,
    sender: &'a Arc<Conn>,
    deliveries: Vec<(&'a Arc<Conn>, Vec<u8>)>,
}

impl<'a> NaiveOutbox<'a> {
    /// An outbox for a call made on behalf of `sender`'s connection, resolving ids through `players`.
    pub(crate) fn new(players: &'a HashMap<PlayerId, Arc<Conn>>, sender: &'a Arc<Conn>) -> Self {
        NaiveOutbox { players, sender, deliveries: Vec::new() }
    }

    /// Moves every collected frame into its recipient's queue (call with the world lock still held, so
    /// that queues are in world order), and appends each recipient to `recipients` for the flush that
    /// follows once the lock is released.
    pub(crate) fn enqueue(self, recipients: &mut Vec<Arc<Conn>>) {
        for (conn, frame) in self.deliveries {
            conn.enqueue(frame);
            // Consecutive frames often go to one connection (WELCOME and its ENTERs): flush it once.
            // Other duplicates are harmless: the second flush finds an empty queue.
            if !recipients.last().is_some_and(|last| Arc::ptr_eq(last, conn)) {
                recipients.push(Arc::clone(conn));
            }
        }
    }

    fn push<P: Encode + ?Sized>(&mut self, conn: &'a Arc<Conn>, player_id: u32, packet: &P) {
        // The naive part: a new allocation and a new encoding for every single recipient.
        self.deliveries.push((conn, encode_frame_to_vec(player_id, packet)));
    }
}

impl Outbox for NaiveOutbox<'_> {
    fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
        let players = self.players;
        match to {
            Recipients::Sender => self.push(self.sender, player_id, packet),
            Recipients::One(id) => {
                // Every player in the world is registered under the same lock that added it, so a
                // miss cannot happen; skipping is the safe answer if it ever did.
                if let Some(conn) = players.get(&id) {
                    self.push(conn, player_id, packet);
                }
            }
            Recipients::Many(ids) => {
                for id in ids {
                    if let Some(conn) = players.get(id) {
                        self.push(conn, player_id, packet);
                    }
                }
            }
        }
    }

    fn end(&mut self, player: PlayerId) {
        // This baseline serves protocol v1's `World` only, which ends a session through the verdict
        // of a call about it, never from outside (and another thread owns that session here):
        // failing loudly beats a session left open.
        unreachable!("the world ended player {player} from outside a call about its session");
    }
}
