//! Retry policy (protocol §2.6): 2 retries by default, backoff from 1 s doubling with jitter,
//! capped at 30 s.

use std::time::Duration;

/// When and how often a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries for a task that does not set `retries`.
    pub retries: u32,
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 2,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `failures`-th failure: `initial * 2^(failures-1)`, capped, with
    /// ±20% jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_at(failures, rand::random::<f64>())
    }

    /// [`delay`](Self::delay) with the jitter drawn from `unit` in `[0, 1)`: the run state
    /// machine passes a value derived from the attempt, so that it stays deterministic.
    pub(crate) fn delay_at(&self, failures: u32, unit: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let base = exp.min(self.max);
        let jitter = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
        base.mul_f64(jitter).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy::default();
        for (n, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)] {
            let d = p.delay(n).as_secs_f64();
            assert!((base * 0.8..=base * 1.2).contains(&d), "failure {n}: {d}");
        }
        assert!(p.delay(6) <= Duration::from_secs(30));
        assert!(p.delay(40) <= Duration::from_secs(30));
    }
}
