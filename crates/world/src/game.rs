//! The [`Game`] trait the I/O layer drives, sans-IO, and the [`Outbox`] it writes frames into.
//! Protocol v1's [`crate::World`] is one game; any other is built the same way.

use std::fmt;
use std::time::{Duration, Instant};

use gamewire_proto::{Encode, ErrorCode, PacketSet, RawFrame};

use crate::PlayerId;

/// Who a frame goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipients<'a> {
    /// The connection whose packet or timeout is being handled: the only way to reach a session before
    /// it has a player.
    Sender,
    /// One player.
    One(PlayerId),
    /// Several players, each once.
    Many(&'a [PlayerId]),
}

/// Where a game puts the frames it produces, and the sessions it ends.
///
/// The I/O layer implements it by encoding each frame once into pooled memory and queueing a shared
/// reference to it for every recipient (no copy per recipient); tests implement it by recording. A
/// game calls `send` in the order the frames must be delivered to each recipient.
pub trait Outbox {
    /// Queues one frame, header `player_id` and payload `packet`, for `to`. A packet whose
    /// [`Encode::is_fatal`] is true is the last frame its recipient gets.
    fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P);

    /// Ends `player`'s session from wherever the game holds an outbox: [`Game::tick`],
    /// [`Game::command`], or a call about another connection (a kick, a match that is over). A call
    /// about the player's own connection may use it too, or end the session itself and return
    /// [`Verdict::Close`] (no `close` follows that).
    ///
    /// - The frames sent to `player` before this call (a KICKED, a fatal ERROR) still reach it, in
    ///   order; from this call on, nothing more does (it is no longer routed, and
    ///   [`Recipients::Sender`] reaches nothing if it is the sender).
    /// - Once the call into the game that asked returns, and before any other, the I/O layer calls
    ///   [`Game::close`] on the session, once: the game removes the player there, and tells the others,
    ///   as when a peer leaves. Then the connection is flushed and closed as after a
    ///   [`Verdict::Close`].
    /// - The session gets no other call: frames of its that the game has not handled yet are dropped.
    /// - A player the I/O layer does not route to is a no-op: an unknown id, one already ended, or one
    ///   made in the current call (routing starts once the call returns and [`Game::player`] names
    ///   it; the connection being handled is reached through [`Verdict::Close`] then).
    ///
    /// # Examples
    ///
    /// A kick from [`Game::command`]: the last frame, then the end (`Game::close` then takes the
    /// player out of the game, as for any session that ends).
    ///
    /// ```
    /// use gamewire_proto::Encode;
    /// use gamewire_world::{Outbox, PlayerId, Recipients};
    ///
    /// /// KICKED, a game's own packet: the last frame a kicked player gets.
    /// struct Kicked;
    ///
    /// impl Encode for Kicked {
    ///     fn packet_id(&self) -> u32 {
    ///         27
    ///     }
    ///     fn payload_len(&self) -> usize {
    ///         0
    ///     }
    ///     fn write_payload(&self, _out: &mut [u8]) {}
    ///     fn is_fatal(&self) -> bool {
    ///         true
    ///     }
    /// }
    ///
    /// fn kick(player: PlayerId, out: &mut impl Outbox) {
    ///     out.send(Recipients::One(player), player.get(), &Kicked);
    ///     out.end(player);
    /// }
    ///
    /// /// A test's outbox: records what the game asked for.
    /// #[derive(Default)]
    /// struct Recorder(Vec<String>);
    ///
    /// impl Outbox for Recorder {
    ///     fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, _: u32, packet: &P) {
    ///         self.0.push(format!("{} to {to:?}", packet.packet_id()));
    ///     }
    ///     fn end(&mut self, player: PlayerId) {
    ///         self.0.push(format!("end {player}"));
    ///     }
    /// }
    ///
    /// let player = PlayerId::from_wire(7).unwrap();
    /// let mut out = Recorder::default();
    /// kick(player, &mut out);
    /// assert_eq!(out.0, [format!("27 to One({player:?})"), "end 7".to_string()]);
    /// ```
    fn end(&mut self, player: PlayerId);
}

