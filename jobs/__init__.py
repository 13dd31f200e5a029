"""Background jobs: plain functions taking ids and primitives, idempotent, safe to run twice.

They run inside an app context (the worker pushes one; inline runs use the caller's) and
call the domain with ``db.session`` and the current time.
"""
