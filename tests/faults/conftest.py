"""Fault tests: real worker processes, a Redis and a PostgreSQL of the test's own to stop.

Everything here commits for real (the worker processes have their own connections, as in
production): each test works in fresh shops, so it leaves nothing another test can see. Servers
a test stops or restarts are its own throwaway ones (free port, temp dir), never the suite's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from blueprints.settings import current_settings
from config import DEFAULT_SCOPES
from models import Shop
from shop_access import install_with_session_token
from tests.conftest import API_KEY, API_SECRET
from tests.fake_shopify import FakeShopify

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- worker processes ------------------------------------------------------------------------------


def worker_env(database_url: str, redis_url: str, shopify_origin: str) -> dict[str, str]:
    """A worker's environment: the test's database and Redis, Shopify at ``shopify_origin``."""
    return os.environ | {
        "CREDITCRAFT_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SHOPIFY_ADMIN_ORIGIN": shopify_origin,
        "SHOPIFY_API_KEY": API_KEY,
        "SHOPIFY_API_SECRET": API_SECRET,
    }


def start_worker(env: dict[str, str], log: Path, *, burst: bool) -> subprocess.Popen[bytes]:
    """``flask worker [--burst]`` in its own process group (its work-horses die with it)."""
    command = [sys.executable, "-m", "flask", "--app", "app:create_app", "worker"]
    if burst:
        command.append("--burst")
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (an RQ work-horse is in a session of its own,
    so killing the worker's process group would miss it)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its work-horses (if it has not ended), horses first."""
    if process.poll() is None:
        for child in children(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


# -- committed shops -------------------------------------------------------------------------------


def install_shop(app: Flask, engine: Engine, fake: FakeShopify, prefix: str) -> tuple[int, str]:
    """A fresh shop in the fake, installed by token exchange and committed; (id, domain)."""
    domain = f"{prefix}-{uuid.uuid4().hex[:10]}.myshopify.com"
    fake.scopes = tuple(DEFAULT_SCOPES.split(","))
    fake.add_shop(domain, restore_rate=1000.0)
    with app.app_context(), Session(engine) as setup:
        shop: Shop = install_with_session_token(
            setup, current_settings(), domain, fake.session_token(domain), datetime.now(UTC)
        )
        return int(shop.id), domain


# -- a Redis of the test's own -------------------------------------------------------------------


@dataclass
class OwnRedis:
    """A throwaway redis-server the test may stop and start again (same port, same dir)."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                   "--save", "", "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
        with (self.directory / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        assert wait_for(self.answers, 10), (self.directory / "redis.log").read_text()

    def answers(self) -> bool:
        with Redis(port=self.port, socket_connect_timeout=0.2) as probe:
            try:
                return bool(probe.ping())
            except (OSError, RedisError):
                return False

    def shutdown(self) -> None:
        """SHUTDOWN NOSAVE: Redis goes away with everything it held."""
        assert self.process is not None
        # redis-py reports the connection Redis dropped on its way out as an error
        with Redis(port=self.port) as client, contextlib.suppress(RedisError):
            client.shutdown(nosave=True)
        self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/with-services.sh installs it)")
    directory = Path(tempfile.mkdtemp(prefix="creditcraft-redis-"))
    server = OwnRedis(directory, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


# -- a PostgreSQL cluster of the test's own --------------------------------------------------------


@dataclass
class OwnPostgres:
    """A throwaway PostgreSQL cluster (initdb in a temp dir) the test may restart."""

    bin_dir: Path
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/creditcraft_faults"

    def run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if IS_ROOT:  # initdb refuses root: run the tools as postgres, as with-services.sh does
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.directory, capture_output=True, check=False)
        assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")

    def ctl(self, action: str, *args: str) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "pg.log"),
                 "-w", "-t", "60", "-o", options, *args, action)  # fmt: skip

    def log(self) -> str:
        path = self.directory / "pg.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    bin_dir = os.environ.get("PG_BIN_DIR")
    if not bin_dir:
        pytest.skip("PG_BIN_DIR is not set (scripts/with-services.sh exports it)")
    directory = Path(tempfile.mkdtemp(prefix="creditcraft-pg-"))
    if IS_ROOT:
        shutil.chown(directory, "postgres", "postgres")
    cluster = OwnPostgres(Path(bin_dir), directory, free_port())
    started = False
    try:
        cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
        cluster.ctl("start")
        started = True
        cluster.run("createdb", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                    "creditcraft_faults")  # fmt: skip
        yield cluster
    finally:
        if started:
            cluster.ctl("stop", "-m", "immediate")
        shutil.rmtree(directory, ignore_errors=True)


def flask_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flask", "--app", "app:create_app", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
