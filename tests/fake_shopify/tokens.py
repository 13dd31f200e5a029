"""``POST /admin/oauth/access_token`` as Shopify answers it (shopify-platform.md §1.3, §1.5-§1.6).

- token exchange: the id_token (App Bridge session token) must be an HS256 JWT signed with the
  app's secret, for our ``aud``, naming this shop in ``dest`` (and ``iss``), within 10 s leeway;
  ``expiring=1`` gives an expiring offline token (3600 s) with a ``shprt_`` refresh token (90 d),
  otherwise a non-expiring offline token ``{access_token, scope}``; online tokens on request;
- refresh: single use; each use returns a new access token AND a new refresh token. A used
  refresh token answers ``invalid_grant``, except an immediate retry (within
  ``REFRESH_RETRY_WINDOW`` of its use, while its replacement is still unused), which gets the same
  result again, as Shopify does for a client that lost the response;
- only one refreshable token per shop: issuing a new one retires the older refresh tokens at once
  (their access tokens keep working until they expire);
- authorization code: single use;
- a wrong client id or secret answers 401 ``invalid_client``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

ACCESS_TOKEN_LIFETIME = timedelta(seconds=3600)
ONLINE_TOKEN_LIFETIME = timedelta(seconds=86399)
REFRESH_TOKEN_LIFETIME = timedelta(seconds=7_776_000)
REFRESH_RETRY_WINDOW = timedelta(seconds=10)
CODE_LIFETIME = timedelta(minutes=10)
SESSION_TOKEN_LEEWAY = 10

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE = "urn:shopify:params:oauth:token-type:offline-access-token"
ONLINE = "urn:shopify:params:oauth:token-type:online-access-token"


@dataclass(eq=False)
class AccessToken:
    value: str
    shop: str
    scope: str
    expires_at: datetime | None  # None: non-expiring offline token
    revoked: bool = False

    def valid(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


@dataclass(eq=False)
class RefreshToken:
    value: str
    shop: str
    expires_at: datetime
    retired: bool = False  # a newer grant replaced it
    used_at: datetime | None = None
    answer: dict[str, Any] | None = None  # what its use returned (for the retry window)
    replacement: RefreshToken | None = None


class TokenError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.body = {"error": error, "error_description": description}


class TokenAuthority:
    """Tokens of every shop of one fake app. Callers hold the fake's lock."""

    def __init__(self, api_key: str, api_secret: str, clock: Callable[[], datetime]) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.clock = clock
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.codes: dict[str, tuple[str, datetime]] = {}

    # ------------------------------------------------------------------ requests
    def grant(self, shop: str, scope: str, form: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a token request (raises TokenError for the error responses)."""
        if not form.get("client_id") or not form.get("client_secret"):
            raise TokenError(400, "invalid_request", "client_id and client_secret are required")
        same_key = secrets.compare_digest(str(form["client_id"]), self.api_key)
        same_secret = secrets.compare_digest(str(form["client_secret"]), self.api_secret)
        if not (same_key and same_secret):
            raise TokenError(401, "invalid_client", "Client credentials are invalid")
        grant_type = form.get("grant_type") or "authorization_code"
        if grant_type == TOKEN_EXCHANGE:
            return self._exchange(shop, scope, form)
        if grant_type == "refresh_token":
            return self._refresh(shop, scope, str(form.get("refresh_token") or ""))
        if grant_type == "authorization_code":
            return self._authorization_code(shop, scope, form)
        raise TokenError(400, "unsupported_grant_type", f"grant_type {grant_type!r}")

    def _exchange(self, shop: str, scope: str, form: Mapping[str, Any]) -> dict[str, Any]:
        if form.get("subject_token_type") != ID_TOKEN:
            raise TokenError(400, "invalid_request", "subject_token_type must be the id_token")
        claims = self._verify_session_token(shop, str(form.get("subject_token") or ""))
        requested = form.get("requested_token_type") or OFFLINE
        if requested == ONLINE:
            return self._online(shop, scope, claims)
        if requested != OFFLINE:
            raise TokenError(400, "invalid_request", f"requested_token_type {requested!r}")
        return self.issue(shop, scope, expiring=_truthy(form.get("expiring")))

    def _verify_session_token(self, shop: str, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self.api_secret,
                algorithms=["HS256"],
                audience=self.api_key,
                leeway=SESSION_TOKEN_LEEWAY,
                options={"require": ["iss", "dest", "aud", "sub", "exp", "nbf", "iat"]},
            )
        except jwt.PyJWTError as error:
            raise TokenError(400, "invalid_subject_token", str(error)) from None
        if claims["dest"] != f"https://{shop}" or claims["iss"] != f"https://{shop}/admin":
            raise TokenError(400, "invalid_subject_token", "the token names another shop")
        return claims

    def _online(self, shop: str, scope: str, claims: Mapping[str, Any]) -> dict[str, Any]:
        token = self._new_access(shop, scope, self.clock() + ONLINE_TOKEN_LIFETIME, "shpua_")
        return {
            "access_token": token.value,
            "scope": scope,
            "expires_in": int(ONLINE_TOKEN_LIFETIME.total_seconds()),
            "associated_user_scope": scope,
            "associated_user": {
                "id": int(claims["sub"]) if str(claims["sub"]).isdigit() else claims["sub"],
                "first_name": "Staff",
                "last_name": "Member",
                "email": f"staff@{shop}",
                "email_verified": True,
                "account_owner": True,
                "locale": "en",
                "collaborator": False,
            },
            "session": claims.get("sid"),
        }

    def _refresh(self, shop: str, scope: str, value: str) -> dict[str, Any]:
        now = self.clock()
        token = self.refresh.get(value)
        if token is None or token.shop != shop or token.expires_at <= now:
            raise TokenError(400, "invalid_grant", "The refresh token is invalid or expired")
        if token.used_at is not None:
            if self._retry_allowed(token, now):
                assert token.answer is not None
                return token.answer
            raise TokenError(400, "invalid_grant", "The refresh token was already used")
        if token.retired:
            raise TokenError(400, "invalid_grant", "The refresh token was revoked")
        answer = self.issue(shop, scope, expiring=True)
        token.used_at = now
        token.answer = answer
        token.replacement = self.refresh[answer["refresh_token"]]
        return answer

    @staticmethod
    def _retry_allowed(token: RefreshToken, now: datetime) -> bool:
        assert token.used_at is not None
        replacement = token.replacement
        return (
            now - token.used_at <= REFRESH_RETRY_WINDOW
            and replacement is not None
            and replacement.used_at is None
            and not replacement.retired
        )

    def _authorization_code(self, shop: str, scope: str, form: Mapping[str, Any]) -> dict[str, Any]:
        code = str(form.get("code") or "")
        issued = self.codes.pop(code, None)
        if issued is None or issued[0] != shop or self.clock() - issued[1] > CODE_LIFETIME:
            raise TokenError(
                400,
                "invalid_request",
                "The authorization code was not found or was already used",
            )
        return self.issue(shop, scope, expiring=_truthy(form.get("expiring")))

    # ------------------------------------------------------------------ issuing
    def issue(self, shop: str, scope: str, *, expiring: bool) -> dict[str, Any]:
        """A new offline token (and refresh token when expiring), retiring older refresh tokens."""
        for older in self.refresh.values():
            if older.shop == shop:
                older.retired = True
        if not expiring:
            return {"access_token": self._new_access(shop, scope, None).value, "scope": scope}
        now = self.clock()
        access = self._new_access(shop, scope, now + ACCESS_TOKEN_LIFETIME)
        refresh = RefreshToken("shprt_" + secrets.token_hex(16), shop, now + REFRESH_TOKEN_LIFETIME)
        self.refresh[refresh.value] = refresh
        return {
            "access_token": access.value,
            "scope": scope,
            "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "refresh_token": refresh.value,
            "refresh_token_expires_in": int(REFRESH_TOKEN_LIFETIME.total_seconds()),
        }

    def _new_access(
        self, shop: str, scope: str, expires_at: datetime | None, prefix: str = "shpat_"
    ) -> AccessToken:
        token = AccessToken(prefix + secrets.token_hex(16), shop, scope, expires_at)
        self.access[token.value] = token
        return token

    def new_code(self, shop: str) -> str:
        code = secrets.token_hex(16)
        self.codes[code] = (shop, self.clock())
        return code

    def authenticate(self, shop: str, value: str | None) -> AccessToken | None:
        token = self.access.get(value or "")
        if token is None or token.shop != shop or not token.valid(self.clock()):
            return None
        return token

    def expire_access_tokens(self, shop: str) -> None:
        for token in self.access.values():
            if token.shop == shop:
                token.revoked = True


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true")
