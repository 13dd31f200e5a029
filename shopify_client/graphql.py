"""The Admin GraphQL client: one shop, one token, the documents in ``documents``.

What it adds to ShopifyAPI's ``shopify.GraphQL``:

- a timeout on every call (ShopifyAPI's ``execute`` has none and prints error bodies);
- the session is active only on the calling thread and only for the call (``_session_for``);
- the endpoint honours ``SHOPIFY_ADMIN_ORIGIN`` (the fake Shopify in tests);
- retries that never apply a mutation twice. THROTTLED (HTTP 200) and 429 mean nothing ran,
  so they are retried for both kinds. A 5xx, a timeout or a dropped connection is retried for
  a query but, for a mutation, raises ``AmbiguousMutation``: the caller reconciles first;
- pacing from ``extensions.cost.throttleStatus``: a call that the last known bucket level
  cannot afford waits for the refill first, instead of being throttled;
- one token refresh on 401; the cost of every answered call reported through ``on_cost``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import shopify

from observability import metrics
from shopify_client import _http
from shopify_client.documents import Document
from shopify_client.errors import (
    AdminAPIError,
    AdminAPIUnavailable,
    AmbiguousMutation,
    Forbidden,
    GraphQLError,
    Throttled,
    Unauthorized,
)
from shopify_client.shops import shop_origin

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 60.0
_EXCERPT = 300


@dataclass(frozen=True)
class ThrottleStatus:
    """``extensions.cost.throttleStatus``: the shop's leaky bucket as Shopify last reported it."""

    maximum_available: float
    currently_available: float
    restore_rate: float


@dataclass(frozen=True)
class CallCost:
    """One answered call, for usage tracking (``api_usage``).

    ``requested``/``actual`` are Shopify's requestedQueryCost/actualQueryCost (actual is None
    when throttled); a 429 carries no cost at all (both None, ``throttled`` True).
    """

    shop: str
    operation: str
    requested: int | None
    actual: int | None
    throttle_status: ThrottleStatus | None
    throttled: bool


class ThrottleTracker:
    """What we last heard of each shop's bucket, shared by every client in the process.

    The bucket belongs to the app and shop, not to one client object, so all clients share one
    tracker (``SHARED_THROTTLE``) unless given their own. Between answers it estimates the
    level from the restore rate, and books each call's cost (the operation's last requested
    cost) so that threads of this process do not all spend the same points.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[ThrottleStatus, float]] = {}
        self._costs: dict[str, int] = {}

    def observe(
        self, shop: str, operation: str, requested: int | None, status: ThrottleStatus
    ) -> None:
        with self._lock:
            self._buckets[shop] = (status, self._clock())
            if requested is not None:
                self._costs[operation] = requested

    def reserve(self, shop: str, operation: str) -> float:
        """Seconds to wait before ``operation`` can run on ``shop``; books its cost."""
        with self._lock:
            bucket = self._buckets.get(shop)
            cost = self._costs.get(operation)
            if bucket is None or cost is None:
                return 0.0
            status, seen_at = bucket
            if status.restore_rate <= 0 or cost > status.maximum_available:
                return 0.0  # nothing to gain by waiting; Shopify will say so
            now = self._clock()
            level = min(
                status.maximum_available,
                status.currently_available + status.restore_rate * (now - seen_at),
            )
            wait = max(0.0, (cost - level) / status.restore_rate)
            # The call goes at now + wait, when level + rate × wait is there, and takes `cost`.
            booked = replace(status, currently_available=level + status.restore_rate * wait - cost)
            self._buckets[shop] = (booked, now + wait)
            return wait

    def forget(self, shop: str) -> None:
        with self._lock:
            self._buckets.pop(shop, None)


SHARED_THROTTLE = ThrottleTracker()


@dataclass(frozen=True)
class _Retry:
    """An attempt that changed nothing on Shopify's side and may be repeated after ``wait``."""

    wait: float
    reason: str
    exhausted: type[AdminAPIError]
    status: int | None = None


