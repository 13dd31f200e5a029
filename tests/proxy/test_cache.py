"""The balance cache: hits, invalidation after commit (and not after rollback), the stale-set
race at both levels, Redis down or absent, shop states, the listener reconnecting.

Real Redis (REDIS_URL) and PostgreSQL. "Behind the ledger's back" below means a raw UPDATE the
ledger's invalidation hook cannot see: if the answer does not change, it came from a cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from extensions import db
from ledger import store
from ledger.book import Actor
from ledger.kinds import LotSource
from models import Shop
from storefront.cache import BalanceCache, CachedBalances, balance_key, generation_key
from storefront.wiring import current_storefront
from tests.proxy.conftest import storefront_configured
from tests.proxy.helpers import balance_url

CUSTOMER = 7408348290


@pytest.fixture
def cache(app_context: Flask, redis_url: str) -> BalanceCache:
    found = current_storefront().cache
    assert found is not None, "the test app has REDIS_URL: its storefront caches"
    assert found.wait_until_listening(), "the listener did not subscribe"
    return found


@pytest.fixture
def other_process(redis_url: str):
    """A second cache on the same Redis, as another gunicorn worker would have."""
    caches: list[BalanceCache] = []

    def make() -> BalanceCache:
        other = BalanceCache(redis_url, ttl=120, local_ttl=30)
        caches.append(other)
        return other

    yield make
    for other in caches:
        other.close()


def amount(client: FlaskClient, shop: Shop, customer: int = CUSTOMER) -> str | None:
    response = client.get(balance_url(shop.domain, customer))
    assert response.status_code == 200, response.get_data(as_text=True)
    balances = response.get_json()["balances"]
    return balances[0]["amount"] if balances else None


def behind_the_ledgers_back(shop: Shop, remaining: int) -> None:
    db.session.execute(
        text("UPDATE credit_lots SET remaining = :r WHERE shop_id = :s"),
        {"r": remaining, "s": shop.id},
    )
    db.session.commit()


def until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


# -- hits and invalidation ------------------------------------------------------------------


def test_repeat_lookups_come_from_the_cache_and_a_ledger_write_invalidates(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"
    behind_the_ledgers_back(shop, 100)
    assert amount(client, shop) == "5.00"  # cached
    credit(shop, CUSTOMER, "2.00")  # commit -> invalidation
    assert amount(client, shop) == "3.00"  # the database's truth: 1.00 + 2.00


def test_the_in_process_copy_needs_no_redis_round_trip(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache, redis_client: redis.Redis
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"
    key = (shop.id, CUSTOMER)
    assert cache.local.balances.get(key, time.monotonic()) is not None
    redis_client.delete(balance_key(key))  # only the in-process copy is left
    behind_the_ledgers_back(shop, 100)
    assert amount(client, shop) == "5.00"
    credit(shop, CUSTOMER, "1.00")
    assert amount(client, shop) == "2.00"


def test_a_write_evicts_the_copy_of_every_other_process(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache, other_process
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"  # Redis holds it now
    worker = other_process()
    assert worker.wait_until_listening()
    key = (shop.id, CUSTOMER)
    unused = CachedBalances(json=b"[]", valid_until=None)
    assert worker.balances(key, time.time(), lambda: unused).json != b"[]"  # from Redis
    assert worker.local.balances.get(key, time.monotonic()) is not None
    credit(shop, CUSTOMER, "1.00")
    assert until(lambda: worker.local.balances.get(key, time.monotonic()) is None)


def test_a_rolled_back_write_neither_invalidates_nor_poisons(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache, redis_client: redis.Redis
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"
    key = (shop.id, CUSTOMER)
    generation = redis_client.get(generation_key(key))
    assert generation is not None

    write_without_committing(shop, "9.99")
    db.session.rollback()

    assert redis_client.get(generation_key(key)) == generation
    assert cache.local.balances.get(key, time.monotonic()) is not None
    assert amount(client, shop) == "5.00"  # still cached, and still the truth


def test_a_committed_write_by_the_same_path_invalidates(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache, redis_client: redis.Redis
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"
    generation = redis_client.get(generation_key((shop.id, CUSTOMER)))
    write_without_committing(shop, "1.00")
    db.session.commit()
    assert redis_client.get(generation_key((shop.id, CUSTOMER))) != generation
    assert amount(client, shop) == "6.00"


def test_a_savepoint_rolled_back_keeps_the_transactions_note(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"
    write_without_committing(shop, "1.00")
    db.session.begin_nested().rollback()  # undoes nothing of the write above
    db.session.commit()
    assert amount(client, shop) == "6.00"


def write_without_committing(shop: Shop, amount_text: str) -> None:
    """An issue written through the ledger's store, left for the caller to end."""
    from ledger.accounts import find_account
    from ledger.kinds import EntryKind
    from ledger.money import parse_amount

    session = db.session()
    by = Actor(shop.id, datetime.now(UTC), "staff:test", "uncommitted")
    account_id = find_account(session, shop.id, CUSTOMER, "USD")
    assert account_id is not None
    account = store.lock_account(session, account_id)
    assert account is not None
    book = store.open_book(session, account)
    minor = parse_amount(amount_text, "USD")
    lot = book.open_lot(by, minor, source=LotSource.MANUAL, expires_at=None, note=None)
    book.post(by, EntryKind.ISSUE, minor, lot_id=lot.id)
    store.write_book(session, book, by.now)
    assert (shop.id, CUSTOMER) in store.touched_customers(session)


# -- the stale-set race ---------------------------------------------------------------------


