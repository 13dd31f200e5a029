"""The Admin API client: the only code in CreditCraft that talks to Shopify's Admin API.

GraphQL only (REST is legacy for new public apps), through ShopifyAPI (module ``shopify``),
which nothing else in the app imports. ``graphql.AdminClient`` runs the documents named in
``documents``; ``oauth`` gets and refreshes access tokens; ``ids`` builds and reads GIDs.
"""

from shopify_client.documents import Document
from shopify_client.errors import (
    AdminAPIError,
    AdminAPIUnavailable,
    AmbiguousMutation,
    Forbidden,
    GraphQLError,
    InvalidClient,
    InvalidGrant,
    InvalidShopDomain,
    InvalidSubjectToken,
    OAuthError,
    ShopifyClientError,
    Throttled,
    TokenEndpointUnavailable,
    TokenRequestRejected,
    Unauthorized,
)
from shopify_client.graphql import AdminClient, CallCost, ThrottleStatus, ThrottleTracker
from shopify_client.oauth import TokenSet

__all__ = [
    "AdminAPIError",
    "AdminAPIUnavailable",
    "AdminClient",
    "AmbiguousMutation",
    "CallCost",
    "Document",
    "Forbidden",
    "GraphQLError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidShopDomain",
    "InvalidSubjectToken",
    "OAuthError",
    "ShopifyClientError",
    "ThrottleStatus",
    "ThrottleTracker",
    "Throttled",
    "TokenEndpointUnavailable",
    "TokenRequestRejected",
    "TokenSet",
    "Unauthorized",
]
