"""What every benchmark under bench/ sets up the same way: the database from the environment,
the app's settings and schema, a shop, CPU time from /proc, and the checks and facts they print.

Import it as ``bench._common`` once the script has put the project root on ``sys.path`` (each
script does that first: run as a script, ``sys.path[0]`` is bench/, whose ledger.py would
shadow the ledger package).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from config import DEVELOPMENT_FERNET_KEY, Settings
from ledger.verify import verify_account
from models import CreditAccount, Shop

ROOT = Path(__file__).resolve().parent.parent
# The Shopify API secret the benches sign with, and the app they start verifies with.
API_SECRET = "bench-api-secret-0123456789abcdef0123456789"


# -- the environment --------------------------------------------------------------------------


def postgres_url() -> str:
    """DATABASE_URL with SQLAlchemy's psycopg (3) driver named; "" unless it is PostgreSQL."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url if url.startswith("postgresql") else ""


def print_load_average(when: str) -> None:
    """The machine's load average: a busy neighbour explains slow figures better than code."""
    load = os.getloadavg()
    print(f"load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)


# -- the app and its schema -------------------------------------------------------------------


def bench_settings(url: str, redis_url: str | None = None) -> Settings:
    """Test-environment settings on the bench's database, with the bench's fixed secrets."""
    return Settings(
        env="test",
        secret_key="bench-secret-key",
        shopify_api_key="bench-api-key",
        shopify_api_secret=API_SECRET,
        token_encryption_keys=(DEVELOPMENT_FERNET_KEY,),
        database_url=url,
        redis_url=redis_url,
    )


def make_app(url: str, redis_url: str | None = None) -> Flask:
    from app import create_app

    return create_app(bench_settings(url, redis_url))


def upgrade_schema(app: Flask) -> None:
    """The schema the real way: Alembic's upgrade through the app's Flask-Migrate."""
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))


def migrate(url: str) -> None:
    """Upgrade the schema with a throwaway app, its engine disposed afterwards."""
    from extensions import db

    app = make_app(url)
    upgrade_schema(app)
    with app.app_context():
        db.engine.dispose()


# -- seeding ----------------------------------------------------------------------------------


def bench_domain(label: str) -> str:
    """A shop domain no earlier run on the same database has used."""
    return f"bench-{label}-{uuid.uuid4().hex[:10]}.myshopify.com"


def insert_shop(engine: Engine, label: str, **fields: Any) -> Shop:
    """A USD shop in UTC, installed now unless ``fields`` say otherwise; returned detached,
    its columns loaded."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "currency": "USD",
        "timezone": "UTC",
        "installed_at": now,
        "created_at": now,
    }
    with Session(engine, expire_on_commit=False) as session:
        shop = Shop(domain=bench_domain(label), **(values | fields))
        session.add(shop)
        session.commit()
        return shop


# -- checks and facts -------------------------------------------------------------------------


def verify_sample(session: Session, shop_id: int, size: int) -> list[str]:
    """``verify_account`` on ``size`` random accounts of the shop: one problem line each."""
    sample = session.scalars(
        select(CreditAccount.id)
        .where(CreditAccount.shop_id == shop_id)
        .order_by(func.random())
        .limit(size)
    ).all()
    problems = []
    for account_id in sample:
        violations = verify_account(session, account_id)
        if violations:
            problems.append(f"account {account_id}: {violations[:2]}")
    return problems


def checkpoint(engine: Engine) -> None:
    """Flush dirty pages between runs so that one run's checkpoint does not land in the next."""
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))


def server_facts(engine: Engine) -> str:
    """PostgreSQL's version and the durability settings that move write figures most."""
    with engine.connect() as conn:
        version = conn.scalar(text("SHOW server_version"))
        settings = {
            name: conn.scalar(text(f"SHOW {name}"))
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        }
    flags = ", ".join(f"{name}={value}" for name, value in settings.items())
    return f"PostgreSQL {version}, {flags}"


# -- CPU time from /proc ----------------------------------------------------------------------
# On a shared machine CPU per unit of work moves far less than wall time or req/s when
# neighbours load it, so the benches print both.

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """A process's parent and CPU ticks, from /proc/PID/stat."""

    pid: int
    ppid: int
    own_ticks: int  # utime + stime
    reaped_ticks: int  # cutime + cstime: children it has waited for

    @classmethod
    def read(cls, pid: int) -> ProcStat | None:
        """None when the process is gone (or not on this machine)."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return cls(
            pid=pid,
            ppid=int(fields[1]),
            own_ticks=int(fields[11]) + int(fields[12]),
            reaped_ticks=int(fields[13]) + int(fields[14]),
        )


def all_processes() -> Iterator[ProcStat]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = ProcStat.read(int(entry))
            if stat is not None:
                yield stat


def children_cpu(parent: int) -> float:
    """CPU seconds (user + system) of the live children of ``parent``: a gunicorn master's
    workers, without the master."""
    ticks = sum(p.own_ticks for p in all_processes() if p.ppid == parent)
    return ticks / TICKS_PER_SECOND


def tree_cpu(root: int, *, reaped: bool = False) -> float:
    """CPU seconds of process ``root`` and its live children; with ``reaped``, also of the
    children ``root`` has already waited for (a postmaster's finished backends)."""
    ticks = 0
    for process in all_processes():
        if process.pid == root:
            ticks += process.own_ticks + (process.reaped_ticks if reaped else 0)
        elif process.ppid == root:
            ticks += process.own_ticks
    return ticks / TICKS_PER_SECOND


def process_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and of the children it has reaped (RQ's work-horses)."""
    stat = ProcStat.read(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return (stat.own_ticks + stat.reaped_ticks) / TICKS_PER_SECOND


def service_pids() -> dict[str, int]:
    """The throwaway PostgreSQL's postmaster and Redis, as scripts/with-services.sh started
    them (their pid files sit in PGHOST_SOCKET_DIR); empty when run some other way."""
    directory = Path(os.environ.get("PGHOST_SOCKET_DIR", "/nonexistent"))
    pids = {}
    for name, pid_file in (("postgres", "pgdata/postmaster.pid"), ("redis", "redis.pid")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids[name] = int((directory / pid_file).read_text().split()[0])
    return pids
