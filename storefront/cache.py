"""Balance look-ups served without a round trip: a per-process cache kept honest by Redis.

Two levels, both per ``(shop_id, shopify_customer_id)``:

* **Redis** (shared, ``STOREFRONT_CACHE_TTL`` seconds): ``cc:sf:bal:{shop}:{customer}`` holds
  ``token|valid_until|balances-json`` and ``cc:sf:gen:{shop}:{customer}`` the customer's
  current *generation token*. A value counts only if its token equals the current generation.
* **In-process** (each gunicorn worker, ``STOREFRONT_LOCAL_TTL`` seconds at most): a dict,
  trusted only while this process's listener thread is subscribed to the invalidation channel.

After a commit that wrote a customer's accounts, ``invalidate`` sets a NEW random generation
token, deletes the value and publishes the customer's key on the channel, in one pipeline.
Every listener evicts the key from its process at once.

The stale-set race (a reader that read the database before a writer committed must not store
the old answer after the writer's invalidation) is closed at both levels:

* Redis: the reader takes the generation token *before* reading the database and stores the
  value tagged with it. A writer that commits after that read replaces the token after its
  commit, so the late value carries a dead token and is never served. Tokens are random, not
  counters, so an evicted or expired generation key can never make an old value valid again.
* In-process: the reader notes the process's invalidation *epoch* before reading; every
  eviction the listener applies bumps the epoch, and a value is kept only if the epoch has not
  moved. A reader whose read preceded a commit noted its epoch before the writer published,
  so either it sees the bumped epoch and keeps nothing, or it stores first and the arriving
  message evicts it.

Staleness bounds: normally the publish-to-evict delay (well under a millisecond on a LAN).
The listener stops trusting (and clears) the in-process cache on any error — a dead connection
shows within about 5 s through TCP keep-alive — or if its pings (every
``LISTENER_PING_SECONDS``) went unanswered for ``LISTENER_DEADLINE`` seconds; on
(re)subscribing it clears again, since messages sent meanwhile were lost. An invalidation
that cannot reach Redis is retried from this process until it does; if this process dies
first, the Redis value lives at most ``STOREFRONT_CACHE_TTL`` and a process's own copy
``STOREFRONT_LOCAL_TTL``.
Shop states are cached in-process only (``SHOP_TTL``), evicted by the same channel.

A Redis error never fails a look-up: the answer comes from the database, the error is logged,
and Redis is left alone for ``BREAKER_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from observability import metrics
from storefront.process import current_pid

log = logging.getLogger(__name__)

CHANNEL = "creditcraft:storefront:invalidate"
GENERATION_TTL = 86_400  # far longer than any value lives, and refreshed by every write
# The listener thread wakes once a second when nothing is published (to send what waits in
# the queue of failed invalidations, and a ping every LISTENER_PING_SECONDS): every wake-up of a
# second thread costs the request threads a GIL hand-off (measured: threads waking 20 times a
# second took the look-ups' p99 from 0.3 ms to 2.5 ms on a busy machine). A dead connection is
# noticed by TCP keep-alive within about 5 s, a silent one by the deadline.
LISTENER_WAKE_SECONDS = 1.0
LISTENER_PING_SECONDS = 5.0
LISTENER_DEADLINE = 12.0  # no pong for this long: the in-process cache is not trusted
LISTENER_RETRY_SECONDS = 0.5  # how often queued invalidations are retried
_KEEPALIVE = {
    option: value
    for option, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3))
    if hasattr(socket, option)
}
BREAKER_SECONDS = 1.0
SOCKET_TIMEOUT = 0.5
MAX_LOCAL_ENTRIES = 100_000
SHOP_TTL = 30.0
_LOG_EVERY = 10.0

CustomerKey = tuple[int, int]  # (shop_id, shopify_customer_id)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CachedBalances:
    """A customer's storefront balances as served: the JSON array, and until when it holds."""

    json: bytes  # the "balances" array, JSON-encoded
    valid_until: float | None  # Unix time at which a lot dies and this answer changes

    def fresh_at(self, now: float) -> bool:
        return self.valid_until is None or now < self.valid_until

    def balances(self) -> list[dict[str, Any]]:
        decoded: list[dict[str, Any]] = json.loads(self.json)
        return decoded

    def encode(self, token: bytes) -> bytes:
        until = b"" if self.valid_until is None else repr(self.valid_until).encode()
        return b"|".join((token, until, self.json))

    @classmethod
    def decode(cls, raw: bytes, token: bytes | None) -> CachedBalances | None:
        """The value if it was stored under generation ``token``, else None."""
        parts = raw.split(b"|", 2)
        if token is None or len(parts) != 3 or parts[0] != token:
            return None
        _, until, body = parts
        try:
            return cls(json=body, valid_until=float(until) if until else None)
        except ValueError:  # not written by us: a miss
            return None


