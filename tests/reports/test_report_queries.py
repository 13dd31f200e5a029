"""Every statement the reports send to ledger_entries can be answered from
ix_ledger_entries_shop_created, the (shop_id, created_at) index.

The test's ledger is a few dozen rows, where a sequential scan is rightly cheapest, so the
plans are asked for with sequential scans priced out (``enable_seqscan = off``): the planner
then still scans the table only when no index fits the statement's conditions, e.g. a
predicate wrapped in a function, a missing shop filter, or a time condition it cannot use.
How fast the index makes them on a million entries is bench/pages.py's to show.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from ledger import reports
from tests.reports.history import NOW, at, build_history


@pytest.fixture
def statements(session: Any) -> list[tuple[str, Any]]:
    """What the reports sent to the database, with their parameters, for the history's shop."""
    history = build_history(session)
    engine = session.connection().engine
    sent: list[tuple[str, Any]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        shop = history.shop_a
        start = at("2026-10-01 04:00")
        # as_of near the end (current balances minus later entries) and near the start (the
        # history summed forward): both sides of an instant.
        for as_of in (NOW, at("2026-09-02 00:00")):
            reports.liability_report(session, shop, as_of=as_of, start=start, end=NOW)
        reports.roll_forward(session, shop, at("2026-09-02 00:00"), at("2026-09-03 00:00"))
        reports.breakage(session, shop, start - timedelta(days=60), NOW)
        reports.dashboard(session, shop, NOW)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def test_report_statements_on_ledger_entries_range_scan_its_shop_and_time_index(
    session, statements
):
    connection = session.connection()
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    reading = [(sql, params) for sql, params in statements if "ledger_entries" in sql]
    assert len(reading) >= 10
    for sql, params in reading:
        plan = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar_one()
        nodes = list(_nodes(plan[0]["Plan"]))
        on_table = [n for n in nodes if n.get("Relation Name") == "ledger_entries"]
        assert all(n["Node Type"] in INDEXED for n in on_table), (sql, on_table)
        by_index = [n for n in nodes if n.get("Index Name") == INDEX]
        assert by_index, sql
        endpoints = "min(ledger_entries.created_at)" in sql  # one row from each end
        for node in by_index:
            # A range of one shop's times, not the whole index read and filtered.
            condition = node.get("Index Cond", "")
            assert "shop_id =" in condition, (sql, node)
            assert endpoints or "created_at" in condition, (sql, node)


INDEX = "ix_ledger_entries_shop_created"
INDEXED = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)
