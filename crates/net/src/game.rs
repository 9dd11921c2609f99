//! What the core adds around any [`Game`]: the checks it makes before a frame reaches the game, and
//! the way in for the embedding program (commands, the tick, live counts) through a [`ServerHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, RawFrame};
use gamewire_world::{Game, Outbox, Verdict};

use crate::control::ShutdownState;

/// Commands from the embedding program a loop takes per turn before serving its sockets again.
const COMMANDS_PER_TURN: usize = 256;

/// Hands one complete frame to `game`, after the checks the core makes for every game: a frame that
/// completed at or after the session's deadline ends it ([`Game::poll_timeout`]: the deadline is not
/// met by a late frame), and a header `player_id` other than 0 and the session's own player is
/// SPOOFED_ID. (The decoder refused unknown ids and, where it knew the player, spoofed ids from the
/// header alone already.)
pub(crate) fn handle_frame<G: Game>(
    game: &mut G,
    now: Instant,
    completed_at: Instant,
    session: &mut G::Session,
    frame: RawFrame<'_>,
    out: &mut impl Outbox,
) -> Verdict {
    if game.deadline(session).is_some_and(|deadline| completed_at.min(now) >= deadline) {
        return game.poll_timeout(now.max(completed_at), session, out);
    }
    let claimed = frame.player_id();
    if claimed != 0 && Some(claimed) != game.player(session).map(|id| id.get()) {
        return game.fail(session, ErrorCode::SpoofedId, out);
    }
    game.handle(now, completed_at, session, frame, out)
}

/// Counts the server publishes while it runs, read through a [`ServerHandle`].
#[derive(Debug, Default)]
pub(crate) struct LiveCounts {
    pub(crate) players: AtomicUsize,
}

/// The game's side of the way in: the commands waiting, the tick's schedule, the counts to publish.
/// Owned by the thread that runs the game (the one worker, or the world thread).
pub(crate) struct GameInbox<G: Game> {
    commands: Receiver<G::Command>,
    next_tick: Option<Instant>,
    counts: Arc<LiveCounts>,
}

impl<G: Game> std::fmt::Debug for GameInbox<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameInbox").field("next_tick", &self.next_tick).finish_non_exhaustive()
    }
}

impl<G: Game> GameInbox<G> {
    /// Starts the tick clock at `now` (call once, on the game's thread, before serving).
    pub(crate) fn start(&mut self, game: &G, now: Instant) {
        self.next_tick = game.tick_interval().map(|interval| now + interval);
        self.publish(game);
    }

    /// When the next tick is due, if the game ticks.
    pub(crate) fn next_tick(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Runs what is due at `now`: the commands that arrived (at most [`COMMANDS_PER_TURN`]), then the
    /// tick if its time has come; `after_each` right after each of these calls (the sessions it ended
    /// are closed there, before the next call). Returns whether anything ran.
    pub(crate) fn run<O: Outbox>(
        &mut self,
        game: &mut G,
        now: Instant,
        out: &mut O,
        mut after_each: impl FnMut(&mut G, &mut O),
    ) -> bool {
        let mut ran = false;
        for _ in 0..COMMANDS_PER_TURN {
            match self.commands.try_recv() {
                Ok(command) => {
                    game.command(now, command, out);
                    after_each(game, out);
                    ran = true;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Some(due) = self.next_tick
            && now >= due
        {
            game.tick(now, out);
            after_each(game, out);
            let interval = game.tick_interval().unwrap_or(Duration::MAX);
            // A fixed rate; after a stall longer than one interval, the missed ticks are not replayed.
            let next = due.checked_add(interval);
            self.next_tick = next.map(|next| if next <= now { now + interval } else { next });
            ran = true;
        }
        if ran {
            self.publish(game);
        }
        ran
    }

    /// Publishes the game's counts for the handles to read.
    pub(crate) fn publish(&self, game: &G) {
        self.counts.players.store(game.player_count(), Ordering::Relaxed);
    }
}

/// How a [`ServerHandle`] wakes the thread that runs the game.
#[derive(Debug, Clone)]
pub(crate) enum GameWaker {
    /// The world thread (several workers).
    Thread(Thread),
    /// The one worker's loop.
    Worker(Arc<ShutdownState>),
}

/// The embedding program's way into a running server, from any thread: send the game commands,
/// read live counts. Cheap to clone.
///
/// # Examples
///
/// ```no_run
/// use gamewire_net::{Server, ServerConfig};
///
/// let server = Server::bind(ServerConfig::default(), gamewire_world::Config::default())?;
/// let handle = server.handle();
/// std::thread::spawn(move || loop {
///     std::thread::sleep(std::time::Duration::from_secs(10));
///     println!("{} players", handle.player_count());
/// });
/// server.run()?;
/// # Ok::<(), gamewire_net::ServerError>(())
/// ```
pub struct ServerHandle<G: Game> {
    commands: Sender<G::Command>,
    waker: GameWaker,
    counts: Arc<LiveCounts>,
}

impl<G: Game> std::fmt::Debug for ServerHandle<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("players", &self.player_count()).finish_non_exhaustive()
    }
}

impl<G: Game> Clone for ServerHandle<G> {
    fn clone(&self) -> Self {
        ServerHandle {
            commands: self.commands.clone(),
            waker: self.waker.clone(),
            counts: Arc::clone(&self.counts),
        }
    }
}

impl<G: Game> ServerHandle<G> {
    /// Sends `command` to the game, which runs [`Game::command`] with it on its own thread, in the
    /// order commands were sent from this thread, within a loop turn.
    ///
    /// # Errors
    ///
    /// The command back, if the server has stopped.
    pub fn command(&self, command: G::Command) -> Result<(), G::Command> {
        self.commands.send(command).map_err(|mpsc::SendError(command)| command)?;
        match &self.waker {
            GameWaker::Thread(thread) => thread.unpark(),
            GameWaker::Worker(shutdown) => shutdown.wake_worker(0),
        }
        Ok(())
    }

    /// Players in the game, as of the last frame, tick or command it handled.
    pub fn player_count(&self) -> usize {
        self.counts.players.load(Ordering::Relaxed)
    }
}

/// A new way in: the game's end and the first handle (which needs the waker once it is known).
pub(crate) fn channel<G: Game>(waker: GameWaker) -> (GameInbox<G>, ServerHandle<G>) {
    let (sender, receiver) = mpsc::channel();
    let counts = Arc::new(LiveCounts::default());
    let inbox = GameInbox { commands: receiver, next_tick: None, counts: Arc::clone(&counts) };
    (inbox, ServerHandle { commands: sender, waker, counts })
}
