"""FakeShopify: a real HTTP server on loopback that answers as Shopify does for what CreditCraft
calls, plus the Python API tests use to arrange shops and sign what Shopify would send.

Routes (``origin_template`` = ``http://127.0.0.1:PORT/stores/{shop}``):
- ``POST {origin}/admin/oauth/access_token``: token exchange, refresh, authorization code;
- ``POST {origin}/admin/api/{version}/graphql.json``: the Admin GraphQL API;
- ``GET  {origin}/admin/oauth/authorize``: the grant screen, approved at once (302 to
  ``redirect_uri`` with a code and a signed query, as Shopify redirects after approval).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
import traceback
import uuid
from base64 import b64encode
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from graphql import GraphQLSchema

from tests.fake_shopify import signing
from tests.fake_shopify.faults import Fault, Faults
from tests.fake_shopify.graphql_api import (
    SINGLE_QUERY_MAX_COST,
    CostEstimator,
    Operation,
    cost_extension,
    read_operation,
    run,
    validation_errors,
)
from tests.fake_shopify.schema import load_admin_schema
from tests.fake_shopify.store import FakeShop
from tests.fake_shopify.tokens import TokenAuthority, TokenError

DEFAULT_SCOPES = (
    "read_customers",
    "read_orders",
    "read_store_credit_accounts",
    "read_store_credit_account_transactions",
    "write_store_credit_account_transactions",
)
SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
_ROUTE = re.compile(r"^/stores/(?P<shop>[^/]+)/admin/(?P<rest>.*)$")
_GRAPHQL = re.compile(r"^api/(?P<version>[^/]+)/graphql\.json$")
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


@dataclass
class RecordedRequest:
    """One request the fake received (``status`` None: the response was dropped)."""

    method: str
    path: str
    shop: str | None
    kind: str  # token | graphql | authorize | unknown
    operation_name: str | None = None
    root_fields: tuple[str, ...] = ()
    variables: dict[str, Any] = field(default_factory=dict)
    grant_type: str | None = None
    status: int | None = None
    fault: str | None = None


@dataclass
class InvalidDocument:
    """A GraphQL document Shopify would have refused (syntax or schema validation)."""

    document: str
    operation_name: str | None
    errors: list[str]


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


class FakeShopify:
    def __init__(
        self,
        api_key: str,
        api_secret: str,
        api_version: str = "2026-10",
        *,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.api_version = api_version
        self.scopes = scopes
        self.host = host
        self.schema: GraphQLSchema = load_admin_schema(api_version)
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.invalid_documents: list[InvalidDocument] = []
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeShopify:
        if self._server is not None:
            return self
        server = _Server((self.host, 0), _Handler)
        server.fake = self
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.close_open_connections()
        server.server_close()  # joins the handler threads
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeShopify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every shop, token, fault and record; the server keeps running."""
        with self._lock:
            self._offset = timedelta(0)
            self._ids = itertools.count(1_000_001)
            self.shops: dict[str, FakeShop] = {}
            self.tokens = TokenAuthority(self.api_key, self.api_secret, self.now)
            self.faults.clear()
            self.requests.clear()
            self.invalid_documents.clear()

    # ------------------------------------------------------------------ addressing and time
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Shopify is not started")
        return int(self._server.server_address[1])

    @property
    def origin_template(self) -> str:
        return f"http://{self.host}:{self.port}/stores/{{shop}}"

    def origin(self, shop_domain: str) -> str:
        return self.origin_template.format(shop=shop_domain)

    def graphql_url(self, shop_domain: str, version: str | None = None) -> str:
        return f"{self.origin(shop_domain)}/admin/api/{version or self.api_version}/graphql.json"

    def now(self) -> datetime:
        """Shopify's clock: real time, moved on by ``advance``."""
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta | float) -> None:
        """Move Shopify's clock forward (token and credit expiry), e.g. ``advance(3601)``."""
        with self._lock:
            self._offset += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)

    # ------------------------------------------------------------------ shops
    def add_shop(
        self,
        domain: str,
        currency: str = "USD",
        shop_id: int | None = None,
        restore_rate: float = 100.0,
        maximum_available: float = 2000.0,
        *,
        name: str | None = None,
        iana_timezone: str = "UTC",
        scopes: tuple[str, ...] | None = None,
    ) -> FakeShop:
        if not SHOP_DOMAIN.match(domain):
            raise ValueError(f"{domain!r} is not a myshopify.com domain")
        with self._lock:
            if domain in self.shops:
                raise ValueError(f"shop {domain} already exists")
            shop = FakeShop(
                domain,
                shop_id=shop_id or next(self._ids),
                installation_id=next(self._ids),
                currency=currency,
                name=name or domain.split(".")[0],
                iana_timezone=iana_timezone,
                scopes=scopes or self.scopes,
                restore_rate=restore_rate,
                maximum_available=maximum_available,
                clock=self.now,
                ids=self._ids,
                lock=self._lock,
            )
            self.shops[domain] = shop
            return shop

    def shop(self, domain: str) -> FakeShop:
        try:
            return self.shops[domain]
        except KeyError:
            raise KeyError(f"no fake shop {domain}; add_shop() it first") from None

    # ------------------------------------------------------------------ tokens
    def session_token(self, shop_domain: str, sub: str = "84100001", **claims: object) -> str:
        """An App Bridge id_token for ``shop_domain`` (HS256 with the app's secret, 60 s)."""
        return signing.session_token(shop_domain, self.api_key, self.api_secret, sub, **claims)

    def authorization_code(self, shop_domain: str) -> str:
        """A code the authorization_code grant accepts once (within 10 minutes)."""
        with self._lock:
            return self.tokens.new_code(self.shop(shop_domain).domain)

    def issue_token(self, shop_domain: str, *, expiring: bool = True) -> dict[str, Any]:
        """A token response as the token endpoint would give (no request made)."""
        with self._lock:
            shop = self.shop(shop_domain)
            return self.tokens.issue(shop.domain, ",".join(shop.scopes), expiring=expiring)

    def expire_access_token(self, shop_domain: str) -> None:
        """The shop's access tokens answer 401 from now on (refresh tokens still work)."""
        with self._lock:
            self.tokens.expire_access_tokens(shop_domain)

    # ------------------------------------------------------------------ what Shopify signs
    def signed_webhook(
        self,
        shop_domain: str,
        topic: str,
        payload: dict[str, Any] | bytes,
        *,
        webhook_id: str | None = None,
        event_id: str | None = None,
        api_version: str | None = None,
        secret: str | None = None,
        triggered_at: datetime | str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A webhook delivery: body bytes and headers exactly as Shopify sends them."""
        body = (
            payload
            if isinstance(payload, bytes)
            else json.dumps(payload, separators=(",", ":")).encode()
        )
        moment = triggered_at or self.now()
        if isinstance(moment, datetime):
            moment = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": signing.webhook_hmac(secret or self.api_secret, body),
            "X-Shopify-Shop-Domain": shop_domain,
            "X-Shopify-API-Version": api_version or self.api_version,
            "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
            "X-Shopify-Triggered-At": moment,
        }
        return body, headers

    def signed_proxy_query(
        self,
        shop_domain: str,
        *,
        logged_in_customer_id: str = "",
        path_prefix: str = "/apps/credit",
        timestamp: int | None = None,
        extra: list[tuple[str, str]] | None = None,
        secret: str | None = None,
    ) -> str:
        """The query string the App Proxy adds (signature last); ``timestamp`` defaults to now."""
        params = [
            *(extra or []),
            ("shop", shop_domain),
            ("logged_in_customer_id", str(logged_in_customer_id)),
            ("path_prefix", path_prefix),
            ("timestamp", str(int(time.time()) if timestamp is None else timestamp)),
        ]
        signature = signing.proxy_signature(secret or self.api_secret, params)
        return signing.signed_query(params, "signature", signature)

    def signed_callback_query(
        self,
        shop_domain: str,
        *,
        state: str,
        code: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> str:
        """The OAuth callback query (code, hmac, host, shop, state, timestamp) after approval."""
        handle = shop_domain.split(".")[0]
        host = b64encode(f"admin.shopify.com/store/{handle}".encode()).decode().rstrip("=")
        params = [
            ("code", code or self.authorization_code(shop_domain)),
            ("host", host),
            ("shop", shop_domain),
            ("state", state),
            ("timestamp", str(int(time.time()) if timestamp is None else timestamp)),
        ]
        digest = signing.admin_hmac(secret or self.api_secret, params)
        return urlencode([params[0], ("hmac", digest), *params[1:]])

    # ------------------------------------------------------------------ HTTP
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Reply:
        url = urlsplit(target)
        record = RecordedRequest(method, url.path, None, "unknown")
        try:
            reply = self._route(method, url.path, url.query, headers, body, record)
        except Exception:  # a bug in the fake: say so loudly rather than look like Shopify
            reply = Reply(500, {"errors": "fake Shopify crashed", "trace": traceback.format_exc()})
        record.status = None if reply.drop else reply.status
        with self._lock:
            self.requests.append(record)
        return reply

    def _route(
        self,
        method: str,
        path: str,
        query: str,
        headers: Any,
        body: bytes,
        record: RecordedRequest,
    ) -> Reply:
        match = _ROUTE.match(path)
        if match is None:
            return Reply(404, {"errors": "Not Found"})
        record.shop = match["shop"]
        shop = self.shops.get(match["shop"])
        rest = match["rest"]
        graphql = _GRAPHQL.match(rest)
        if rest == "oauth/access_token":
            record.kind = "token"
        elif rest == "oauth/authorize":
            record.kind = "authorize"
        elif graphql:
            record.kind = "graphql"
        if shop is None or record.kind == "unknown":
            return Reply(404, {"errors": "Not Found"})
        if record.kind == "token":
            return self._token(shop, method, headers, body, record)
        if record.kind == "authorize":
            return self._authorize(shop, method, query)
        assert graphql is not None
        return self._graphql(shop, graphql["version"], method, headers, body, record)

    def _token(
        self, shop: FakeShop, method: str, headers: Any, body: bytes, record: RecordedRequest
    ) -> Reply:
        if method != "POST":
            return Reply(405, {"errors": "Method Not Allowed"})
        fault = self.faults.take({"token"}, graphql=False)
        early = self._early_fault(fault, record, cost=None)
        if early is not None:
            return early
        form = _form(headers, body)
        record.grant_type = str(form.get("grant_type") or "authorization_code")
        try:
            with self._lock:
                reply = Reply(200, self.tokens.grant(shop.domain, ",".join(shop.scopes), form))
        except TokenError as error:
            reply = Reply(error.status, error.body)
        reply.drop = fault is not None and fault.kind == "lost_response"
        return reply

    def _authorize(self, shop: FakeShop, method: str, query: str) -> Reply:
        params = dict(parse_qsl(query, keep_blank_values=True))
        if method != "GET":
            return Reply(405, {"errors": "Method Not Allowed"})
        if params.get("client_id") != self.api_key or not params.get("redirect_uri"):
            return Reply(400, {"errors": "Oauth error invalid_request: client_id or redirect_uri"})
        signed = self.signed_callback_query(shop.domain, state=params.get("state", ""))
        separator = "&" if "?" in params["redirect_uri"] else "?"
        return Reply(302, "", {"Location": params["redirect_uri"] + separator + signed})

    def _graphql(
        self,
        shop: FakeShop,
        version: str,
        method: str,
        headers: Any,
        body: bytes,
        record: RecordedRequest,
    ) -> Reply:
        if method != "POST":
            return Reply(405, {"errors": "Method Not Allowed"})
        request = _graphql_request(headers, body)
        if request is None:
            return Reply(400, {"errors": {"query": "Required parameter missing or invalid"}})
        source, variables, operation_name = request
        operation = read_operation(source, operation_name)
        record.operation_name = operation.name
        record.root_fields = operation.root_fields
        record.variables = variables
        names = {n for n in (operation.name, *operation.root_fields) if n}
        fault = self.faults.take(names, graphql=True)
        cost = (shop, self._requested_cost(operation, variables))
        early = self._early_fault(fault, record, cost=cost)
        if early is not None:
            return early
        with self._lock:
            authorized = self.tokens.authenticate(
                shop.domain, headers.get("X-Shopify-Access-Token")
            )
        if authorized is None:
            return Reply(401, {"errors": INVALID_TOKEN})
        if version != self.api_version:
            served = f"Not Found (the fake serves API version {self.api_version})"
            return Reply(404, {"errors": served})
        reply = self._execute(shop, operation, variables)
        reply.headers["X-Shopify-API-Version"] = version
        reply.drop = fault is not None and fault.kind == "lost_response"
        return reply

    def _execute(self, shop: FakeShop, operation: Operation, variables: dict[str, Any]) -> Reply:
        errors = validation_errors(self.schema, operation)
        if errors:
            with self._lock:
                self.invalid_documents.append(
                    InvalidDocument(
                        operation.source, operation.name, [_describe(error) for error in errors]
                    )
                )
            return Reply(
                200,
                {
                    "errors": [error.formatted for error in errors],
                    "extensions": cost_extension(0, 0, shop.bucket),
                },
            )
        requested = self._requested_cost(operation, variables)
        if requested > SINGLE_QUERY_MAX_COST:
            return Reply(200, _max_cost_body(requested, shop))
        if not shop.bucket.take(requested):
            return Reply(200, _throttled_body(requested, shop))
        with self._lock:
            result = run(self.schema, shop, operation, variables, shop.installation_id)
        result["extensions"] = cost_extension(requested, requested, shop.bucket)
        return Reply(200, result)

    def _requested_cost(self, operation: Operation, variables: dict[str, Any]) -> int:
        if operation.document is None:
            return 0
        return CostEstimator(self.schema, operation, variables).requested()

    def _early_fault(
        self, fault: Fault | None, record: RecordedRequest, cost: tuple[FakeShop, int] | None
    ) -> Reply | None:
        """Faults that answer before any effect (``slow`` only waits)."""
        if fault is None:
            return None
        record.fault = fault.kind
        if fault.kind == "slow":
            time.sleep(fault.delay)
        elif fault.kind == "server_error":
            return Reply(503, {"errors": "Service Unavailable"})
        elif fault.kind == "rate_limited":
            return Reply(
                429,
                {
                    "errors": "Exceeded 2 calls per second for api client. Reduce request rates "
                    "to resume uninterrupted service."
                },
                {"Retry-After": "1"},
            )
        elif fault.kind == "throttled":
            assert cost is not None
            return Reply(200, _throttled_body(cost[1], cost[0]))
        return None


def _throttled_body(requested: int, shop: FakeShop) -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }
        ],
        "extensions": cost_extension(requested, None, shop.bucket),
    }


def _max_cost_body(requested: int, shop: FakeShop) -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": f"Query cost is {requested}, which exceeds the single query max cost "
                f"limit ({SINGLE_QUERY_MAX_COST}).",
                "extensions": {
                    "code": "MAX_COST_EXCEEDED",
                    "cost": requested,
                    "maxCost": SINGLE_QUERY_MAX_COST,
                },
            }
        ],
        "extensions": cost_extension(requested, None, shop.bucket),
    }


def _describe(error: Any) -> str:
    where = ", ".join(f"{loc.line}:{loc.column}" for loc in error.locations or ())
    return f"{error.message} (at {where})" if where else error.message


def _form(headers: Any, body: bytes) -> dict[str, Any]:
    """A token request body: JSON (Node, shopifyapp) or form-encoded (the docs, ShopifyAPI)."""
    if "json" in (headers.get("Content-Type") or ""):
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _graphql_request(headers: Any, body: bytes) -> tuple[str, dict[str, Any], str | None] | None:
    if "application/graphql" in (headers.get("Content-Type") or ""):
        return body.decode("utf-8", "replace"), {}, None
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("query"), str):
        return None
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        return None
    return data["query"], variables, data.get("operationName")


# ---------------------------------------------------------------------- the HTTP server
class _Server(ThreadingHTTPServer):
    """Threaded; keeps track of its connections so ``stop`` can close idle keep-alive ones."""

    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True
    fake: FakeShopify

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Shopify
    server_version = "FakeShopify/1"
    timeout = 30  # an idle keep-alive connection is closed after this
    server: _Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.fake.handle(method, self.path, self.headers, body)
        if reply.drop:
            self.close_connection = True
            return
        payload = (
            reply.body
            if isinstance(reply.body, bytes)
            else (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
        )
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-Id", str(uuid.uuid4()))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fake's requests are in ``fake.requests``."""
