//! The bench's arithmetic, as small pure functions.

/// `numerator / denominator`, or `None` when the quotient means nothing (a zero or non-finite
/// denominator, a non-finite numerator).
pub(crate) fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    if !numerator.is_finite() || !denominator.is_finite() || denominator == 0.0 {
        return None;
    }
    Some(numerator / denominator)
}

/// A ratio for the Markdown table: `0.42×`, or `n/a`.
pub(crate) fn format_ratio(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r >= 100.0 => format!("{r:.0}×"),
        Some(r) if r >= 10.0 => format!("{r:.1}×"),
        Some(r) if r >= 0.1 => format!("{r:.2}×"),
        Some(0.0) => "0×".to_string(),
        Some(r) => {
            // Two significant digits, however small: 0.0012×, not 0.00×.
            let decimals = (1.0 - r.abs().log10().floor()).clamp(2.0, 12.0) as usize;
            format!("{r:.decimals$}×")
        }
        None => "n/a".to_string(),
    }
}

/// The median of `values` (the mean of the two middle ones for an even count); `None` when empty
/// or when a value is NaN.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 })
}

/// The index of the run whose `values` entry is the median (the lower middle one for an even count),
/// to pick one representative run (for the CDF plot).
pub(crate) fn median_index(values: &[f64]) -> Option<usize> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    Some(order[(values.len() - 1) / 2])
}

/// Side of a square world in which `players` spread uniformly see about `in_view` others each within
/// `aoi_radius`: `players * pi * r^2 / side^2 = in_view`, so `side = sqrt(players * pi * r^2 / in_view)`.
pub(crate) fn mmo_world_side(players: usize, aoi_radius: f64, in_view: f64) -> f64 {
    (players as f64 * std::f64::consts::PI * aoi_radius * aoi_radius / in_view).sqrt()
}

/// How a quantity sampled over a run moved: the medians of the samples `(seconds, value)` within
/// `window` seconds of the start and of the end of `[from, to]`, and the largest sample in it. `None`
/// when a window holds no sample.
pub(crate) fn window_medians(
    samples: &[(f64, f64)],
    from: f64,
    to: f64,
    window: f64,
) -> Option<(f64, f64, f64)> {
    let within = |low: f64, high: f64| -> Vec<f64> {
        samples.iter().filter(|(t, _)| (low..=high).contains(t)).map(|&(_, v)| v).collect()
    };
    let first = median(&within(from, from + window))?;
    let last = median(&within(to - window, to))?;
    let max = within(from, to).into_iter().fold(f64::NEG_INFINITY, f64::max);
    Some((first, last, max))
}

/// Server CPU microseconds spent per delivered frame (also: CPU seconds per million frames);
/// `None` when no frame was delivered.
pub(crate) fn cpu_us_per_frame(cpu_seconds: f64, frames: u64) -> Option<f64> {
    ratio(cpu_seconds * 1e6, frames as f64)
}

/// Seconds of CPU between two tick readings.
pub(crate) fn cpu_seconds(before_ticks: u64, after_ticks: u64, ticks_per_second: u64) -> f64 {
    after_ticks.saturating_sub(before_ticks) as f64 / ticks_per_second.max(1) as f64
}

/// The next bot count of a capacity search: `current * factor`, rounded up, and at least one more.
pub(crate) fn next_capacity_step(current: usize, factor: f64) -> usize {
    let next = (current as f64 * factor).ceil();
    if next.is_finite() && next > current as f64 { (next as usize).max(current + 1) } else { current + 1 }
}

/// The next step of a bisection between `held` clients (a step that held) and `broke` (one that broke,
/// above it), or `None` once they are within `resolution` x `held` of each other.
pub(crate) fn bisect_step(held: usize, broke: usize, resolution: f64) -> Option<usize> {
    let gap = broke.checked_sub(held)?;
    if gap < 2 || gap as f64 <= held as f64 * resolution {
        return None;
    }
    Some(held + gap / 2)
}

/// Connections per second that bring `bots` in during the first half of a `warmup` (never below
/// 1000/s, `gamewire bots`'s default).
pub(crate) fn ramp_for(bots: usize, warmup: f64) -> f64 {
    (bots as f64 / (warmup * 0.5).max(0.1)).max(1000.0)
}

