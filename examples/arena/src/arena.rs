//! [`Arena`]: the arena's rules as a [`Game`]: sessions, STEER and FIRE, the tick that moves ships
//! and projectiles, hits and scores, and the operator's [`ArenaCommand`]s.

use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, PacketSet, RawFrame};
use gamewire_world::{AoiGrid, Game, Outbox, PlayerId, PlayerIds, Position, Recipients, Verdict};

use crate::config::{ArenaConfig, ConfigError};
use crate::protocol::{
    self, ClientPacket, Fire, HitReport, ProjectileState, Score, ServerPacket, ShipState, Shot, Steer,
    TEXT_MAX, Welcome,
};

/// Rate-limit errors go out at most this often per player: the client learns, the link is not flooded.
const RATE_ERROR_INTERVAL: Duration = Duration::from_secs(1);

/// What the program embedding the server sends into a running arena, through
/// `gamewire_net::ServerHandle::command`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArenaCommand {
    /// ANNOUNCE this text to every player (cut to [`TEXT_MAX`] bytes).
    Announce(String),
    /// End this player's session: it gets KICKED, those who see it GONE. Nothing if it already left.
    Kick(PlayerId),
}

/// What the arena keeps per connection; the I/O layer owns it.
#[derive(Debug)]
pub struct ArenaSession {
    state: SessionState,
    opened_at: Instant,
    last_packet_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionState {
    AwaitingHello,
    Playing(PlayerId),
    Closed,
}

impl ArenaSession {
    /// The player this session plays, once it has joined.
    pub fn player(&self) -> Option<PlayerId> {
        match self.state {
            SessionState::Playing(id) => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ship {
    id: PlayerId,
    position: Position,
    heading: f32,
    throttle: f32,
    hp: u32,
    score: Score,
    /// A FIRE before this is dropped.
    next_fire_at: Instant,
    rate_error_at: Option<Instant>,
}

impl Ship {
    fn state(&self) -> ShipState {
        ShipState { x: self.position.x, z: self.position.z, heading: self.heading, hp: self.hp }
    }
}

#[derive(Debug, Clone, Copy)]
struct Projectile {
    id: u32,
    owner: PlayerId,
    x: f32,
    z: f32,
    /// Velocity per tick (not per second): the tick is fixed-step.
    step_x: f32,
    step_z: f32,
    ticks_left: u32,
}

/// Scratch lists kept with their capacity, so that steady-state frames and ticks allocate nothing.
#[derive(Debug, Default)]
struct Scratch {
    recipients: Vec<PlayerId>,
    candidates: Vec<PlayerId>,
}

/// The arena game: ships steered by their players, projectiles and ships moved by the server's own
/// tick, hits, scores and respawns, each frame sent only to the players who see where it happens.
///
/// Sans-IO like every [`Game`]: `gamewire_net::Server::with_game` drives it over sockets, a test can
/// drive it with a fake clock and a recording [`Outbox`].
///
/// # Examples
///
/// ```no_run
/// use gamewire_arena::{Arena, ArenaCommand, ArenaConfig};
/// use gamewire_net::{Server, ServerConfig};
///
/// let mut config = ServerConfig::default();
/// config.addr = "127.0.0.1:7780".parse().unwrap();
/// let server = Server::with_game(config, Arena::new(ArenaConfig::default())?)?;
/// let handle = server.handle();
/// std::thread::spawn(move || {
///     let _ = handle.command(ArenaCommand::Announce("welcome to the arena".into()));
/// });
/// server.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Arena {
    config: ArenaConfig,
    ids: PlayerIds,
    /// `ships[id.index()]`.
    ships: Vec<Option<Ship>>,
    grid: AoiGrid,
    /// In flight; capacity `max_projectiles`, reserved up front.
    projectiles: Vec<Projectile>,
    next_projectile: u32,
    /// Ticks run so far.
    ticks: u64,
    /// Seconds per tick.
    dt: f32,
    projectile_ticks: u32,
    spawn_cursor: usize,
    rng: u64,
    scratch: Scratch,
}

impl Arena {
    /// An empty arena with `config`'s rules.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if a setting is out of range.
    pub fn new(config: ArenaConfig) -> Result<Arena, ConfigError> {
        config.validate()?;
        let grid = AoiGrid::new(config.world_w, config.world_h, config.aoi_radius)?;
        let dt = 1.0 / config.tick_hz as f32;
        let projectile_ticks =
            (config.projectile_range / (config.projectile_speed * dt)).ceil().max(1.0) as u32;
        Ok(Arena {
            ids: PlayerIds::new(config.max_players),
            ships: Vec::new(),
            grid,
            projectiles: Vec::with_capacity(config.max_projectiles),
            next_projectile: 1,
            ticks: 0,
            dt,
            projectile_ticks,
            spawn_cursor: 0,
            rng: config.seed | 1,
            scratch: Scratch::default(),
            config,
        })
    }

    /// The rules in force.
    pub fn config(&self) -> &ArenaConfig {
        &self.config
    }

    /// Where `id`'s ship is, if it is in the arena.
    pub fn position(&self, id: PlayerId) -> Option<Position> {
        self.ship(id).map(|ship| ship.position)
    }

    /// `id`'s score, if it is in the arena.
    pub fn score(&self, id: PlayerId) -> Option<Score> {
        self.ship(id).map(|ship| ship.score)
    }

    /// Projectiles in flight.
    pub fn projectiles_in_flight(&self) -> usize {
        self.projectiles.len()
    }

    fn ship(&self, id: PlayerId) -> Option<&Ship> {
        self.ships.get(id.index())?.as_ref().filter(|ship| ship.id == id)
    }

    fn ship_mut(&mut self, id: PlayerId) -> Option<&mut Ship> {
        self.ships.get_mut(id.index())?.as_mut().filter(|ship| ship.id == id)
    }

    fn spawn_point(&mut self) -> Position {
        if let Some(&(x, z)) = self.config.spawns.get(self.spawn_cursor % self.config.spawns.len().max(1)) {
            self.spawn_cursor = self.spawn_cursor.wrapping_add(1);
            return Position::new(x, 0.0, z);
        }
        // xorshift64: spawn points need no more than spread, and this keeps runs reproducible.
        let mut next = || {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng >> 40) as f32 / (1u64 << 24) as f32
        };
        let (fx, fz) = (next(), next());
        let x = (fx * self.config.world_w).min(self.config.world_w.next_down());
        let z = (fz * self.config.world_h).min(self.config.world_h.next_down());
        Position::new(x, 0.0, z)
    }

    /// HELLO from a session awaiting it: a ship, WELCOME to the sender, the ships it sees to it, and
    /// its ship to those who see it.
    fn join(
        &mut self,
        now: Instant,
        session: &mut ArenaSession,
        name: &str,
        out: &mut impl Outbox,
    ) -> Verdict {
        let Some(id) = self.ids.allocate() else {
            return self.fail(session, ErrorCode::ServerFull, out);
        };
        let position = self.spawn_point();
        let ship = Ship {
            id,
            position,
            heading: 0.0,
            throttle: 0.0,
            hp: self.config.max_hp,
            score: Score { kills: 0, deaths: 0 },
            next_fire_at: now,
            rate_error_at: None,
        };
        if self.ships.len() <= id.index() {
            self.ships.resize(id.index() + 1, None);
        }
        self.ships[id.index()] = Some(ship);
        self.grid.insert(id, position);
        session.state = SessionState::Playing(id);
        tracing::debug!(player = %id, name, x = position.x, z = position.z, "joined");

        let welcome = Welcome {
            x: position.x,
            z: position.z,
            world_w: self.config.world_w,
            world_h: self.config.world_h,
            aoi_radius: self.config.aoi_radius,
            tick_hz: self.config.tick_hz,
            max_hp: self.config.max_hp,
        };
        out.send(Recipients::Sender, id.get(), &ServerPacket::Welcome(welcome));
        let mut viewers = std::mem::take(&mut self.scratch.recipients);
        viewers.clear();
        self.grid.viewers_of(id, &mut viewers);
        // The joiner is reached through `Sender` only: the core routes frames to its id once this
        // call has returned and `player()` names it.
        for &other in &viewers {
            if let Some(other) = self.ship(other) {
                out.send(Recipients::Sender, other.id.get(), &ServerPacket::Ship(other.state()));
            }
        }
        out.send(Recipients::Many(&viewers), id.get(), &ServerPacket::Ship(ship.state()));
        self.scratch.recipients = viewers;
        Verdict::Continue
    }

    fn steer(&mut self, id: PlayerId, steer: Steer) {
        if let Some(ship) = self.ship_mut(id) {
            ship.heading = steer.heading();
            ship.throttle = steer.throttle();
        }
    }

    fn fire(&mut self, now: Instant, id: PlayerId, fire: Fire, out: &mut impl Outbox) {
        let full = self.projectiles.len() >= self.config.max_projectiles;
        let fire_interval = self.config.fire_interval;
        let Some(ship) = self.ship_mut(id) else { return };
        if now < ship.next_fire_at || full {
            if ship.rate_error_at.is_none_or(|at| now.saturating_duration_since(at) >= RATE_ERROR_INTERVAL) {
                ship.rate_error_at = Some(now);
                out.send(Recipients::Sender, id.get(), &ServerPacket::error(ErrorCode::RateLimited));
            }
            return;
        }
        ship.next_fire_at = now + fire_interval;
        let position = ship.position;
        let (sin, cos) = fire.heading().sin_cos();
        let speed = self.config.projectile_speed;
        let projectile = Projectile {
            id: self.next_projectile,
            owner: id,
            x: position.x,
            z: position.z,
            step_x: cos * speed * self.dt,
            step_z: sin * speed * self.dt,
            ticks_left: self.projectile_ticks,
        };
        // Ids wrap after 4 G shots; 0 is skipped so that a client may use it as "none".
        self.next_projectile = self.next_projectile.checked_add(1).unwrap_or(1);
        self.projectiles.push(projectile);
        let shot = Shot {
            projectile: projectile.id,
            x: position.x,
            z: position.z,
            vx: cos * speed,
            vz: sin * speed,
        };
        let mut viewers = std::mem::take(&mut self.scratch.recipients);
        viewers.clear();
        // The shooter is at the point, so it is among them.
        self.grid.viewers_of_point(position, &mut viewers);
        out.send(Recipients::Many(&viewers), id.get(), &ServerPacket::Shot(shot));
        self.scratch.recipients = viewers;
    }

    /// Sends `id`'s SHIP to those who see it and to itself.
    fn send_ship(&mut self, id: PlayerId, out: &mut impl Outbox) {
        let Some(state) = self.ship(id).map(Ship::state) else { return };
        let mut recipients = std::mem::take(&mut self.scratch.recipients);
        recipients.clear();
        self.grid.viewers_of(id, &mut recipients);
        recipients.push(id);
        out.send(Recipients::Many(&recipients), id.get(), &ServerPacket::Ship(state));
        self.scratch.recipients = recipients;
    }

    /// Moves every ship with its throttle up; every `refresh_ticks`, re-sends every ship.
    fn move_ships(&mut self, out: &mut impl Outbox) {
        let refresh = self.ticks.is_multiple_of(u64::from(self.config.refresh_ticks));
        let (max_x, max_z) = (self.config.world_w.next_down(), self.config.world_h.next_down());
        for index in 0..self.ships.len() {
            let Some(ship) = &mut self.ships[index] else { continue };
            let mut moved = false;
            if ship.throttle > 0.0 {
                let step = ship.throttle * self.config.ship_speed * self.dt;
                let (sin, cos) = ship.heading.sin_cos();
                // The arena's walls stop a ship; they do not wrap it.
                let next = Position::new(
                    (ship.position.x + cos * step).clamp(0.0, max_x),
                    0.0,
                    (ship.position.z + sin * step).clamp(0.0, max_z),
                );
                moved = next != ship.position;
                ship.position = next;
            }
            let (id, position) = (ship.id, ship.position);
            if moved {
                self.grid.move_to(id, position);
            }
            if moved || refresh {
                self.send_ship(id, out);
            }
        }
    }

    /// Advances every projectile one step: gone past its range or the walls, a hit on the first
    /// ship along its path, or a PROJECTILE to those who see where it is now.
    fn move_projectiles(&mut self, out: &mut impl Outbox) {
        let mut index = 0;
        while index < self.projectiles.len() {
            let projectile = &mut self.projectiles[index];
            let (from_x, from_z) = (projectile.x, projectile.z);
            projectile.x += projectile.step_x;
            projectile.z += projectile.step_z;
            projectile.ticks_left -= 1;
            let p = *projectile;
            let outside =
                !(0.0..self.config.world_w).contains(&p.x) || !(0.0..self.config.world_h).contains(&p.z);
            if let Some(victim) = self.first_hit(p, from_x, from_z) {
                self.projectiles.swap_remove(index);
                self.hit(p, victim, out);
                continue;
            }
            if p.ticks_left == 0 || outside {
                // Gone without a frame: clients drop a projectile that stops being updated.
                self.projectiles.swap_remove(index);
                continue;
            }
            let mut viewers = std::mem::take(&mut self.scratch.recipients);
            viewers.clear();
            self.grid.viewers_of_point(Position::new(p.x, 0.0, p.z), &mut viewers);
            let state = ProjectileState { projectile: p.id, x: p.x, z: p.z };
            out.send(Recipients::Many(&viewers), p.owner.get(), &ServerPacket::Projectile(state));
            self.scratch.recipients = viewers;
            index += 1;
        }
    }

    /// The first ship (nearest `from`) other than the shooter whose centre lies within `hit_radius`
    /// of the segment the projectile flew this tick: a fast projectile cannot tunnel through.
    fn first_hit(&mut self, p: Projectile, from_x: f32, from_z: f32) -> Option<PlayerId> {
        let mut candidates = std::mem::take(&mut self.scratch.candidates);
        candidates.clear();
        // Every ship within `hit_radius` of the segment is within `aoi_radius` of its end as long as
        // a step plus the hit radius stays under the AOI radius; `Arena::new`'s defaults keep it so,
        // and a wider step only misses hits, never sends one to the wrong player.
        self.grid.viewers_of_point(Position::new(p.x, 0.0, p.z), &mut candidates);
        let (dx, dz) = ((p.x - from_x) as f64, (p.z - from_z) as f64);
        let length_squared = dx * dx + dz * dz;
        let radius_squared = (self.config.hit_radius as f64).powi(2);
        let mut best: Option<(f64, PlayerId)> = None;
        for &id in &candidates {
            let Some(ship) = self.ship(id).filter(|_| id != p.owner) else { continue };
            let (cx, cz) = (ship.position.x as f64 - from_x as f64, ship.position.z as f64 - from_z as f64);
            let along = if length_squared > 0.0 {
                ((cx * dx + cz * dz) / length_squared).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ez) = (cx - along * dx, cz - along * dz);
            if ex * ex + ez * ez <= radius_squared && best.is_none_or(|(first, _)| along < first) {
                best = Some((along, id));
            }
        }
        self.scratch.candidates = candidates;
        best.map(|(_, id)| id)
    }

    /// `victim` is hit by `p`: HIT to those who see the point, the shooter and the victim; on a kill,
    /// SCORE of both, and the victim respawns with full hit points.
    fn hit(&mut self, p: Projectile, victim: PlayerId, out: &mut impl Outbox) {
        let damage = self.config.damage;
        let Some(ship) = self.ship_mut(victim) else { return };
        ship.hp = ship.hp.saturating_sub(damage);
        let (hp, at) = (ship.hp, ship.position);
        let mut recipients = std::mem::take(&mut self.scratch.recipients);
        recipients.clear();
        self.grid.viewers_of_point(at, &mut recipients);
        for id in [p.owner, victim] {
            // The shooter may be out of view of the point (projectiles outrange sight), or gone.
            if !recipients.contains(&id) && self.ship(id).is_some() {
                recipients.push(id);
            }
        }
        let report = HitReport { victim: victim.get(), projectile: p.id, hp };
        out.send(Recipients::Many(&recipients), p.owner.get(), &ServerPacket::Hit(report));
        if hp == 0 {
            if let Some(shooter) = self.ship_mut(p.owner) {
                shooter.score.kills += 1;
                let score = shooter.score;
                out.send(Recipients::Many(&recipients), p.owner.get(), &ServerPacket::Score(score));
            }
            let max_hp = self.config.max_hp;
            let respawn = self.spawn_point();
            if let Some(ship) = self.ship_mut(victim) {
                ship.score.deaths += 1;
                ship.hp = max_hp;
                ship.position = respawn;
                ship.throttle = 0.0;
                let score = ship.score;
                out.send(Recipients::Many(&recipients), victim.get(), &ServerPacket::Score(score));
            }
            self.grid.move_to(victim, respawn);
            tracing::debug!(shooter = %p.owner, %victim, "destroyed");
        }
        self.scratch.recipients = recipients;
        if hp == 0 {
            self.send_ship(victim, out);
        }
    }

    fn announce(&mut self, text: &str, out: &mut impl Outbox) {
        let mut everyone = std::mem::take(&mut self.scratch.recipients);
        everyone.clear();
        everyone.extend(self.ships.iter().flatten().map(|ship| ship.id));
        out.send(
            Recipients::Many(&everyone),
            0,
            &ServerPacket::Announce { text: protocol::truncate_text(text, TEXT_MAX) },
        );
        self.scratch.recipients = everyone;
    }

    /// Takes `id`'s ship out: GONE to those who saw it.
    fn remove(&mut self, id: PlayerId, out: &mut impl Outbox) {
        if self.ship(id).is_none() {
            return;
        }
        let mut viewers = std::mem::take(&mut self.scratch.recipients);
        viewers.clear();
        self.grid.viewers_of(id, &mut viewers);
        out.send(Recipients::Many(&viewers), id.get(), &ServerPacket::Gone);
        self.scratch.recipients = viewers;
        self.grid.remove(id);
        self.ships[id.index()] = None;
        self.ids.release(id);
        tracing::debug!(player = %id, "left");
    }
}

impl Game for Arena {
    type Session = ArenaSession;
    type Command = ArenaCommand;

