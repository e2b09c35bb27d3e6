"""When a failed callback is tried again: exponential backoff with jitter, up to a limit.

Kept apart from the deliverers and free of httpx, so ``RetryPolicy`` can be
built, checked and shown without the ``callbacks`` extra installed.
"""

from __future__ import annotations

import math
import random

import attrs

from .exceptions import InvalidCallbackConfig

__all__ = ["RetryPolicy"]


@attrs.frozen
class RetryPolicy:
    """How often and how long a failed delivery is retried.

    After the ``n``-th failed attempt (``n`` = 1, 2, ...) the next one waits
    ``min(initial_delay * multiplier ** (n - 1), max_delay)`` seconds, shortened
    by up to ``jitter`` of itself at random (so a receiver that comes back is
    not hit by every delayed delivery in the same second, and the wait never
    exceeds ``max_delay``). A delivery is given up after ``max_attempts``
    attempts, the first one included.

    The defaults (5 s, x3, at most 1 h, 20 % jitter, 8 attempts) retry for about
    an hour and a half: 5 s, 15 s, 45 s, 2¼ min, 6¾ min, 20¼ min, 1 h.
    """

    initial_delay: float = 5.0
    multiplier: float = 3.0
    max_delay: float = 3600.0
    jitter: float = 0.2
    max_attempts: int = 8

    def __attrs_post_init__(self) -> None:
        numbers = {
            "initial_delay": self.initial_delay,
            "multiplier": self.multiplier,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidCallbackConfig(f"retry.{name}", f"must be a number, got {value!r}")
            if not math.isfinite(value):
                raise InvalidCallbackConfig(f"retry.{name}", f"must be finite, got {value!r}")
        if self.initial_delay <= 0:
            raise InvalidCallbackConfig("retry.initial_delay", "must be more than 0 seconds")
        if self.multiplier < 1:
            raise InvalidCallbackConfig(
                "retry.multiplier", "must be at least 1 (delays never shrink)"
            )
        if self.max_delay < self.initial_delay:
            raise InvalidCallbackConfig("retry.max_delay", "must be at least initial_delay")
        if not 0 <= self.jitter < 1:
            raise InvalidCallbackConfig("retry.jitter", "must be in [0, 1): a share of the delay")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidCallbackConfig("retry.max_attempts", "must be an integer")
        if self.max_attempts < 1:
            raise InvalidCallbackConfig("retry.max_attempts", "must be at least 1")

    def base_delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), before jitter."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        # Compare exponents rather than computing multiplier ** n, which overflows a float.
        growth = (attempt - 1) * math.log(self.multiplier)
        if growth >= math.log(self.max_delay / self.initial_delay):
            return float(self.max_delay)
        return min(
            float(self.initial_delay * self.multiplier ** (attempt - 1)), float(self.max_delay)
        )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered wait after failed attempt ``attempt``: in ``(base * (1 - jitter), base]``."""
        base = self.base_delay(attempt)
        draw = (rng or random).random()  # in [0, 1)
        return base * (1.0 - self.jitter * draw)

    def gives_up_after(self, attempts: int) -> bool:
        """True when ``attempts`` attempts are all this policy allows."""
        return attempts >= self.max_attempts
