"""Shopify's GraphQL rate limit: a leaky bucket of cost points per app and shop."""

from __future__ import annotations

import threading
import time
from typing import Any


class CostBucket:
    """Shopify's leaky bucket for one shop: ``restore_rate`` points come back every second."""

    def __init__(self, maximum_available: float, restore_rate: float) -> None:
        self.maximum_available = float(maximum_available)
        self.restore_rate = float(restore_rate)
        self._available = self.maximum_available
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._available = min(
            self.maximum_available, self._available + (now - self._stamp) * self.restore_rate
        )
        self._stamp = now

    def take(self, cost: int) -> bool:
        """Take ``cost`` points if they are there (False: the request is throttled)."""
        with self._lock:
            self._refill()
            if cost > self._available:
                return False
            self._available -= cost
            return True

    def drain(self, points: float | None = None) -> None:
        """Empty the bucket (or take ``points``): tests use it to provoke throttling."""
        with self._lock:
            self._refill()
            self._available = max(0.0, self._available - (points or self._available))

    def status(self) -> dict[str, Any]:
        with self._lock:
            self._refill()
            return {
                "maximumAvailable": self.maximum_available,
                "currentlyAvailable": int(self._available),
                "restoreRate": self.restore_rate,
            }
