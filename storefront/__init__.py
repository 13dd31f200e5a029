"""Storefront look-ups through Shopify's App Proxy: verification, caching, rate limits.

Flask-free except ``wiring.py``; the HTTP route is ``blueprints/proxy.py`` and the database
query ``ledger/storefront.py``. The module docstrings of ``cache.py`` and ``ratelimit.py`` say
how a look-up avoids a round trip and what staleness is possible.
"""