/// What the I/O layer must do with the connection after a call into the game.
#[must_use = "a Close verdict means the connection must be flushed and closed"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep serving it.
    Continue,
    /// The session is over (a fatal ERROR, if any, is already queued): flush what is queued, then close.
    Close,
}

/// A game the I/O layer (`gamewire_net::Server`) drives: sessions, frames, deadlines, a fixed-rate
/// tick and commands from the embedding program. Sans-IO: the caller passes the time and an
/// [`Outbox`] into every call; the game never sees a socket or a clock, so tests drive it with a fake
/// clock.
///
/// Calls for one connection come in this order: [`Game::open`] when it is accepted;
/// [`Game::handle`] for each complete frame whose packet id is in [`Game::client_packets`] (the
/// decoder refuses any other before game code runs: UNKNOWN_PACKET); [`Game::poll_timeout`] once
/// [`Game::deadline`] has passed; [`Game::fail`] for a violation the I/O layer finds itself (a bad
/// header, a frame left unfinished, a slow consumer, shutdown); [`Game::close`] when the connection
/// ends for any other reason, or after the game ended it with [`Outbox::end`]. After a
/// [`Verdict::Close`] (and after `close`) the session gets no more calls. Between those,
/// [`Game::tick`] runs every [`Game::tick_interval`], and [`Game::command`] whenever the embedding
/// program sends one.
///
/// The game owns its packet ids, except the core's reserved ones
/// ([`gamewire_proto::RESERVED_PACKETS`]); the core's session frames keep protocol v1's formats (a
/// fatal ERROR is the last frame a connection gets).
pub trait Game: Send + fmt::Debug + 'static {
    /// What the game keeps per connection; the I/O layer owns it and passes it into every call.
    type Session: Send + fmt::Debug + 'static;

    /// What the embedding program sends into the game from any thread: an admin broadcast, a kick, a
    /// spawn.
    type Command: Send + 'static;

    /// The packet ids a client may send. Asked once, when the server starts.
    fn client_packets(&self) -> PacketSet;

    /// A new connection, accepted at `now`.
    fn open(&mut self, now: Instant) -> Self::Session;

    /// One complete frame of `session`'s, received at `now`. It completed at the socket at
    /// `completed_at` (`<= now`): earlier when the I/O layer left its bytes unread for a while, which
    /// is not the client's fault, so deadlines are judged then.
    fn handle(
        &mut self,
        now: Instant,
        completed_at: Instant,
        session: &mut Self::Session,
        frame: RawFrame<'_>,
        out: &mut impl Outbox,
    ) -> Verdict;

    /// When `session` times out if nothing arrives (`None`: never). Asked after every call that may
    /// change it; call [`Game::poll_timeout`] once it has passed.
    fn deadline(&self, session: &Self::Session) -> Option<Instant>;

    /// `session`'s deadline has passed (calling earlier is harmless): ends it, typically with
    /// ERROR(TIMEOUT).
    fn poll_timeout(&mut self, now: Instant, session: &mut Self::Session, out: &mut impl Outbox) -> Verdict;

    /// Ends `session` with the fatal ERROR `code` (sent to its connection first). Always
    /// [`Verdict::Close`].
    fn fail(&mut self, session: &mut Self::Session, code: ErrorCode, out: &mut impl Outbox) -> Verdict;

    /// Ends `session` without an ERROR: the peer closed, its connection failed, or the game asked
    /// with [`Outbox::end`]. Idempotent.
    fn close(&mut self, session: &mut Self::Session, out: &mut impl Outbox);

    /// The player `session` plays, once it has joined: frames for that player are routed to its
    /// connection, and its header `player_id` checks use it.
    fn player(&self, session: &Self::Session) -> Option<PlayerId>;

    /// Players in the game now.
    fn player_count(&self) -> usize;

    /// How often [`Game::tick`] runs (`None`, the default: never).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Server-side simulation, every [`Game::tick_interval`]: NPCs, projectiles, anything that
    /// moves without a client's frame.
    fn tick(&mut self, now: Instant, out: &mut impl Outbox) {
        let _ = (now, out);
    }

    /// A command from the embedding program.
    fn command(&mut self, now: Instant, command: Self::Command, out: &mut impl Outbox) {
        let _ = (now, command, out);
    }
}
