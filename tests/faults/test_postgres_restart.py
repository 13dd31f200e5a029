"""PostgreSQL restarted in the middle of an expiry job: the job fails, RQ retries it, and the
ledger comes out whole — every lot expired exactly once, every account verifying.

The cluster is the test's own (initdb in a temp dir, migrated by ``flask db upgrade``), so
``pg_ctl restart -m fast`` cuts only this test's connections. The job runs in a real
``flask worker`` (not burst: RQ's scheduler brings the retry back after its interval). Its
Retry here is short (1 s, 2 s, 4 s) where the schedule's is minutes; that is the only change.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from jobs.credits import expire_credits
from ledger.verify import verify_account
from models import CreditAccount
from tests import factories
from tests.factories import ShopFactory
from tests.faults.conftest import flask_command, start_worker, stop, wait_for, worker_env
from tests.ledger.bulk_lots import seed_due_lots
from tests.ledger.test_expiry_batches import shop_totals

ACCOUNTS, LOTS_PER_ACCOUNT = 2000, 5
LOTS = ACCOUNTS * LOTS_PER_ACCOUNT
JOB_ID = "faults-expire-credits"


def test_postgres_restarted_mid_expiry_the_job_retries_and_every_invariant_holds(
    own_postgres, own_redis, tmp_path
):
    env = worker_env(own_postgres.url, own_redis.url, "http://127.0.0.1:9/{shop}")
    migrated = flask_command(env, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    engine = create_engine(own_postgres.url, poolclass=NullPool)
    try:
        now = datetime.now(UTC)
        shop_id = _seeded_shop(engine, now)
        log = tmp_path / "worker.log"
        with Redis.from_url(own_redis.url) as connection:
            Queue("default", connection=connection).enqueue_call(
                expire_credits,
                kwargs={"shop_id": shop_id, "now_iso": now.isoformat()},
                job_id=JOB_ID,
                retry=Retry(max=3, interval=[1, 2, 4]),
            )
            worker = start_worker(env, log, burst=False)
            try:
                expired_before = _restart_mid_run(own_postgres, engine, shop_id, worker)
                assert 0 < expired_before < LOTS, "the restart missed the run"
                job = Job.fetch(JOB_ID, connection=connection)
                finished = wait_for(lambda: job.get_status(refresh=True) == "finished", 120)
                assert finished, log.read_text()
            finally:
                stop(worker)
            assert job.retries_left is not None
            assert job.retries_left < 3, log.read_text()
        assert "OperationalError" in log.read_text()  # it did fail, and was retried

        with Session(engine) as check:
            totals = shop_totals(check, shop_id)
            assert totals["expire_entries"] == totals["lots_expired_by_entries"] == LOTS
            assert totals["entries"] == 2 * LOTS  # an issue and one expire per lot, no more
            assert totals["statuses"] == {"expired": LOTS}
            assert totals["accounts_off"] == 0
            accounts = check.scalars(
                select(CreditAccount.id).where(CreditAccount.shop_id == shop_id)
            ).all()
            assert len(accounts) == ACCOUNTS
            for account_id in accounts:
                assert verify_account(check, account_id) == [], account_id
    finally:
        engine.dispose()


def _seeded_shop(engine, now: datetime) -> int:
    with Session(engine, expire_on_commit=False) as setup:
        factories.bind(setup)
        shop_id = int(ShopFactory().id)
        setup.commit()
    seed_due_lots(
        engine,
        shop_id,
        accounts=ACCOUNTS,
        lots_per_account=LOTS_PER_ACCOUNT,
        issued_at=now - timedelta(days=60),
        first_due=now - timedelta(days=2),
        spread=timedelta(hours=12),
        seed=shop_id,
    )
    return shop_id


def _restart_mid_run(cluster, engine, shop_id: int, worker) -> int:
    """Restart the cluster once the run has committed a batch; the lots expired by then."""
    count = text("SELECT count(*) FROM ledger_entries WHERE shop_id = :shop AND kind = 'expire'")
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and worker.poll() is None:
        with engine.connect() as conn:
            done = conn.execute(count, {"shop": shop_id}).scalar_one()
        if done > 0:
            break
        time.sleep(0.01)
    cluster.ctl("restart", "-m", "fast")
    with engine.connect() as conn:
        return int(conn.execute(count, {"shop": shop_id}).scalar_one())
