"""The domain stays Flask-free and Shopify-free, and nothing does I/O at import time."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.smoke
def test_ledger_imports_neither_flask_nor_shopify():
    code = (
        "import sys, ledger.operations, ledger.expiry, ledger.verify, ledger.queries;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'flask_sqlalchemy', 'shopify', 'rq'});"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ledger pulled in: {done.stdout}{done.stderr}"


@pytest.mark.smoke
def test_creating_the_app_opens_no_connection(tmp_path):
    """create_app only wires: pointing it at a database that does not exist must not fail."""
    code = (
        "from app import create_app; from config import load_settings;"
        "create_app(load_settings({'CREDITCRAFT_ENV': 'development', "
        "'DATABASE_URL': 'postgresql://nobody@127.0.0.1:1/none', 'REDIS_URL': 'redis://127.0.0.1:1'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
