"""Streamed CSV downloads (the ledger, the audit log, a bulk import's result).

A streamed body is produced after the view has returned, when Flask has already ended the
request: Flask-SQLAlchemy removed the request's session and tenancy.py forgot the request's
shop. A generator built in the view on ``current_session()`` therefore ran in a session nothing
owned any more: it began a transaction no teardown would end, so its pooled connection stayed
checked out "idle in transaction" until the garbage collector found the session (whether the
client read the download to its end or aborted it; twenty downloads exhausted the pool), and,
the shop forgotten, row-level security showed the web's role no row at all (a header-only file).

So the rows are produced inside the stream, in the request's contexts again
(``stream_with_context``), for the request's shop, from a session the stream opens itself and
removes when it ends: finished, failed, or closed early by the server because the client went
away (``close()`` → ``GeneratorExit`` → the ``finally`` below). The domain's generators close
their server-side cursors the same way (ledger/export.py, ledger/audit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flask import Response, stream_with_context
from sqlalchemy.orm import Session

import tenancy
from extensions import current_session, db

# Makes the CSV text, a chunk at a time, from the session it is given.
RowsOf = Callable[[Session], Iterator[str]]


def csv_download(filename: str, rows_of: RowsOf) -> Response:
    """A ``text/csv`` attachment streamed from ``rows_of``, run when the body is read, for the
    shop the request works for. Never cached: exports hold customers' and staff's data.

    ``rows_of`` runs after the request's session is gone: give it plain values (ids), not the
    request's ORM objects.
    """
    stream = _rows_for_shop(tenancy.current_shop_id(), rows_of)
    response = Response(stream_with_context(stream), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _rows_for_shop(shop_id: int | None, rows_of: RowsOf) -> Iterator[str]:
    with tenancy.shop(shop_id):
        # The request's session was removed when the view returned, so this one is the
        # stream's own, unless an app context outlives the request (tests run requests in
        # theirs): that session belongs to whoever pushed the context, and stays theirs.
        owned = not db.session.registry.has()
        session = current_session()
        try:
            yield from rows_of(session)  # closing the stream closes the rows' generator first
        finally:
            if owned:
                db.session.remove()  # rolls back: the connection goes back to the pool now