class AdminClient:
    """Admin GraphQL calls for one shop.

    ``query``/``mutate`` return the response's ``data``. They raise (``shopify_client.errors``):
    ``GraphQLError`` (GraphQL errors other than THROTTLED), ``Throttled`` and
    ``AdminAPIUnavailable`` (retries used up), ``AmbiguousMutation`` (``mutate`` only: the
    mutation may have been applied), ``Unauthorized`` (401 after the one refresh, or 401 with no
    ``refresh_access_token``), ``Forbidden`` (403), ``AdminAPIError`` (any other status).
    Mutation ``userErrors`` are data, returned as Shopify sent them.

    ``refresh_access_token()`` returns a new access token; it must persist the new pair itself
    (this client only keeps the access token for its own later calls). ``on_cost`` must be
    quick; its failures are logged, never raised, so that bookkeeping cannot turn an applied
    mutation into an error.
    ``max_attempts`` counts HTTP requests per call; the retry after a refresh is extra.
    """

    def __init__(
        self,
        shop_domain: str,
        access_token: str,
        *,
        api_version: str,
        admin_origin_template: str,
        timeout: float = 10.0,
        max_attempts: int = 5,
        on_cost: Callable[[CallCost], None] | None = None,
        refresh_access_token: Callable[[], str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        throttle: ThrottleTracker | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        origin = shop_origin(shop_domain, admin_origin_template)
        try:
            version = shopify.ApiVersion.coerce_to_version(api_version)
        except (shopify.VersionNotFoundError, TypeError) as error:
            raise ValueError(f"not an Admin API version: {api_version!r}") from error
        self.shop = shop_domain
        self.api_version = str(version.name)
        self.endpoint = version.api_path(origin) + "/graphql.json"
        self._access_token = access_token
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._on_cost = on_cost
        self._refresh_access_token = refresh_access_token
        self._sleep = sleep
        self._throttle = throttle if throttle is not None else SHARED_THROTTLE

    def query(
        self, document: Document, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run a query; retried on THROTTLED, 429, 5xx and network failures."""
        if document.kind != "query":
            raise ValueError(f"{document.operation} is a mutation: use mutate()")
        return self._call(document, variables or {}, mutation=False)

    def mutate(self, document: Document, variables: Mapping[str, Any]) -> dict[str, Any]:
        """Run a mutation; retried only when Shopify certainly did not apply it."""
        if document.kind != "mutation":
            raise ValueError(f"{document.operation} is a query: use query()")
        return self._call(document, variables, mutation=True)

    # --- the retry loop ------------------------------------------------------------------

    def _call(
        self, document: Document, variables: Mapping[str, Any], *, mutation: bool
    ) -> dict[str, Any]:
        refreshed = False
        for attempt in range(1, self._max_attempts + 1):
            if attempt == 1:  # a retry has just waited what Shopify asked for
                self._pace(document)
            outcome = self._attempt(document, variables, mutation=mutation, attempt=attempt)
            if isinstance(outcome, _Retry) and outcome.status == 401 and not refreshed:
                refreshed = True
                self._access_token = self._refreshed_token(document)
                outcome = self._attempt(document, variables, mutation=mutation, attempt=attempt)
            if not isinstance(outcome, _Retry):
                return outcome
            if outcome.status == 401:
                raise Unauthorized(
                    "401 after refreshing the access token",
                    shop=self.shop,
                    operation=document.operation,
                    status=401,
                )
            if attempt == self._max_attempts:
                raise outcome.exhausted(
                    f"gave up after {attempt} attempts: {outcome.reason}",
                    shop=self.shop,
                    operation=document.operation,
                    status=outcome.status,
                )
            log.info(
                "shopify %s %s: %s, retrying in %.1f s",
                self.shop,
                document.operation,
                outcome.reason,
                outcome.wait,
            )
            if outcome.reason in ("THROTTLED", "429"):
                metrics.throttle_wait(outcome.reason.lower(), outcome.wait)
            self._sleep(outcome.wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _refreshed_token(self, document: Document) -> str:
        if self._refresh_access_token is None:
            raise Unauthorized(
                "401 and no way to refresh the access token",
                shop=self.shop,
                operation=document.operation,
                status=401,
            )
        log.info("shopify %s %s: 401, refreshing the access token", self.shop, document.operation)
        return self._refresh_access_token()

    def _pace(self, document: Document) -> None:
        wait = self._throttle.reserve(self.shop, document.operation)
        if wait > 0:
            log.info("shopify %s %s: pacing %.2f s", self.shop, document.operation, wait)
            metrics.throttle_wait("pace", wait)
            self._sleep(wait)

    def _attempt(
        self, document: Document, variables: Mapping[str, Any], *, mutation: bool, attempt: int
    ) -> dict[str, Any] | _Retry:
        """One HTTP request: the data, a _Retry (nothing was applied), or an exception."""
        backoff = min(2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        try:
            answer = self._send(document, variables)
        except _http.NotSent as failure:
            return _Retry(backoff, f"not sent ({failure})", AdminAPIUnavailable)
        except _http.NoAnswer as failure:
            if mutation:
                raise self._ambiguous(document, variables, f"no answer ({failure})") from failure
            return _Retry(backoff, f"no answer ({failure})", AdminAPIUnavailable)

        status = answer.status
        if status == 401:
            return _Retry(0.0, "401", Unauthorized, status=401)
        if status == 429:
            self._report(document, None, throttled=True)
            return _Retry(
                answer.retry_after(cap=MAX_RETRY_AFTER_SECONDS), "429", Throttled, status=429
            )
        if status >= 500:
            if mutation:
                raise self._ambiguous(document, variables, f"HTTP {status}", status=status)
            return _Retry(backoff, f"HTTP {status}", AdminAPIUnavailable, status=status)
        if status == 403:
            raise Forbidden(
                _excerpt(answer.body), shop=self.shop, operation=document.operation, status=403
            )
        if status != 200:
            raise AdminAPIError(
                f"HTTP {status}: {_excerpt(answer.body)}",
                shop=self.shop,
                operation=document.operation,
                status=status,
            )
        try:
            payload = json.loads(answer.body)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if mutation:
                raise self._ambiguous(
                    document, variables, "unreadable 200 answer", status=200
                ) from None
            return _Retry(backoff, "unreadable 200 answer", AdminAPIUnavailable, status=200)
        return self._read(document, variables, payload, mutation=mutation, backoff=backoff)

    def _read(
        self,
        document: Document,
        variables: Mapping[str, Any],
        payload: dict[str, Any],
        *,
        mutation: bool,
        backoff: float,
    ) -> dict[str, Any] | _Retry:
        errors = payload.get("errors") or []
        if not isinstance(errors, list):
            errors = [{"message": str(errors)}]
        codes = {_error_code(error) for error in errors}
        throttled = "THROTTLED" in codes
        cost = _cost(payload)
        self._report(document, cost, throttled=throttled)
        if throttled:
            return self._throttled(document, cost)
        if "INTERNAL_SERVER_ERROR" in codes:
            if mutation:
                raise self._ambiguous(document, variables, "INTERNAL_SERVER_ERROR", status=200)
            return _Retry(backoff, "INTERNAL_SERVER_ERROR", AdminAPIUnavailable, status=200)
        data = payload.get("data")
        if errors:
            raise GraphQLError(
                shop=self.shop,
                operation=document.operation,
                errors=[
                    error if isinstance(error, dict) else {"message": str(error)}
                    for error in errors
                ],
                data=data if isinstance(data, dict) else None,
            )
        if not isinstance(data, dict):
            raise AdminAPIError(
                "a 200 answer without data",
                shop=self.shop,
                operation=document.operation,
                status=200,
            )
        return data

    def _throttled(self, document: Document, cost: _Cost | None) -> _Retry:
        """Wait until the bucket holds the requested cost: ceil(missing / restore rate), ≥ 1 s."""
        wait = 1.0
        if cost is not None and cost.status is not None and cost.requested is not None:
            status = cost.status
            if cost.requested > status.maximum_available:
                raise Throttled(
                    f"requested cost {cost.requested} exceeds the bucket "
                    f"({status.maximum_available:g}): the query must ask for less",
                    shop=self.shop,
                    operation=document.operation,
                    status=200,
                )
            if status.restore_rate > 0:
                missing = cost.requested - status.currently_available
                wait = max(1.0, float(math.ceil(missing / status.restore_rate)))
        return _Retry(wait, "THROTTLED", Throttled, status=200)

    def _ambiguous(
        self,
        document: Document,
        variables: Mapping[str, Any],
        cause: str,
        status: int | None = None,
    ) -> AmbiguousMutation:
        log.warning("shopify %s %s: %s, outcome unknown", self.shop, document.operation, cause)
        return AmbiguousMutation(
            f"{cause}: it may or may not have been applied; reconcile before repeating it",
            shop=self.shop,
            operation=document.operation,
            variables=variables,
            cause=cause,
            status=status,
        )

    # --- reporting -----------------------------------------------------------------------

    def _report(self, document: Document, cost: _Cost | None, *, throttled: bool) -> None:
        if cost is not None and cost.status is not None:
            self._throttle.observe(self.shop, document.operation, cost.requested, cost.status)
        if self._on_cost is None:
            return
        record = CallCost(
            shop=self.shop,
            operation=document.operation,
            requested=cost.requested if cost else None,
            actual=cost.actual if cost else None,
            throttle_status=cost.status if cost else None,
            throttled=throttled,
        )
        try:
            self._on_cost(record)
        except Exception:
            log.exception("shopify %s %s: on_cost failed", self.shop, document.operation)

    # --- the HTTP request, through ShopifyAPI ----------------------------------------------

    def _send(self, document: Document, variables: Mapping[str, Any]) -> _http.HTTPAnswer:
        with _session_for(self.shop, self.api_version, self._access_token):
            graphql = _TimedGraphQL(self.endpoint, self._timeout)
            return graphql.execute(document.text, dict(variables), document.operation)


@contextmanager
def _session_for(shop: str, api_version: str, access_token: str) -> Iterator[None]:
    """``shopify.Session.temp``, made exception-safe and leaving nothing behind.

    ShopifyAPI keeps the active session per thread (site, token header), so no other thread
    sees it. But 12.7.0's ``temp`` restores the previous session only when its block does not
    raise (no try/finally), and "restores" an absent one as a session for ``https://None``.
    Clearing in ``finally`` leaves the thread with no session whatever happened.
    """
    try:
        with shopify.Session.temp(shop, api_version, access_token):
            yield
    finally:
        shopify.ShopifyResource.clear_session()


class _TimedGraphQL(shopify.GraphQL):
    """``shopify.GraphQL`` with our endpoint and timeout, answering every status, never printing."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        super().__init__()  # takes the active session's headers (token, User-Agent)
        self.endpoint = endpoint
        self.timeout = timeout

    def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> _http.HTTPAnswer:
        headers = self.merge_headers(
            {"Accept": "application/json", "Content-Type": "application/json"}, self.headers
        )
        body = json.dumps(
            {"query": query, "variables": variables or {}, "operationName": operation_name},
            default=_json_value,
        ).encode()
        return _http.post(self.endpoint, body, headers, self.timeout)


def _json_value(value: object) -> str:
    """Variables may carry Decimal amounts and aware datetimes; both travel as strings."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no meaning for Shopify; give it a timezone")
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} as a GraphQL variable")


@dataclass(frozen=True)
class _Cost:
    requested: int | None
    actual: int | None
    status: ThrottleStatus | None


def _cost(payload: Mapping[str, Any]) -> _Cost | None:
    extensions = payload.get("extensions")
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    if not isinstance(cost, dict):
        return None
    throttle = cost.get("throttleStatus")
    status = None
    if isinstance(throttle, dict):
        numbers = [
            _number(throttle.get(key))
            for key in ("maximumAvailable", "currentlyAvailable", "restoreRate")
        ]
        if all(number is not None for number in numbers):
            maximum, current, rate = (float(number or 0) for number in numbers)
            status = ThrottleStatus(maximum, current, rate)
    return _Cost(
        requested=_whole(cost.get("requestedQueryCost")),
        actual=_whole(cost.get("actualQueryCost")),
        status=status,
    )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _whole(value: object) -> int | None:
    number = _number(value)
    return None if number is None else math.ceil(number)


def _error_code(error: object) -> str | None:
    if not isinstance(error, dict):
        return None
    extensions = error.get("extensions")
    code = extensions.get("code") if isinstance(extensions, dict) else None
    return code if isinstance(code, str) else None


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"
