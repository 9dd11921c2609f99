//! [`ArenaConfig`]: the arena's rules (sizes, speeds, rates, timeouts), checked once when a game is built.

use std::time::Duration;

use gamewire_world::AoiError;

/// The arena's rules. Start from [`ArenaConfig::default`] and change fields: the struct is
/// `#[non_exhaustive]`, so a new setting breaks no caller.
///
/// # Examples
///
/// ```
/// use gamewire_arena::{Arena, ArenaConfig};
///
/// let mut config = ArenaConfig::default();
/// config.tick_hz = 30;
/// config.spawns = vec![(100.0, 100.0), (900.0, 900.0)];
/// let arena = Arena::new(config).unwrap();
/// # let _ = arena;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ArenaConfig {
    /// The arena's x extent: x in `0.0..world_w`.
    pub world_w: f32,
    /// The arena's z extent.
    pub world_h: f32,
    /// How far a ship sees: it is sent what happens within this distance of it.
    pub aoi_radius: f32,
    /// Server ticks per second (1 to 1000): ships and projectiles move once per tick.
    pub tick_hz: u32,
    /// Most players at once; a HELLO beyond is ERROR(SERVER_FULL).
    pub max_players: usize,
    /// A ship's speed at full throttle, units per second.
    pub ship_speed: f32,
    /// A projectile's speed, units per second.
    pub projectile_speed: f32,
    /// How far a projectile flies before it is gone, units.
    pub projectile_range: f32,
    /// A projectile hits a ship whose centre comes within this distance of its path.
    pub hit_radius: f32,
    /// Hit points a hit takes.
    pub damage: u32,
    /// A ship's hit points when it (re)spawns.
    pub max_hp: u32,
    /// Shortest time between two shots of one ship; a FIRE sooner is dropped (ERROR(RATE_LIMITED),
    /// not fatal, at most once a second).
    pub fire_interval: Duration,
    /// Most projectiles in flight at once (their memory is reserved up front).
    pub max_projectiles: usize,
    /// A connection must send HELLO within this.
    pub hello_timeout: Duration,
    /// A player who sends nothing for this long is ERROR(TIMEOUT).
    pub idle_timeout: Duration,
    /// Every this many ticks every ship is re-sent to those who see it, moving or not: how a client
    /// learns of a still ship that came into view, and how it drops the ones that left it.
    pub refresh_ticks: u32,
    /// Where ships (re)spawn, in turn; empty: anywhere, at random.
    pub spawns: Vec<(f32, f32)>,
    /// Seed of the random spawn points.
    pub seed: u64,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        ArenaConfig {
            world_w: 1000.0,
            world_h: 1000.0,
            aoi_radius: 150.0,
            tick_hz: 20,
            max_players: 1000,
            ship_speed: 100.0,
            projectile_speed: 300.0,
            projectile_range: 450.0,
            hit_radius: 12.0,
            damage: 25,
            max_hp: 100,
            fire_interval: Duration::from_millis(200),
            max_projectiles: 4096,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            refresh_ticks: 20,
            spawns: Vec::new(),
            seed: 0x5eed,
        }
    }
}

/// Why an [`ArenaConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting out of its range.
    #[error("{name} {requirement}")]
    Invalid {
        /// The field's name.
        name: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// The visibility grid cannot be built from the sizes.
    #[error("visibility grid: {0}")]
    Grid(#[from] AoiError),
}

impl ArenaConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, requirement| Err(ConfigError::Invalid { name, requirement });
        let positive = |v: f32| v.is_finite() && v > 0.0;
        for (name, value) in [
            ("world_w", self.world_w),
            ("world_h", self.world_h),
            ("aoi_radius", self.aoi_radius),
            ("ship_speed", self.ship_speed),
            ("projectile_speed", self.projectile_speed),
            ("projectile_range", self.projectile_range),
            ("hit_radius", self.hit_radius),
        ] {
            if !positive(value) {
                return invalid(name, "must be a positive number");
            }
        }
        if !(1..=1000).contains(&self.tick_hz) {
            return invalid("tick_hz", "must be 1 to 1000");
        }
        if self.max_players == 0 || self.max_players > gamewire_world::PlayerId::MAX_PLAYERS {
            return invalid("max_players", "must be 1 to 1048575");
        }
        if self.max_hp == 0 || self.damage == 0 {
            return invalid("max_hp and damage", "must be above 0");
        }
        if self.max_projectiles == 0 {
            return invalid("max_projectiles", "must be above 0");
        }
        if self.hello_timeout.is_zero() || self.idle_timeout.is_zero() {
            return invalid("hello_timeout and idle_timeout", "must be above 0");
        }
        if self.refresh_ticks == 0 {
            return invalid("refresh_ticks", "must be above 0");
        }
        let inside =
            |&(x, z): &(f32, f32)| (0.0..self.world_w).contains(&x) && (0.0..self.world_h).contains(&z);
        if !self.spawns.iter().all(inside) {
            return invalid("spawns", "must lie inside the arena");
        }
        Ok(())
    }

    /// The tick's period.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_secs(1) / self.tick_hz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_bad_settings_are_named() {
        assert_eq!(ArenaConfig::default().validate(), Ok(()));
        let config = ArenaConfig { tick_hz: 0, ..ArenaConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { name: "tick_hz", .. })));
        let config = ArenaConfig { spawns: vec![(2000.0, 1.0)], ..ArenaConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { name: "spawns", .. })));
        let config = ArenaConfig { hit_radius: f32::NAN, ..ArenaConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { name: "hit_radius", .. })));
    }
}