def test_a_reader_that_read_before_a_commit_cannot_store_the_old_value_in_redis(
    redis_url: str, other_process
):
    reader, writer, third = other_process(), other_process(), other_process()
    key = (10**9 + int(time.time() * 1000) % 10**6, CUSTOMER)  # a key no shop uses
    old = CachedBalances(json=b'[{"old":1}]', valid_until=None)
    new = CachedBalances(json=b'[{"new":1}]', valid_until=None)

    def read_then_writer_commits() -> CachedBalances:
        writer.invalidate([key])  # the writer commits and invalidates while we hold old data
        return old

    assert reader.balances(key, time.time(), read_then_writer_commits) is old
    # The late value sits in Redis under a dead generation: nobody is served it.
    assert third.balances(key, time.time(), lambda: new) is new


def test_a_reader_that_read_before_a_commit_cannot_store_the_old_value_in_process(
    other_process,
):
    reader, writer = other_process(), other_process()
    assert reader.wait_until_listening()
    key = (10**9 + 7, CUSTOMER)
    old = CachedBalances(json=b'[{"old":1}]', valid_until=None)
    new = CachedBalances(json=b'[{"new":1}]', valid_until=None)

    def read_then_writer_commits() -> CachedBalances:
        epoch = reader.local.epoch
        writer.invalidate([key])
        assert until(lambda: reader.local.epoch != epoch)  # the message reached the reader
        return old

    reader.balances(key, time.time(), read_then_writer_commits)
    assert reader.local.balances.get(key, time.monotonic()) is None
    assert reader.balances(key, time.time(), lambda: new) is new


# -- time, shops, failures ------------------------------------------------------------------


def test_a_cached_answer_ends_when_a_lot_expires(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache
):
    dies = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0) + timedelta(seconds=1)
    credit(shop, CUSTOMER, "4.00", expires_at=dies)
    credit(shop, CUSTOMER, "1.00")
    assert amount(client, shop) == "5.00"
    time.sleep(max(0.0, (dies - datetime.now(UTC)).total_seconds()) + 0.05)
    assert amount(client, shop) == "1.00"  # no write happened: the cache knew when to stop


def test_an_uninstall_through_the_orm_stops_answers_at_once(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"
    assert cache.local.shops.get(shop.domain, time.monotonic()) is not None  # state cached
    shop.uninstalled_at = datetime.now(UTC)
    db.session.commit()
    assert client.get(balance_url(shop.domain, CUSTOMER)).status_code == 404


def test_an_orm_bulk_update_of_shops_drops_every_cached_shop(
    client: FlaskClient, shop: Shop, other_shop: Shop, cache: BalanceCache
):
    from sqlalchemy import update

    assert client.get(balance_url(shop.domain, CUSTOMER)).status_code == 200
    assert client.get(balance_url(other_shop.domain, CUSTOMER)).status_code == 200
    db.session.execute(update(Shop).where(Shop.id == shop.id).values(erased_at=datetime.now(UTC)))
    db.session.commit()
    assert cache.local.shops.get(other_shop.domain, time.monotonic()) is None
    assert client.get(balance_url(shop.domain, CUSTOMER)).status_code == 404


def test_listener_losing_its_connection_clears_and_resubscribes(
    client: FlaskClient, shop: Shop, credit, cache: BalanceCache, redis_client: redis.Redis
):
    credit(shop, CUSTOMER, "5.00")
    assert amount(client, shop) == "5.00"
    key = (shop.id, CUSTOMER)
    assert cache.local.balances.get(key, time.monotonic()) is not None
    redis_client.client_kill_filter(_type="pubsub")  # messages sent meanwhile would be lost
    assert until(lambda: cache.local.balances.get(key, time.monotonic()) is None)
    assert cache.wait_until_listening()
    assert amount(client, shop) == "5.00"


def test_redis_down_still_answers_from_the_database(
    client: FlaskClient, shop: Shop, credit, app_context: Flask, caplog
):
    credit(shop, CUSTOMER, "5.00")
    caplog.set_level(logging.WARNING, logger="storefront")
    with storefront_configured(app_context, redis_url="redis://127.0.0.1:1/0") as storefront:
        assert amount(client, shop) == "5.00"
        credit(shop, CUSTOMER, "1.00")  # the invalidation fails: logged, the write stands
        assert amount(client, shop) == "6.00"
        assert storefront.cache is not None
        assert storefront.cache.pending == 1
    assert "Redis" in caplog.text


def test_without_redis_nothing_is_cached(
    client: FlaskClient, shop: Shop, credit, app_context: Flask
):
    credit(shop, CUSTOMER, "5.00")
    with storefront_configured(app_context, redis_url=None) as storefront:
        assert storefront.cache is None
        assert amount(client, shop) == "5.00"
        behind_the_ledgers_back(shop, 100)
        assert amount(client, shop) == "1.00"


def test_invalidations_that_failed_are_sent_when_redis_answers(other_process, redis_client):
    cache = other_process()
    assert cache.wait_until_listening()
    key = (10**9 + 11, CUSTOMER)
    redis_client.set(generation_key(key), b"before")
    redis_client.execute_command("CLIENT", "PAUSE", 1500, "WRITE")  # writes time out meanwhile
    try:
        cache.invalidate([key])
        assert cache.pending == 1
        assert redis_client.get(generation_key(key)) == b"before"
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    assert until(lambda: cache.pending == 0, timeout=6)  # the listener sent it
    assert redis_client.get(generation_key(key)) != b"before"
