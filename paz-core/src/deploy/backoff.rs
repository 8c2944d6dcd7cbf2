//! Crash backoff: how long a slot whose instances keep crashing waits before the next start,
//! and when it is forgiven.

use std::time::Duration;

/// The first wait after a crash.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between restarts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// How long a restarted slot must stay healthy before its crashes are forgotten.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// The wait before the next start of a slot that has crashed `restarts` times (≥ 1):
/// [`FIRST_DELAY`] doubled per crash, at most [`MAX_DELAY`].
pub fn restart_delay(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    let doublings = (restarts - 1).min(16);
    (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

/// Whether a slot whose instance has been healthy for `healthy_for` is out of its crash loop.
pub fn is_forgiven(healthy_for: Duration) -> bool {
    healthy_for > RESET_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_a_quarter_second_to_thirty() {
        let delays: Vec<u128> = (1..=9).map(|n| restart_delay(n).as_millis()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert!(!is_forgiven(RESET_AFTER) && is_forgiven(RESET_AFTER + Duration::from_millis(1)));
    }

    proptest! {
        /// The delay never shrinks as crashes add up, and stays within its bounds.
        #[test]
        fn delay_is_monotone_and_bounded(n in 1u32..10_000) {
            let (a, b) = (restart_delay(n), restart_delay(n + 1));
            prop_assert!(a <= b);
            prop_assert!(a >= FIRST_DELAY && b <= MAX_DELAY);
        }
    }
}