/// `seconds` since the Unix epoch as an ISO 8601 UTC date, `2024-05-01T12:00:00Z`.
pub(crate) fn format_utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day / 60 % 60, of_day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_refuse_division_by_zero() {
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(0.0, 4.0), Some(0.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(0.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
        assert_eq!(format_ratio(Some(0.4213)), "0.42×");
        assert_eq!(format_ratio(Some(12.34)), "12.3×");
        assert_eq!(format_ratio(Some(250.0)), "250×");
        assert_eq!(format_ratio(Some(0.07123)), "0.071×");
        assert_eq!(format_ratio(Some(0.0012)), "0.0012×");
        assert_eq!(format_ratio(Some(0.0)), "0×");
        assert_eq!(format_ratio(None), "n/a");
    }

    #[test]
    fn medians_of_runs() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN]), None);
        assert_eq!(median_index(&[5.0, 1.0, 3.0]), Some(2));
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
        assert_eq!(median_index(&[7.0]), Some(0));
        assert_eq!(median_index(&[]), None);
    }

    #[test]
    fn mmo_density_gives_the_players_in_view_asked_for() {
        let side = mmo_world_side(2000, 50.0, 8.0);
        assert!((side - 1401.25).abs() < 0.01, "{side}");
        // Check the defining relation: players per area times the view's area.
        for players in [1, 50, 2000, 10_000] {
            let side = mmo_world_side(players, 50.0, 8.0);
            let in_view = players as f64 / (side * side) * std::f64::consts::PI * 2500.0;
            assert!((in_view - 8.0).abs() < 1e-9);
        }
        assert_eq!(mmo_world_side(0, 50.0, 8.0), 0.0);
    }

    #[test]
    fn cpu_per_frame() {
        assert_eq!(cpu_us_per_frame(2.0, 1_000_000), Some(2.0));
        assert_eq!(cpu_us_per_frame(0.5, 250_000), Some(2.0));
        assert_eq!(cpu_us_per_frame(1.0, 0), None);
        assert_eq!(cpu_seconds(100, 350, 100), 2.5);
        assert_eq!(cpu_seconds(350, 100, 100), 0.0);
        assert_eq!(cpu_seconds(0, 7, 0), 7.0);
    }

    #[test]
    fn capacity_steps_grow_by_the_factor() {
        let mut n = 250;
        let mut steps = vec![n];
        for _ in 0..4 {
            n = next_capacity_step(n, 1.5);
            steps.push(n);
        }
        assert_eq!(steps, [250, 375, 563, 845, 1268]);
        assert_eq!(next_capacity_step(1, 1.0), 2);
        assert_eq!(next_capacity_step(3, f64::NAN), 4);
        assert_eq!(ramp_for(100, 1.0), 1000.0);
        assert_eq!(ramp_for(10_000, 5.0), 4000.0);
    }

    #[test]
    fn bisection_halves_the_gap_until_the_resolution() {
        // 1268 held, 1902 broke: 1585, then (if 1585 held) 1743, then 1822 ... until the gap <= 10 %.
        assert_eq!(bisect_step(1268, 1902, 0.1), Some(1585));
        assert_eq!(bisect_step(1585, 1902, 0.1), Some(1743));
        assert_eq!(bisect_step(1743, 1902, 0.1), None); // 159 <= 174.3
        assert_eq!(bisect_step(1268, 1902, 0.0), Some(1585));
        assert_eq!(bisect_step(10, 11, 0.0), None);
        assert_eq!(bisect_step(12, 11, 0.0), None);
    }

    #[test]
    fn windows_compare_the_start_and_the_end() {
        // One sample a second over 0..=10 s: 5 MiB for the first 3 s, then a leak of 1 MiB/s.
        let samples: Vec<(f64, f64)> =
            (0..=10).map(|t| (t as f64, if t < 3 { 5.0 } else { 5.0 + (t - 2) as f64 })).collect();
        assert_eq!(window_medians(&samples, 0.0, 10.0, 2.0), Some((5.0, 12.0, 13.0)));
        let flat: Vec<(f64, f64)> = (0..60).map(|t| (t as f64, 12.0)).collect();
        assert_eq!(window_medians(&flat, 5.0, 59.0, 10.0), Some((12.0, 12.0, 12.0)));
        // Samples outside [from, to] (the warm-up) do not count.
        assert_eq!(window_medians(&samples, 3.0, 10.0, 1.0), Some((6.5, 12.5, 13.0)));
        assert_eq!(window_medians(&[], 0.0, 10.0, 2.0), None);
        assert_eq!(window_medians(&samples, 20.0, 30.0, 2.0), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
