//! World parameters and their validation.

use std::time::Duration;

/// A token-bucket rate: `per_second` tokens refill continuously up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Sustained packets per second.
    pub per_second: f32,
    /// Packets that may arrive at once after a quiet period.
    pub burst: f32,
}

impl Rate {
    /// A rate of `per_second` with a burst of `burst`.
    pub const fn new(per_second: f32, burst: f32) -> Self {
        Rate { per_second, burst }
    }
}

/// Per-player rate limits, one bucket per client packet that has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimits {
    /// MOVE (default 60/s, burst 60).
    pub moves: Rate,
    /// CHAT (default 5/s, burst 10).
    pub chats: Rate,
    /// ATTACK (default 4/s, burst 4).
    pub attacks: Rate,
    /// PING (default 10/s, burst 10).
    pub pings: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            moves: Rate::new(60.0, 60.0),
            chats: Rate::new(5.0, 10.0),
            attacks: Rate::new(4.0, 4.0),
            pings: Rate::new(10.0, 10.0),
        }
    }
}

/// Everything the rules depend on. [`Config::default`] is protocol v1's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// World extent along x: positions satisfy `0 <= x < world_w`.
    pub world_w: f32,
    /// World extent along z: positions satisfy `0 <= z < world_h`.
    pub world_h: f32,
    /// A player sees every other player within this distance (x–z plane, inclusive).
    pub aoi_radius: f32,
    /// Largest legal speed, in units per second.
    pub max_speed: f32,
    /// Largest distance an ATTACK reaches.
    pub attack_range: f32,
    /// Hit points an ATTACK removes.
    pub damage: u32,
    /// Hit points at spawn.
    pub max_hp: u32,
    /// A fixed spawn point `(x, z)`; `None` spawns uniformly at random.
    pub spawn: Option<(f32, f32)>,
    /// Per-player packet rates.
    pub limits: RateLimits,
    /// A connection that has not sent HELLO this long after opening is closed with TIMEOUT.
    pub hello_timeout: Duration,
    /// A player that has sent no packet for this long is closed with TIMEOUT.
    pub idle_timeout: Duration,
    /// Most players at once (at most [`crate::PlayerId::MAX_PLAYERS`]).
    pub max_players: usize,
    /// Seed of the random spawn points and session tokens.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            world_w: 1000.0,
            world_h: 1000.0,
            aoi_radius: 50.0,
            max_speed: 20.0,
            attack_range: 10.0,
            damage: 10,
            max_hp: 100,
            spawn: None,
            limits: RateLimits::default(),
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_players: 100_000,
            seed: 0x6761_6d65_7769_7265,
        }
    }
}

/// Why a [`Config`] was refused.
///
/// Each message names the parameters at fault by their field names in [`Config`] (`aoi_radius`,
/// `limits.moves`); [`ConfigError::describe`] names them otherwise, as a command line's flags.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A parameter that must be a positive finite number is not.
    NotPositive {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f32,
    },
    /// A rate whose tokens per second are not a positive finite number, or whose burst is below 1.
    BadRate {
        /// The parameter (`limits.moves`, ...).
        name: &'static str,
        /// Its value.
        rate: Rate,
    },
    /// The fixed spawn point lies outside the world.
    SpawnOutside {
        /// Spawn x.
        x: f32,
        /// Spawn z.
        z: f32,
        /// World width.
        world_w: f32,
        /// World height.
        world_h: f32,
    },
    /// The grid would have too many cells (the radius is tiny next to the world).
    TooManyCells {
        /// The radius.
        aoi_radius: f32,
        /// World width.
        world_w: f32,
        /// World height.
        world_h: f32,
        /// Cells it would take.
        cells: f64,
        /// The limit.
        limit: usize,
    },
    /// `max_players` is zero or above [`crate::PlayerId::MAX_PLAYERS`].
    MaxPlayers {
        /// The value.
        value: usize,
        /// The limit.
        limit: usize,
    },
    /// A timeout so long that deadlines computed from it could overflow the clock.
    TimeoutTooLong {
        /// The parameter.
        name: &'static str,
        /// Its value in seconds.
        seconds: u64,
    },
    /// A timeout of zero, which would end every session at the first check.
    ZeroTimeout {
        /// The parameter.
        name: &'static str,
    },
    /// `max_hp` is zero.
    Zero {
        /// The parameter.
        name: &'static str,
    },
}

impl ConfigError {
    /// The message, with each parameter called what `name` returns for its field name: the
    /// [`Display`](std::fmt::Display) text is `describe(&|field| field.to_string())`, and a command
    /// line passes the flag that sets the field instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_world::{Config, ConfigError};
    ///
    /// let error = Config { max_hp: 0, ..Config::default() }.validate().unwrap_err();
    /// assert_eq!(error.to_string(), "max_hp must be positive");
    /// let flag = |field: &'static str| format!("--{}", field.replace('_', "-"));
    /// assert_eq!(error.describe(&flag), "--max-hp must be positive");
    /// ```
    pub fn describe(&self, name: &dyn Fn(&'static str) -> String) -> String {
        match *self {
            ConfigError::NotPositive { name: field, value } => {
                format!("{} must be a positive finite number, got {value}", name(field))
            }
            ConfigError::BadRate { name: field, rate } => format!(
                "{} must be a positive finite rate with a burst of at least 1, got {}/{}",
                name(field),
                rate.per_second,
                rate.burst
            ),
            ConfigError::SpawnOutside { x, z, world_w, world_h } => {
                format!("{} ({x}, {z}) lies outside the world 0..{world_w} x 0..{world_h}", name("spawn"))
            }
            ConfigError::TooManyCells { aoi_radius, world_w, world_h, cells, limit } => format!(
                "{} {aoi_radius} is too small for a {world_w} x {world_h} world ({cells} grid cells, limit {limit})",
                name("aoi_radius")
            ),
            ConfigError::MaxPlayers { value, limit } => {
                format!("{} must be in 1..={limit}, got {value}", name("max_players"))
            }
            ConfigError::TimeoutTooLong { name: field, seconds } => {
                format!("{} of {seconds} s exceeds the limit of one year", name(field))
            }
            ConfigError::ZeroTimeout { name: field } => format!("{} must be above 0 seconds", name(field)),
            ConfigError::Zero { name: field } => format!("{} must be positive", name(field)),
        }
    }
}

// Display by hand rather than thiserror's: every message is built by `describe`, so that a caller
// that names parameters otherwise gets the same words.
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(&|field| field.to_string()))
    }
}

