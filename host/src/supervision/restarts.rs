//! A supervisor's bookkeeping of restarts: OTP's restart intensity, and the backoff delay of
//! each child, kept apart from the event loop so that their arithmetic can be tested alone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::manifest::Backoff;

/// OTP's restart intensity: more than `intensity` restarts within any `period` and the
/// supervisor gives up. As in OTP's `add_restart`, a restart exactly `period` old still counts.
pub struct Intensity {
    pub intensity: u32,
    pub period: Duration,
    /// When each restart within the current period happened, oldest first.
    recent: VecDeque<Instant>,
}

impl Intensity {
    pub fn new(intensity: u32, period: Duration) -> Intensity {
        Intensity { intensity, period, recent: VecDeque::new() }
    }

    /// Record a restart at `now`. False when it is one too many.
    pub fn allows(&mut self, now: Instant) -> bool {
        while self.recent.front().is_some_and(|at| now.saturating_duration_since(*at) > self.period) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() as u32 <= self.intensity
    }
}

/// The delay after `delay`: doubled, kept within the backoff's bounds.
pub fn next_delay(delay: Duration, backoff: Backoff) -> Duration {
    delay.saturating_mul(2).clamp(backoff.initial, backoff.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn more_than_intensity_restarts_within_the_period_is_too_many() {
        let start = Instant::now();
        let mut window = Intensity::new(3, 5 * SECOND);
        for at in [0, 1, 2] {
            assert!(window.allows(start + at * SECOND), "restart at {at} s");
        }
        assert!(!window.allows(start + 3 * SECOND), "the fourth within 5 s");
    }

    #[test]
    fn restarts_older_than_the_period_no_longer_count_and_one_exactly_period_old_does() {
        let start = Instant::now();
        let mut window = Intensity::new(2, 5 * SECOND);
        assert!(window.allows(start));
        assert!(window.allows(start + 4 * SECOND));
        // The first is exactly 5 s old: still in the period (OTP keeps `R >= Now - Period`).
        assert!(!window.allows(start + 5 * SECOND));

        let mut window = Intensity::new(2, 5 * SECOND);
        assert!(window.allows(start));
        assert!(window.allows(start + 4 * SECOND));
        assert!(window.allows(start + 5 * SECOND + Duration::from_millis(1)), "the first has left the period");
        assert!(window.allows(start + 9 * SECOND + Duration::from_millis(2)), "so has the second");
    }

    #[test]
    fn an_intensity_of_zero_allows_no_restart() {
        assert!(!Intensity::new(0, SECOND).allows(Instant::now()));
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_never_falls_below_its_start() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_millis(700) };
        let mut delay = backoff.initial;
        let mut seen = Vec::new();
        for _ in 0..5 {
            delay = next_delay(delay, backoff);
            seen.push(delay.as_millis());
        }
        assert_eq!(seen, [200, 400, 700, 700, 700]);
        assert_eq!(next_delay(Duration::ZERO, backoff), backoff.initial);
        let huge = Backoff { initial: Duration::from_secs(1), max: Duration::MAX };
        assert_eq!(next_delay(Duration::MAX, huge), Duration::MAX, "saturates instead of overflowing");
    }
}