def balance_key(key: CustomerKey) -> str:
    return f"cc:sf:bal:{key[0]}:{key[1]}"


def generation_key(key: CustomerKey) -> str:
    return f"cc:sf:gen:{key[0]}:{key[1]}"


class _Local(Generic[V]):
    """One in-process map of values with deadlines, filled only if no eviction intervened."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.entries: dict[Any, tuple[V, float]] = {}

    def get(self, key: Any, monotonic: float) -> tuple[V, float] | None:
        found = self.entries.get(key)
        if found is None or monotonic >= found[1]:
            return None
        return found

    def put(self, key: Any, value: V, monotonic: float) -> None:
        entries = self.entries
        entries.pop(key, None)  # re-inserted at the end: the dict's order is its age
        if len(entries) >= MAX_LOCAL_ENTRIES:
            for old in list(entries)[: MAX_LOCAL_ENTRIES // 10]:
                del entries[old]
        # Between half and all of the TTL: copies filled together (a warm-up, a deploy) must
        # not all expire in the same second and send every look-up to Redis at once.
        jitter = 0.5 + random.random() / 2  # noqa: S311 - spreading expiries, not a secret
        entries[key] = (value, monotonic + self.ttl * jitter)


class LocalCache:
    """The process's copies of balances and shop states, and the epoch that guards filling."""

    def __init__(self, balance_ttl: float, shop_ttl: float) -> None:
        self.balances: _Local[CachedBalances] = _Local(balance_ttl)
        self.shops: _Local[object] = _Local(shop_ttl)
        self.epoch = 0
        self.trusted = False  # True only while the listener is subscribed and answering
        self._lock = threading.Lock()

    def snapshot(self) -> int | None:
        """The epoch to hand back to ``put_*``; None when nothing may be stored now."""
        return self.epoch if self.trusted else None

    def put_balances(self, key: CustomerKey, value: CachedBalances, seen: int | None) -> None:
        with self._lock:
            if seen is not None and seen == self.epoch and self.trusted:
                self.balances.put(key, value, time.monotonic())

    def put_shop(self, domain: str, value: object, seen: int | None) -> None:
        with self._lock:
            if seen is not None and seen == self.epoch and self.trusted:
                self.shops.put(domain, value, time.monotonic())

    def evict(self, customers: Iterable[CustomerKey] = (), shops: Iterable[str] = ()) -> None:
        with self._lock:
            self.epoch += 1
            for key in customers:
                self.balances.entries.pop(key, None)
            for domain in shops:
                if domain == "*":
                    self.shops.entries.clear()
                else:
                    self.shops.entries.pop(domain, None)

    def reset(self, *, trusted: bool) -> None:
        """Forget everything (messages may have been missed) and say whether to trust anew."""
        with self._lock:
            self.epoch += 1
            self.balances.entries.clear()
            self.shops.entries.clear()
            self.trusted = trusted


def connect(url: str) -> redis.Redis:
    # No retries and short timeouts: a look-up that cannot reach Redis at once goes to the
    # database instead of waiting out a retry schedule.
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


