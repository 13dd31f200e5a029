"""static/app.js is plain JavaScript a browser runs as is (no build step): it must parse."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

APP_JS = Path(__file__).resolve().parents[2] / "static" / "app.js"


@pytest.mark.smoke
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_app_js_parses():
    checked = subprocess.run(
        ["node", "--check", str(APP_JS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
