"""A fake Shopify for tests: a real HTTP server on loopback that answers as Shopify does for
what CreditCraft calls (server.py), executing GraphQL on Shopify's real Admin schema."""

from tests.fake_shopify.schema import load_admin_schema, validate_document
from tests.fake_shopify.server import FakeShopify, InvalidDocument, RecordedRequest
from tests.fake_shopify.store import FakeShop, StoreCreditError

__all__ = [
    "FakeShop",
    "FakeShopify",
    "InvalidDocument",
    "RecordedRequest",
    "StoreCreditError",
    "load_admin_schema",
    "validate_document",
]