class BalanceCache:
    """The two cache levels, the listener that keeps the in-process one honest, invalidation."""

    def __init__(self, url: str, *, ttl: int, local_ttl: float, shop_ttl: float = SHOP_TTL):
        self.url = url
        self.ttl = ttl
        self.local = LocalCache(local_ttl, shop_ttl)
        self._client = connect(url)
        self._skip_until = 0.0
        self._last_log: dict[str, float] = {}
        # Invalidations Redis did not take, each with the number of the attempt that queued
        # it: a retry removes only what it sent, not a later failure for the same key.
        self._pending_customers: dict[CustomerKey, int] = {}
        self._pending_shops: dict[str, int] = {}
        self._pending_seq = 0
        self._pending_lock = threading.Lock()
        self._listener: _Listener | None = None
        self._listener_pid = 0
        self._listener_lock = threading.Lock()

    # -- reads ---------------------------------------------------------------------------

    def balances(
        self, key: CustomerKey, now: float, load: Callable[[], CachedBalances]
    ) -> CachedBalances:
        """The customer's balances: this process's copy, else Redis's, else ``load()``."""
        self._ensure_listener()
        local = self.local
        if local.trusted:
            found = local.balances.get(key, time.monotonic())
            if found is not None and found[0].fresh_at(now):
                metrics.CACHE_LOCAL_HIT.inc()
                return found[0]
        metrics.CACHE_LOCAL_MISS.inc()
        seen = local.snapshot()  # before any read: see the module docstring
        value = self._from_redis(key, now, load)
        if value is None:
            value = load()
        local.put_balances(key, value, seen)
        return value

    def shop(self, domain: str, load: Callable[[], V]) -> V:
        """A shop's state: this process's copy (``SHOP_TTL`` at most), else ``load()``."""
        self._ensure_listener()
        local = self.local
        if local.trusted:
            found = local.shops.get(domain, time.monotonic())
            if found is not None:
                value: V = found[0]  # type: ignore[assignment]  # put_shop stored a V
                return value
        seen = local.snapshot()
        loaded = load()
        local.put_shop(domain, loaded, seen)
        return loaded

    def _from_redis(
        self,
        key: CustomerKey,
        now: float,
        load: Callable[[], CachedBalances],
    ) -> CachedBalances | None:
        """Redis's value if current; else load, store under the generation taken first."""
        if time.monotonic() < self._skip_until:
            metrics.CACHE_REDIS_ERROR.inc()
            return None
        gen_key, value_key = generation_key(key), balance_key(key)
        try:
            found: list[bytes | None] = self._client.mget(gen_key, value_key)  # type: ignore[assignment]
            token, raw = found
            if raw is not None:
                value = CachedBalances.decode(raw, token)
                if value is not None and value.fresh_at(now):
                    metrics.CACHE_REDIS_HIT.inc()
                    return value
            if token is None:
                token = self._adopt_generation(gen_key)
        except redis.RedisError as error:
            metrics.CACHE_REDIS_ERROR.inc()
            self._trip("read", error)
            return None
        metrics.CACHE_REDIS_MISS.inc()
        value = load()  # the database, read after the generation was taken
        seconds = self._seconds_to_keep(value, now)
        if seconds > 0:
            try:
                self._client.set(value_key, value.encode(token), ex=seconds)
            except redis.RedisError as error:
                self._trip("write", error)
        return value

    def _adopt_generation(self, gen_key: str) -> bytes:
        """The customer's generation token, creating one if none (or it expired)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.set(gen_key, secrets.token_hex(8), nx=True, ex=GENERATION_TTL)
        pipe.get(gen_key)
        _, token = pipe.execute()
        current: bytes = token
        return current

    def _seconds_to_keep(self, value: CachedBalances, now: float) -> int:
        if value.valid_until is None:
            return self.ttl
        return min(self.ttl, math.floor(value.valid_until - now))

    # -- invalidation ----------------------------------------------------------------------

    def invalidate(self, customers: Iterable[CustomerKey] = (), shops: Iterable[str] = ()) -> None:
        """After a commit: new generations, values dropped, every process told; never raises."""
        customers, shops = set(customers), set(shops)
        if not customers and not shops:
            return
        self.local.evict(customers, shops)  # this process at once, before the message returns
        # While Redis is known to fail, a write does not wait on it again: it queues.
        if time.monotonic() >= self._skip_until:
            try:
                self._publish(customers, shops)
                return
            except redis.RedisError as error:
                self._trip("invalidate", error)
        with self._pending_lock:
            self._pending_seq += 1
            self._pending_customers.update(dict.fromkeys(customers, self._pending_seq))
            self._pending_shops.update(dict.fromkeys(shops, self._pending_seq))
        self._ensure_listener()  # it sends what is queued as soon as Redis answers

    def _publish(self, customers: set[CustomerKey], shops: set[str]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for key in customers:
            pipe.set(generation_key(key), secrets.token_hex(8), ex=GENERATION_TTL)
            pipe.delete(balance_key(key))
        words = [f"c:{shop}:{customer}" for shop, customer in customers]
        words += [f"s:{domain}" for domain in shops]
        pipe.publish(CHANNEL, " ".join(words))
        pipe.execute()

    def retry_pending(self) -> None:
        """Send invalidations that could not reach Redis before (the listener calls this)."""
        with self._pending_lock:
            customers, shops = dict(self._pending_customers), dict(self._pending_shops)
        if not customers and not shops:
            return
        self._publish(set(customers), set(shops))
        with self._pending_lock:
            for key, seq in customers.items():
                if self._pending_customers.get(key) == seq:
                    del self._pending_customers[key]
            for domain, seq in shops.items():
                if self._pending_shops.get(domain) == seq:
                    del self._pending_shops[domain]
        log.info("storefront cache: %d delayed invalidations sent", len(customers) + len(shops))

    @property
    def pending(self) -> int:
        """How many invalidations wait for Redis to answer again."""
        return len(self._pending_customers) + len(self._pending_shops)

    # -- the listener ----------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        pid = current_pid()
        if self._listener_pid == pid:
            return
        with self._listener_lock:
            if self._listener_pid == pid:
                return
            # A forked child inherits the parent's memory but not its threads: start afresh
            # (redis-py's pool notices the fork itself and opens new connections).
            self.local.reset(trusted=False)
            self._listener = _Listener(self)
            self._listener.start()
            self._listener_pid = pid

    def wait_until_listening(self, timeout: float = 5.0) -> bool:
        """Start the listener if needed and wait until the in-process cache is trusted."""
        self._ensure_listener()
        deadline = time.monotonic() + timeout
        while not self.local.trusted and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.local.trusted

    def close(self) -> None:
        listener = self._listener
        if listener is not None and self._listener_pid == current_pid():
            listener.stop()
        self._listener = None
        self._listener_pid = 0
        self.local.reset(trusted=False)
        self._client.close()

    def _trip(self, what: str, error: Exception) -> None:
        """Leave Redis alone for a moment and log, at most every few seconds per kind."""
        self._skip_until = time.monotonic() + BREAKER_SECONDS
        now = time.monotonic()
        if now - self._last_log.get(what, -_LOG_EVERY) >= _LOG_EVERY:
            self._last_log[what] = now
            log.warning("storefront cache: Redis %s failed (%s); using the database", what, error)


class _Listener:
    """A daemon thread per process: applies invalidation messages to the in-process cache."""

    def __init__(self, cache: BalanceCache) -> None:
        self.cache = cache
        self._stop = threading.Event()
        self._pubsub: redis.client.PubSub | None = None
        self._thread = threading.Thread(
            target=self._run, name="storefront-cache-listener", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        connection: Any = getattr(self._pubsub, "connection", None)
        if connection is not None:
            # Wakes the thread out of its wait for a message.
            with contextlib.suppress(Exception):
                connection.disconnect()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.05
            except Exception as error:  # noqa: BLE001 - whatever it was, stop trusting, retry
                self.cache.local.reset(trusted=False)
                if not self._stopping():
                    self.cache._trip("listen", error)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
        self.cache.local.reset(trusted=False)

    def _stopping(self) -> bool:
        return self._stop.is_set()

    def _listen(self) -> None:
        local = self.cache.local
        client = redis.Redis.from_url(
            self.cache.url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            socket_keepalive=True,
            socket_keepalive_options={getattr(socket, k): v for k, v in _KEEPALIVE.items()},
            retry=Retry(NoBackoff(), 0),
        )
        pubsub = self._pubsub = client.pubsub()
        try:
            pubsub.subscribe(CHANNEL)
            last_heard = time.monotonic()
            next_ping = last_heard + LISTENER_PING_SECONDS
            while not self._stop.is_set():
                pending = self.cache.pending
                wait = LISTENER_RETRY_SECONDS if pending else LISTENER_WAKE_SECONDS
                message = pubsub.get_message(timeout=wait)
                now = time.monotonic()
                if message is not None:
                    last_heard = now
                    kind = message["type"]
                    if kind == "subscribe":
                        # Subscribed (again): whatever was sent before is lost to us.
                        local.reset(trusted=True)
                    elif kind == "message":
                        self._apply(message["data"])
                if now >= next_ping:
                    pubsub.ping()
                    next_ping = now + LISTENER_PING_SECONDS
                if now - last_heard > LISTENER_DEADLINE:
                    raise redis.ConnectionError("no answer from Redis within the deadline")
                if pending:
                    self.cache.retry_pending()
        finally:
            self._pubsub = None
            local.reset(trusted=False)
            pubsub.close()
            client.close()

    def _apply(self, data: bytes) -> None:
        customers: list[CustomerKey] = []
        shops: list[str] = []
        for word in data.decode().split():
            kind, _, rest = word.partition(":")
            if kind == "c":
                shop, _, customer = rest.partition(":")
                customers.append((int(shop), int(customer)))
            elif kind == "s":
                shops.append(rest)
        self.cache.local.evict(customers, shops)
