"""The baseline bench/webhooks.py measures against: Flask taking a POSTed body, answering JSON.

Served by gunicorn with the production gunicorn.conf.py, exactly like the real app, and sent
the very same signed deliveries; it reads the body and answers what the intake answers. The
ratio therefore measures what the intake adds: the HMAC, the header and body checks, the
INSERT and the enqueue.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/bare")
def bare() -> Response:
    request.get_data()
    return jsonify(status="recorded")


@app.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")
