"""The store-credit domain: money, lots, the append-only ledger and its invariants.

No Flask and no Shopify here (ruff bans the imports): every function takes the session and
the current time as arguments, so the rules are testable with nothing but a database.
"""
