"""Tenant isolation: which shop's rows the current unit of work may touch (PostgreSQL).

Migration 0005 puts row-level security on every table with a ``shop_id``: the runtime roles
see and write only rows whose ``shop_id`` is the transaction's ``app.shop_id`` setting, and a
transaction that sets none sees no row at all. This module sets it:

- a context variable holds the current ``Tenancy`` (a shop, and whether the unit of work is a
  cross-shop sweep);
- a Session ``after_begin`` listener runs ``set_config(…, true)`` (transaction-local) at the
  start of every transaction of every Session, so a session that commits and begins again
  keeps its shop; a transaction already open when the shop becomes known gets it at once.

Where the shop becomes known: the web sets it with ``use_shop`` (session-token auth, the
embedded page, the App Proxy, an install) and it is forgotten when the request ends; jobs and
commands enclose their work in ``shop(id)``, or in ``all_shops()`` for the few sweeps that read
every shop. ``all_shops()`` only widens what the *worker* role sees (its policies honour
``app.cross_shop``); the web's role ignores it, so the web can never read across shops.

SQLite (``make run``) has no row-level security: nothing is set there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from flask import Flask, has_app_context
from sqlalchemy import Connection, Select, event, text
from sqlalchemy.orm import Session, SessionTransaction

P = ParamSpec("P")
R = TypeVar("R")

# The settings the policies of migration 0005 read.
SHOP_SETTING = "app.shop_id"
CROSS_SHOP_SETTING = "app.cross_shop"


@dataclass(frozen=True)
class Tenancy:
    """What the current unit of work may see: one shop's rows, and (a worker's sweep) all."""

    shop_id: int | None = None
    cross_shop: bool = False


NOBODY = Tenancy()
_current: ContextVar[Tenancy] = ContextVar("creditcraft_tenancy", default=NOBODY)
# Both settings in one round trip; '' reads as "no shop" in the policies (nullif).
_SET = text(
    "SELECT set_config('app.shop_id', :shop, true), set_config('app.cross_shop', :cross, true)"
)


def current() -> Tenancy:
    return _current.get()


def current_shop_id() -> int | None:
    return _current.get().shop_id


# -- the web: for the rest of the request ----------------------------------------------------


def use_shop(shop_id: int) -> None:
    """The rest of this request works for ``shop_id`` (forgotten when the request ends).

    Applied at once to the request's session if a transaction is already open (the shop was
    just looked up in it), and to every transaction begun afterwards.
    """
    _switch(Tenancy(shop_id=shop_id))


def forget(_error: BaseException | None = None) -> None:
    """Back to no shop (the end of a request, or of an app context)."""
    _current.set(NOBODY)


# -- jobs and commands: for a block ----------------------------------------------------------


@contextmanager
def shop(shop_id: int | None) -> Iterator[None]:
    """Work for ``shop_id`` inside the block (``None``: for no shop, i.e. shop-less rows only).

    Enclose whole transactions: the block's last transaction should be committed or rolled
    back before it ends (a transaction still open keeps the block's setting until it ends).
    """
    with _scoped(Tenancy(shop_id=shop_id)):
        yield


@contextmanager
def all_shops() -> Iterator[None]:
    """A worker's cross-shop sweep: every shop's rows, for the worker role only.

    The current shop stays set, so the web's role (which ignores ``app.cross_shop``) still
    sees its own shop's rows when a job runs inline in a request (no Redis).
    """
    with _scoped(Tenancy(shop_id=_current.get().shop_id, cross_shop=True)):
        yield


def per_shop(job: Callable[Concatenate[int, P], R]) -> Callable[Concatenate[int, P], R]:
    """A job whose first argument is its shop's id runs for that shop (``shop(shop_id)``).

    RQ finds the job by its dotted name, which the wrapper keeps.
    """

    @functools.wraps(job)
    def for_its_shop(shop_id: int, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with shop(shop_id):
            return job(shop_id, *args, **kwargs)

    return for_its_shop


def shop_owning(session: Session, query: Select[Any]) -> int | None:
    """The ``shop_id`` that ``query`` selects, read across shops and committed.

    A job keyed by a row (an outbox entry, a delivery, an import) learns its shop this way,
    then does its work inside ``shop(...)``.
    """
    with all_shops():
        shop_id: int | None = session.execute(query).scalar_one_or_none()
        session.commit()
    return shop_id


@contextmanager
def _scoped(tenancy: Tenancy) -> Iterator[None]:
    token = _current.set(tenancy)
    _apply_to_open_transaction(tenancy)
    try:
        yield
    finally:
        _current.reset(token)


def _switch(tenancy: Tenancy) -> None:
    _current.set(tenancy)
    _apply_to_open_transaction(tenancy)


# -- applying it to transactions -------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Set the shop at every transaction's start; forget a request's shop when it ends."""
    if not event.contains(Session, "after_begin", _on_begin):
        event.listen(Session, "after_begin", _on_begin)
    app.teardown_request(forget)
    app.teardown_appcontext(forget)


def _on_begin(_session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    tenancy = _current.get()
    if tenancy != NOBODY:
        apply(connection, tenancy)


def apply(connection: Connection, tenancy: Tenancy) -> None:
    """Set ``tenancy`` for ``connection``'s current transaction (PostgreSQL only)."""
    if connection.dialect.name != "postgresql":
        return
    shop_id = "" if tenancy.shop_id is None else str(tenancy.shop_id)
    cross = "on" if tenancy.cross_shop else "off"
    connection.execute(_SET, {"shop": shop_id, "cross": cross})


# A webhook delivery names its shop by domain; an unknown domain leaves no shop ('').
_SET_BY_DOMAIN = text(
    "SELECT set_config('app.shop_id', "
    "coalesce((SELECT id::text FROM shops WHERE domain = :domain), ''), true)"
)


def use_shop_of_domain(connection: Connection, domain: str) -> None:
    """Set the shop called ``domain`` for ``connection``'s current transaction, in one
    statement (webhook intake: the shop is only known by its domain, and a look-up first
    would cost a round trip more). PostgreSQL only."""
    if connection.dialect.name == "postgresql":
        connection.execute(_SET_BY_DOMAIN, {"domain": domain})


def _apply_to_open_transaction(tenancy: Tenancy) -> None:
    """The request's or job's session, if it has a transaction open: set it there now."""
    if not has_app_context():
        return
    from extensions import db

    if not db.session.registry.has():
        return
    session = db.session()
    if session.in_transaction():
        apply(session.connection(), tenancy)
