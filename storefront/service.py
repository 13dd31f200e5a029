"""The storefront's balance look-up: shop state, the customer's balances, rate limits.

Flask-free: the blueprint passes the session, the clock and the request's parts. Without
Redis (REDIS_URL unset) nothing is cached and limits are counted per process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from sqlalchemy.orm import Session

from ledger.storefront import StorefrontShop, customer_balances, find_shop
from storefront.cache import BalanceCache, CachedBalances, connect
from storefront.ratelimit import RateLimiter


@dataclass(frozen=True)
class StorefrontConfig:
    secrets: tuple[str | None, ...]  # current API secret first, then the previous one
    redis_url: str | None
    cache_ttl: int
    local_ttl: float
    limit_per_ip: int  # per minute
    limit_per_shop: int  # per minute


class Storefront:
    def __init__(self, config: StorefrontConfig) -> None:
        self.config = config
        self.cache: BalanceCache | None = None
        client: redis.Redis | None = None
        if config.redis_url:
            self.cache = BalanceCache(
                config.redis_url, ttl=config.cache_ttl, local_ttl=config.local_ttl
            )
            client = connect(config.redis_url)
        self.limiter = RateLimiter(client, window=60)

    # Sessions come as a factory: a look-up answered from the cache never creates one.

    def shop(self, session: Callable[[], Session], domain: str) -> StorefrontShop | None:
        if self.cache is None:
            return find_shop(session(), domain)
        return self.cache.shop(domain, lambda: find_shop(session(), domain))

    def balances(
        self, session: Callable[[], Session], shop_id: int, customer: int, now: float
    ) -> CachedBalances:
        def load() -> CachedBalances:
            at = datetime.fromtimestamp(now, UTC)
            found = customer_balances(session(), shop_id, customer, at)
            body = json.dumps(found.to_json(), separators=(",", ":")).encode()
            until = None if found.valid_until is None else found.valid_until.timestamp()
            return CachedBalances(json=body, valid_until=until)

        if self.cache is None:
            return load()
        return self.cache.balances((shop_id, customer), now, load)

    def throttle(self, shop: str, client_ip: str, now: float) -> int | None:
        """None if both limits admit the request, else the Retry-After seconds."""
        config = self.config
        wait = self.limiter.hit("ip", client_ip, config.limit_per_ip, now)
        if wait is not None:
            return wait
        return self.limiter.hit("shop", shop, config.limit_per_shop, now)

    def throttle_unsigned(self, peer: str, now: float) -> int | None:
        """Requests that fail verification count against the sending address alone."""
        return self.limiter.hit("ip", peer, self.config.limit_per_ip, now)

    def invalidate(self, customers: Iterable[tuple[int, int]], shops: Iterable[str]) -> None:
        if self.cache is not None:
            self.cache.invalidate(customers, shops)

    def close(self) -> None:
        self.limiter.close()
        if self.limiter.client is not None:
            self.limiter.client.close()
        if self.cache is not None:
            self.cache.close()
