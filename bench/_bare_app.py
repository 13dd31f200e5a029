"""The baseline bench/storefront.py measures against: one Flask JSON route, nothing else.

Served by gunicorn with the production gunicorn.conf.py, exactly like the real app; its
answer has the size and shape of a balance look-up's.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)
app.json.sort_keys = False  # type: ignore[attr-defined]

BODY = {
    "logged_in": True,
    "customer_id": "7408348290",
    "balances": [
        {
            "currency": "USD",
            "amount": "12.50",
            "next_expiry": {"amount": "5.00", "expires_at": "2026-12-31T23:59:59Z"},
        }
    ],
}


@app.get("/bare")
def bare() -> Response:
    return jsonify(BODY)
