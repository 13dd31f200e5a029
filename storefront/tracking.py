"""After a commit, tell the storefront caches whose answers changed; after a rollback, forget.

Two notes gather during a transaction, in ``session.info``:

* customers whose accounts the ledger wrote (``ledger.store.TOUCHED_CUSTOMERS``, kept by
  ``write_book`` itself, since on PostgreSQL that write is one raw statement the ORM never
  sees);
* shops changed through the ORM (a flushed ``Shop``, or an ORM ``update()``/``delete()`` on
  shops, which names no rows and so drops every cached shop state).

Only the outermost transaction counts: a savepoint's commit is not a commit, and a savepoint's
rollback keeps what the enclosing transaction wrote (an extra invalidation costs a cache miss;
a missing one would serve a stale balance). The listeners are installed once per process on
SQLAlchemy's ``Session`` class, so every session (Flask's scoped one, a job's, a test's) is
covered; ``notify`` says where to send the news (the app's storefront, see wiring.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from ledger.store import TOUCHED_CUSTOMERS
from models import Shop

TOUCHED_SHOPS = "storefront.touched_shops"
ALL_SHOPS = "*"

Notify = Callable[[set[tuple[int, int]], set[str]], None]
_notify: list[Notify] = []


def install(notify: Notify) -> None:
    """Route committed changes to ``notify(customers, shops)``; the listeners install once."""
    _notify[:] = [notify]
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "do_orm_execute", _on_orm_execute)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)


def _touched_shops(session: Session) -> set[str]:
    touched: set[str] = session.info.setdefault(TOUCHED_SHOPS, set())
    return touched


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    # new / dirty / deleted still show what this flush wrote.
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Shop) and obj.domain:
            _touched_shops(session).add(obj.domain)


def _on_orm_execute(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(
        mapper.class_ is Shop for mapper in state.all_mappers
    ):
        _touched_shops(state.session).add(ALL_SHOPS)


def _after_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: the real commit comes later
    customers: set[tuple[int, int]] = session.info.pop(TOUCHED_CUSTOMERS, set())
    shops: set[str] = session.info.pop(TOUCHED_SHOPS, set())
    if (customers or shops) and _notify:
        _notify[0](customers, shops)


def _after_rollback(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # only the savepoint's work is undone; the transaction's notes still hold
    info: dict[str, Any] = session.info
    info.pop(TOUCHED_CUSTOMERS, None)
    info.pop(TOUCHED_SHOPS, None)