    fn client_packets(&self) -> PacketSet {
        protocol::CLIENT_PACKETS
    }

    fn open(&mut self, now: Instant) -> ArenaSession {
        ArenaSession { state: SessionState::AwaitingHello, opened_at: now, last_packet_at: now }
    }

    fn handle(
        &mut self,
        now: Instant,
        _completed_at: Instant,
        session: &mut ArenaSession,
        frame: RawFrame<'_>,
        out: &mut impl Outbox,
    ) -> Verdict {
        // The core has already refused ids outside `client_packets`, spoofed header ids, and frames
        // that completed after `deadline`.
        let player = match session.state {
            SessionState::Closed => return Verdict::Close,
            SessionState::AwaitingHello if frame.packet_id() == protocol::HELLO => None,
            SessionState::Playing(id) if frame.packet_id() != protocol::HELLO => Some(id),
            // Anything before HELLO, or a second HELLO.
            _ => return self.fail(session, ErrorCode::BadState, out),
        };
        session.last_packet_at = now;
        let packet = match ClientPacket::parse(frame.packet_id(), frame.payload()) {
            Ok(packet) => packet,
            Err(error) => return self.fail(session, error.error_code(), out),
        };
        match (player, packet) {
            (None, ClientPacket::Hello { name }) => return self.join(now, session, name, out),
            (Some(id), ClientPacket::Ping { payload }) => {
                out.send(Recipients::Sender, id.get(), &ServerPacket::Pong { payload });
            }
            (Some(id), ClientPacket::Steer(steer)) => self.steer(id, steer),
            (Some(id), ClientPacket::Fire(fire)) => self.fire(now, id, fire, out),
            // HELLO is never `Some`, anything else never `None`: checked above from the id.
            _ => return self.fail(session, ErrorCode::BadState, out),
        }
        Verdict::Continue
    }

