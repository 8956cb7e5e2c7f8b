//! Retry policy for retryable node failures.

use std::time::Duration;

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// `initial × multiplier^(retry - 1)`: 100, 200, 400 ms by default.
    Exponential { initial: Duration, multiplier: f64 },
    /// The same delay before every retry.
    Fixed(Duration),
    /// Retry at once.
    None,
}

/// Retries after the first failure, and the delay before each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// Three retries after 100, 200 and 400 ms.
    fn default() -> Self {
        Self { max_retries: 3, backoff: Backoff::Exponential { initial: Duration::from_millis(100), multiplier: 2.0 } }
    }
}

/// Upper bound on any single delay, so a large multiplier cannot park a node for hours.
const MAX_DELAY: Duration = Duration::from_secs(30);

impl RetryPolicy {
    pub fn none() -> Self {
        Self { max_retries: 0, backoff: Backoff::None }
    }

    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let d = match self.backoff {
            Backoff::Exponential { initial, multiplier } => {
                let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                let secs = initial.as_secs_f64() * multiplier.powi(exp);
                if secs.is_finite() && secs >= 0.0 {
                    Duration::from_secs_f64(secs.min(MAX_DELAY.as_secs_f64()))
                } else {
                    MAX_DELAY
                }
            }
            Backoff::Fixed(d) => d,
            Backoff::None => Duration::ZERO,
        };
        d.min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_delays_are_100_200_400_ms() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 3);
        let delays: Vec<u128> = (1..=3).map(|r| p.delay(r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400]);
    }

    #[test]
    fn delays_are_capped() {
        let p = RetryPolicy {
            max_retries: 50,
            backoff: Backoff::Exponential { initial: Duration::from_secs(1), multiplier: 10.0 },
        };
        assert_eq!(p.delay(40), MAX_DELAY);
    }

    #[test]
    fn fixed_and_none() {
        assert_eq!(
            RetryPolicy { max_retries: 1, backoff: Backoff::Fixed(Duration::from_millis(7)) }.delay(3).as_millis(),
            7
        );
        assert_eq!(RetryPolicy::none().delay(1), Duration::ZERO);
    }
}