impl std::error::Error for ConfigError {}

/// Largest number of grid cells a world may have: 4 M (2^22) cells, each an empty `Vec` of 24 bytes, so
/// about 100 MiB of grid before any player joins; a finer grid than that is a mistake, not a world.
pub(crate) const MAX_CELLS: usize = 1 << 22;

/// Longest timeout accepted: a year is "never" for a game session, and keeps `Instant + timeout` safe.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

impl Config {
    /// Checks that every parameter is usable.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("world_w", self.world_w),
            ("world_h", self.world_h),
            ("aoi_radius", self.aoi_radius),
            ("max_speed", self.max_speed),
            ("attack_range", self.attack_range),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::NotPositive { name, value });
            }
        }
        for (name, rate) in [
            ("limits.moves", self.limits.moves),
            ("limits.chats", self.limits.chats),
            ("limits.attacks", self.limits.attacks),
            ("limits.pings", self.limits.pings),
        ] {
            if !(rate.per_second.is_finite()
                && rate.per_second > 0.0
                && rate.burst.is_finite()
                && rate.burst >= 1.0)
            {
                return Err(ConfigError::BadRate { name, rate });
            }
        }
        if self.max_hp == 0 {
            return Err(ConfigError::Zero { name: "max_hp" });
        }
        if let Some((x, z)) = self.spawn
            && !(x >= 0.0 && x < self.world_w && z >= 0.0 && z < self.world_h)
        {
            return Err(ConfigError::SpawnOutside { x, z, world_w: self.world_w, world_h: self.world_h });
        }
        let cells = (self.world_w as f64 / self.aoi_radius as f64).ceil()
            * (self.world_h as f64 / self.aoi_radius as f64).ceil();
        if cells > MAX_CELLS as f64 {
            return Err(ConfigError::TooManyCells {
                aoi_radius: self.aoi_radius,
                world_w: self.world_w,
                world_h: self.world_h,
                cells,
                limit: MAX_CELLS,
            });
        }
        for (name, timeout) in [("hello_timeout", self.hello_timeout), ("idle_timeout", self.idle_timeout)] {
            if timeout > MAX_TIMEOUT {
                return Err(ConfigError::TimeoutTooLong { name, seconds: timeout.as_secs() });
            }
            if timeout.is_zero() {
                return Err(ConfigError::ZeroTimeout { name });
            }
        }
        if self.max_players == 0 || self.max_players > crate::PlayerId::MAX_PLAYERS {
            return Err(ConfigError::MaxPlayers {
                value: self.max_players,
                limit: crate::PlayerId::MAX_PLAYERS,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = Config { aoi_radius: f32::NAN, ..Config::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::NotPositive { name: "aoi_radius", .. })));
        let bad = Config { spawn: Some((1000.0, 5.0)), ..Config::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::SpawnOutside { .. })));
        let bad = Config { aoi_radius: 0.01, ..Config::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::TooManyCells { .. })));
        let bad = Config { max_players: 0, ..Config::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn zero_timeouts_and_bad_rates_are_refused_by_field_name() {
        let bad = Config { idle_timeout: Duration::ZERO, ..Config::default() };
        assert_eq!(bad.validate(), Err(ConfigError::ZeroTimeout { name: "idle_timeout" }));
        let bad = Config { hello_timeout: MAX_TIMEOUT + Duration::from_secs(1), ..Config::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::TimeoutTooLong { name: "hello_timeout", .. })));
        let limits = RateLimits { chats: Rate::new(f32::INFINITY, 10.0), ..RateLimits::default() };
        let error = Config { limits, ..Config::default() }.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "limits.chats must be a positive finite rate with a burst of at least 1, got inf/10"
        );
    }

    #[test]
    fn describe_names_every_parameter_through_the_caller() {
        let flag = |field: &'static str| format!("--{}", field.replace('_', "-"));
        let error = Config { spawn: Some((2000.0, 5.0)), ..Config::default() }.validate().unwrap_err();
        assert_eq!(error.describe(&flag), "--spawn (2000, 5) lies outside the world 0..1000 x 0..1000");
        assert_eq!(error.to_string(), "spawn (2000, 5) lies outside the world 0..1000 x 0..1000");
        let error = Config { max_players: 0, ..Config::default() }.validate().unwrap_err();
        assert_eq!(error.describe(&flag), "--max-players must be in 1..=1048575, got 0");
    }
}
