"""When a failed call is tried again, and after how long.

Only rejections that say nothing about the request are retried: UNAVAILABLE (the server is
unreachable or draining) and RESOURCE_EXHAUSTED *with* a ``google.rpc.RetryInfo`` (the server
is at its concurrency cap and says when to come back). RESOURCE_EXHAUSTED without RetryInfo (a
message over the size cap, a limit above its cap) would fail the same way again, so it is not
retried; in-band pipeline errors never are: the service already retries failing nodes itself.

What is never retried, whatever the policy (the calls are not idempotent at that point):

* a stream once it is open: chunks already sent have changed the nodes' state (resampler
  filters, open VAD segments), so only the opening handshake, up to the server's ``ready``, is
  retried;
* ``Client.execute(request)``, the raw call, which keeps gRPC's own semantics.

``ExecutePipeline`` is retried because a pipeline is a computation over its inputs. A pipeline
whose plug-in nodes have side effects outside the service should pass ``retry=RetryPolicy.none()``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import grpc

from remotemedia_client.errors import RemoteMediaError, ResourceLimitError, ServiceUnavailableError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``initial_backoff × multiplier^(n-1)``, capped at ``max_backoff``,
    spread by ± ``jitter`` (a fraction), and never shorter than a server's RetryInfo delay.

    ``max_attempts`` counts the first attempt, so the default tries a call up to four times.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be a whole number, got {self.max_attempts!r}")
        for name in ("initial_backoff", "max_backoff", "multiplier", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"{name} must be a finite number, got {value!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff delays must not be negative")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    @staticmethod
    def is_retryable(error: RemoteMediaError) -> bool:
        """Whether ``error`` may pass if the same call is made again."""
        if isinstance(error, ServiceUnavailableError):
            return True
        return isinstance(error, ResourceLimitError) and error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_delay is not None

    def backoff(self, attempt: int) -> float:
        """The delay after failed attempt number ``attempt`` (1-based), before jitter."""
        delay = self.initial_backoff
        # Grown step by step and capped as it goes: the power itself overflows a float after
        # about a thousand attempts.
        for _ in range(attempt - 1):
            if delay >= self.max_backoff:
                break
            delay *= self.multiplier
        return min(self.max_backoff, delay)

    def delay(self, attempt: int, error: RemoteMediaError) -> float | None:
        """Seconds to wait before trying again after attempt ``attempt`` failed with ``error``,
        or ``None`` when the call must not be retried."""
        if attempt >= self.max_attempts or not self.is_retryable(error):
            return None
        wait = self.backoff(attempt) * (1 + self.jitter * (2 * random.random() - 1))
        if error.retry_delay is not None:
            wait = max(wait, error.retry_delay)
        return wait
