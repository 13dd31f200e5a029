"""Tests of the JSON API under /api and its Shopify session-token authentication."""
