"""gunicorn.conf.py: knobs from the environment, and an access log that never holds a query
string (App Proxy URLs carry signatures and customer ids) — checked on a real gunicorn."""

from __future__ import annotations

import http.client
import os
import re
import runpy
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "gunicorn.conf.py"


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name in ("GUNICORN_BIND", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONFIG))


def test_defaults(monkeypatch):
    config = load(monkeypatch)
    assert config["bind"] == ["0.0.0.0:8000"]
    assert config["workers"] == (os.cpu_count() or 1) * 2 + 1
    assert config["worker_class"] == "gthread"
    assert config["threads"] == 4
    assert config["keepalive"] > 60  # longer than a load balancer's idle timeout
    assert config["worker_tmp_dir"] == "/dev/shm"
    assert config["preload_app"] is False
    assert config["control_socket_disable"] is True


def test_environment_wins(monkeypatch):
    config = load(monkeypatch, PORT="9100", WEB_CONCURRENCY="3", GUNICORN_THREADS="8")
    assert config["bind"] == ["0.0.0.0:9100"]
    assert (config["workers"], config["threads"]) == (3, 8)
    config = load(monkeypatch, GUNICORN_BIND="unix:/run/creditcraft.sock", PORT="9100")
    assert config["bind"] == ["unix:/run/creditcraft.sock"]


def test_access_log_names_no_query_string(monkeypatch):
    fmt = load(monkeypatch)["access_log_format"]
    assert "%(U)s" in fmt
    for leaks in ("%(r)s", "%(q)s", "%(f)s", "%(u)s"):
        assert leaks not in fmt


def test_a_real_gunicorn_logs_paths_without_queries(tmp_path):
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    env = os.environ | {
        "CREDITCRAFT_ENV": "development",
        "GUNICORN_BIND": "127.0.0.1:0",  # the kernel picks; the error log says which
        "WEB_CONCURRENCY": "1",
        "GUNICORN_ACCESS_LOG": str(access),
        "GUNICORN_ERROR_LOG": str(errors),
    }
    env.pop("REDIS_URL", None)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", str(CONFIG), "app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        answered = _get_when_up(
            server, errors, "/healthz?signature=deadbeef&logged_in_customer_id=42"
        )
        assert answered == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Control socket" not in errors.read_text()  # off: one fixed path per user
    logged = access.read_text()
    assert '"GET /healthz HTTP/1.1" 200' in logged
    assert "deadbeef" not in logged
    assert "logged_in_customer_id" not in logged


def _get_when_up(server: subprocess.Popen, errors: Path, path: str) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, errors.read_text() if errors.exists() else "no error log"
        found = re.search(r"Listening at: http://([0-9.]+:[0-9]+)", _read(errors))
        booted = "Booting worker" in _read(errors)
        if found and booted:
            try:
                with urllib.request.urlopen(f"http://{found[1]}{path}", timeout=5) as answer:
                    return int(answer.status)
            except (OSError, http.client.HTTPException):
                pass  # the worker is still loading the app
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not answer: {_read(errors)}")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
