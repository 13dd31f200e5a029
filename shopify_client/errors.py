"""Typed failures of the Admin API client and the token endpoint.

Callers branch on the class, never on message text. Messages carry at most an excerpt of
Shopify's answer and never a token or secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ShopifyClientError(Exception):
    """Base class of everything this package raises on purpose."""


class InvalidShopDomain(ShopifyClientError, ValueError):
    """The shop is not ``<name>.myshopify.com``: no request is built for it (no SSRF)."""


# --- Admin API (GraphQL) -------------------------------------------------------------------


class AdminAPIError(ShopifyClientError):
    """An Admin API call failed; ``status`` is the HTTP status when there was an answer."""

    def __init__(self, message: str, *, shop: str, operation: str, status: int | None = None):
        super().__init__(f"{shop} {operation}: {message}")
        self.shop = shop
        self.operation = operation
        self.status = status


class Unauthorized(AdminAPIError):
    """401 with no way to refresh the token, or again after the one refresh."""


class Forbidden(AdminAPIError):
    """403: a scope is missing (or an online user lacks the permission)."""


class Throttled(AdminAPIError):
    """Still throttled (THROTTLED or 429) after every attempt, or the query can never fit the
    bucket (requested cost above maximumAvailable)."""


class AdminAPIUnavailable(AdminAPIError):
    """5xx or network failure on every attempt of a query (or a mutation that was never sent)."""


class AmbiguousMutation(AdminAPIError):
    """A mutation was sent and no verdict came back (timeout, dropped connection, 5xx,
    INTERNAL_SERVER_ERROR): Shopify may or may not have applied it.

    It is never retried here: the caller reads the current state (reconciles) and decides.
    ``variables`` is what was sent; ``cause`` is what went wrong.
    """

    def __init__(
        self,
        message: str,
        *,
        shop: str,
        operation: str,
        variables: Mapping[str, Any],
        cause: str,
        status: int | None = None,
    ):
        super().__init__(message, shop=shop, operation=operation, status=status)
        self.variables = dict(variables)
        self.cause = cause


class GraphQLError(AdminAPIError):
    """The answer carried GraphQL ``errors`` (other than THROTTLED).

    ``errors`` is Shopify's list as given; ``data`` whatever partial data came with it
    (fields denied for protected customer data come back null beside an error).
    """

    def __init__(
        self,
        *,
        shop: str,
        operation: str,
        errors: Sequence[Mapping[str, Any]],
        data: Mapping[str, Any] | None,
    ):
        self.errors = [dict(error) for error in errors]
        self.messages = [str(error.get("message", "")) for error in self.errors]
        self.codes = [_code(error) for error in self.errors]
        self.data = dict(data) if data is not None else None
        super().__init__(
            "; ".join(self.messages) or "GraphQL errors", shop=shop, operation=operation
        )


def _code(error: Mapping[str, Any]) -> str | None:
    extensions = error.get("extensions")
    if isinstance(extensions, Mapping) and isinstance(extensions.get("code"), str):
        return str(extensions["code"])
    return None


# --- Token endpoint (OAuth) ----------------------------------------------------------------


class OAuthError(ShopifyClientError):
    """The token endpoint refused or could not be reached; ``error`` is Shopify's code."""

    def __init__(self, message: str, *, shop: str, status: int | None, error: str | None):
        super().__init__(f"{shop}: {message}")
        self.shop = shop
        self.status = status
        self.error = error


class InvalidSubjectToken(OAuthError):
    """Token exchange: the session token (id_token) is invalid or expired; get a fresh one."""


class InvalidGrant(OAuthError):
    """The refresh token or authorization code is invalid, used, expired or revoked: the
    merchant must open the app again (which runs token exchange)."""


class InvalidClient(OAuthError):
    """Wrong client id/secret, or the app is not installed on the shop."""


class TokenRequestRejected(OAuthError):
    """Any other refusal (``invalid_request``, unexpected 4xx)."""


class TokenEndpointUnavailable(OAuthError):
    """429, 5xx or network failure on every attempt."""
