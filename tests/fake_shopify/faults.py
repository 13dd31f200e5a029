"""Injectable faults: the ways Shopify fails that a client must survive.

- ``server_error``: HTTP 503 before anything happens;
- ``slow``: sleep ``delay`` seconds, then answer normally;
- ``lost_response``: do the work (the effect is applied), then close the connection without
  answering, as a timeout or a dropped connection looks to the client;
- ``throttled``: HTTP 200 with a THROTTLED error and no effect (GraphQL only);
- ``rate_limited``: HTTP 429 with ``Retry-After: 1`` and no effect.

A fault matches a request by ``operation``: a GraphQL operation name or root field name (a
mutation's, e.g. "storeCreditAccountCredit"), "token" for the token endpoint, or None for any
request; it fires on the next ``times`` matching requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("server_error", "slow", "lost_response", "throttled", "rate_limited")


@dataclass
class Fault:
    kind: str
    operation: str | None
    times: int
    delay: float

    def matches(self, names: Iterable[str]) -> bool:
        return self.operation is None or self.operation in names


class Faults:
    def __init__(self) -> None:
        self._pending: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self, kind: str, *, operation: str | None = None, times: int = 1, delay: float = 0.0
    ) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(KINDS)}")
        if kind == "throttled" and operation == "token":
            raise ValueError("the token endpoint is not throttled by query cost")
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = Fault(kind, operation, times, delay)
        with self._lock:
            self._pending.append(fault)
        return fault

    def take(self, names: Iterable[str], *, graphql: bool) -> Fault | None:
        """The first pending fault matching this request, counted as fired once."""
        names = set(names)
        with self._lock:
            for fault in self._pending:
                if fault.kind == "throttled" and not graphql:
                    continue
                if fault.matches(names):
                    fault.times -= 1
                    if fault.times == 0:
                        self._pending.remove(fault)
                    return fault
        return None

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._pending)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
