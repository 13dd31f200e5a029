"""This process's id, without a system call on every request: refreshed in a child after fork.

The cache listener and the rate-limit sync are threads, and threads do not survive a fork
(gunicorn forks its workers): each checks on use whether it runs in the process that started
it, and starts again if not.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def current_pid() -> int:
    return _pid


def _refresh() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh)
