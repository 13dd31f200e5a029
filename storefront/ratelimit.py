"""Rate limits counted in-process and shared through Redis in batches (no round trip per hit).

Each limit is a sliding window of ``window`` seconds approximated from two fixed windows (the
previous window's count weighted by how much of it still overlaps, plus the current count) —
the estimate Cloudflare and others use. Every process counts its own admissions and now and
then adds them to Redis (``INCRBY`` on the current window's key, one pipeline for every key
with new counts) and reads back the total all processes reached. A hit is admitted while
``previous * overlap + total_read_back + admitted_here_since`` stays under the limit.

When to share: at least every ``sync_interval`` seconds, and at once when a key has gathered
``limit / 50`` unshared admissions (at least 1: a small limit is shared on every hit). The
request that notices does it, in its own thread: a background thread would wake several times
a second, and every wake-up of a second thread costs the request threads a GIL hand-off, which
on a busy machine showed up as milliseconds of p99. So between two shares a process may admit
what the others admitted meanwhile: at most about 2 % of the limit per process, plus what the
others admitted within the last ``sync_interval`` if they were slower than that. Rejected hits
are not counted (a client that keeps retrying is not locked out longer than the window).

Without Redis (REDIS_URL unset) or while it is unreachable, counts stay in the process: each
process enforces the limit on its own share (errors are logged, counts are sent when Redis
answers again; meanwhile a retry comes at most every ``RETRY_SECONDS``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

MAX_COUNTERS = 200_000  # distinct (scope, key) tracked per process before old ones are dropped
SHARE_FRACTION = 50  # share a key's counts once it holds limit / SHARE_FRACTION unshared
RETRY_SECONDS = 5.0  # after Redis failed, how long requests do not try it again
_LOG_EVERY = 10.0


@dataclass(slots=True)
class _Counter:
    window: int  # index of the current fixed window (floor(now / window seconds))
    previous: int = 0  # the window before: total count as last known
    synced: int = 0  # the current window's total in Redis as last read (ours included)
    pending: int = 0  # admitted here, not yet added to Redis


class RateLimiter:
    def __init__(
        self,
        client: redis.Redis | None,
        *,
        window: int = 60,
        sync_interval: float = 1.0,
        prefix: str = "cc:rl",
    ) -> None:
        self.client = client
        self.window = window
        self.sync_interval = sync_interval
        self.prefix = prefix
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._late: dict[tuple[str, str, int], int] = {}  # pending of windows that rolled over
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._next_sync = time.monotonic() + sync_interval
        self._paused_until = 0.0  # after a failure: no request tries Redis before this
        self._last_log = -_LOG_EVERY

    def hit(self, scope: str, key: str, limit: int, now: float) -> int | None:
        """Count one request; None if admitted, else the seconds to wait (Retry-After)."""
        index, elapsed = divmod(now, self.window)
        window = int(index)
        with self._lock:
            counter = self._counters.get((scope, key))
            if counter is None:
                if len(self._counters) >= MAX_COUNTERS:
                    self._prune(window)
                counter = self._counters[(scope, key)] = _Counter(window)
            elif counter.window != window:
                self._roll(scope, key, counter, window)
            current = counter.synced + counter.pending
            overlap = 1.0 - elapsed / self.window
            if counter.previous * overlap + current + 1 > limit:
                return self._retry_after(counter.previous, current, limit, elapsed)
            counter.pending += 1
            share_now = counter.pending >= max(1, limit // SHARE_FRACTION)
        if self.client is not None:
            monotonic = time.monotonic()
            due = share_now or monotonic >= self._next_sync
            if due and monotonic >= self._paused_until:
                self._share()
        return None

    def _roll(self, scope: str, key: str, counter: _Counter, window: int) -> None:
        total = counter.synced + counter.pending
        if counter.pending and self.client is not None:
            late = (scope, key, counter.window)
            self._late[late] = self._late.get(late, 0) + counter.pending
        counter.previous = total if window == counter.window + 1 else 0
        counter.window, counter.synced, counter.pending = window, 0, 0

    def _retry_after(self, previous: int, current: int, limit: int, elapsed: float) -> int:
        """Seconds until the estimate drops under the limit, if nobody else sends anything."""
        left = self.window - elapsed
        if current + 1 > limit:
            # Not in this window: in the next one, ``current`` becomes the weighted previous.
            wait = left + self.window * (1.0 - (limit - 1) / max(current, 1))
        else:
            wait = self.window * (1.0 - (limit - 1 - current) / previous) - elapsed
        return max(1, math.ceil(wait))

    def _prune(self, window: int) -> None:
        stale = [k for k, c in self._counters.items() if c.window < window - 1]
        for k in stale:
            del self._counters[k]
        if len(self._counters) >= MAX_COUNTERS:  # still full of live keys: drop the oldest
            for k in list(self._counters)[: MAX_COUNTERS // 10]:
                del self._counters[k]

    # -- sharing counts through Redis -------------------------------------------------------

    def _share(self) -> None:
        """Sync from this request's thread, unless another thread is already at it."""
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            self.sync()
        finally:
            self._sync_lock.release()

    def sync(self) -> None:
        """Add this process's admissions to Redis and read back every process's totals."""
        client = self.client
        if client is None:
            return
        with self._lock:
            taken = [(k, c.window, c.pending) for k, c in self._counters.items() if c.pending]
            for k, _, pending in taken:
                self._counters[k].pending -= pending
            late, self._late = self._late, {}
        self._next_sync = time.monotonic() + self.sync_interval
        if not taken and not late:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for (scope, key), window, pending in taken:
                name = self._key(scope, key, window)
                pipe.incrby(name, pending)
                pipe.expire(name, self.window * 2)
            for (scope, key, window), pending in late.items():
                pipe.incrby(self._key(scope, key, window), pending)
                pipe.expire(self._key(scope, key, window), self.window * 2)
            results = pipe.execute()
        except redis.RedisError as error:
            self._give_back(taken, late)
            self._paused_until = time.monotonic() + RETRY_SECONDS
            self._log_failure(error)
            return
        with self._lock:
            for i, ((scope, key), window, _) in enumerate(taken):
                counter = self._counters.get((scope, key))
                if counter is not None and counter.window == window:
                    counter.synced = max(counter.synced, int(results[2 * i]))

    def _give_back(
        self, taken: list[tuple[tuple[str, str], int, int]], late: dict[tuple[str, str, int], int]
    ) -> None:
        """Redis did not take the counts: keep them here, to count locally and send later."""
        with self._lock:
            for k, window, pending in taken:
                counter = self._counters.get(k)
                if counter is not None and counter.window == window:
                    counter.pending += pending
                else:
                    self._late[(*k, window)] = self._late.get((*k, window), 0) + pending
            for k3, pending in late.items():
                self._late[k3] = self._late.get(k3, 0) + pending
            # Counts of windows long gone are worth nothing: do not let them pile up.
            oldest = int(time.time() // self.window) - 1
            self._late = {k3: n for k3, n in self._late.items() if k3[2] >= oldest}

    def _key(self, scope: str, key: str, window: int) -> str:
        return f"{self.prefix}:{scope}:{key}:{window}"

    def _log_failure(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY:
            self._last_log = now
            log.warning("rate limits: Redis unreachable (%s); counting in this process", error)

    def close(self) -> None:
        """Send what is still unshared (best effort)."""
        self._share()