    fn deadline(&self, session: &ArenaSession) -> Option<Instant> {
        match session.state {
            SessionState::AwaitingHello => Some(session.opened_at + self.config.hello_timeout),
            SessionState::Playing(_) => Some(session.last_packet_at + self.config.idle_timeout),
            SessionState::Closed => None,
        }
    }

    fn poll_timeout(&mut self, now: Instant, session: &mut ArenaSession, out: &mut impl Outbox) -> Verdict {
        match self.deadline(session) {
            None => Verdict::Close,
            Some(deadline) if now >= deadline => self.fail(session, ErrorCode::Timeout, out),
            Some(_) => Verdict::Continue,
        }
    }

    fn fail(&mut self, session: &mut ArenaSession, code: ErrorCode, out: &mut impl Outbox) -> Verdict {
        if session.state != SessionState::Closed {
            let header = session.player().map_or(0, PlayerId::get);
            out.send(Recipients::Sender, header, &ServerPacket::error(code));
            self.close(session, out);
        }
        Verdict::Close
    }

    fn close(&mut self, session: &mut ArenaSession, out: &mut impl Outbox) {
        if let SessionState::Playing(id) = session.state {
            self.remove(id, out);
        }
        session.state = SessionState::Closed;
    }

    fn player(&self, session: &ArenaSession) -> Option<PlayerId> {
        session.player()
    }

    fn player_count(&self) -> usize {
        self.ids.len()
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.config.tick_interval())
    }

    fn tick(&mut self, _now: Instant, out: &mut impl Outbox) {
        self.ticks += 1;
        self.move_ships(out);
        self.move_projectiles(out);
    }

    fn command(&mut self, _now: Instant, command: ArenaCommand, out: &mut impl Outbox) {
        match command {
            ArenaCommand::Announce(text) => self.announce(&text, out),
            ArenaCommand::Kick(id) => {
                if self.ship(id).is_some() {
                    let kicked = ServerPacket::Kicked { reason: "kicked by the operator" };
                    out.send(Recipients::One(id), id.get(), &kicked);
                    // KICKED is its last frame. Once this call returns the core calls `close` on its
                    // session, which takes the ship out (GONE to those who saw it), and closes the
                    // connection.
                    out.end(id);
                    tracing::info!(player = %id, "kicked");
                }
            }
        }
    }
}
