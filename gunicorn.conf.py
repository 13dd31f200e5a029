"""Production gunicorn settings: ``gunicorn -c gunicorn.conf.py 'app:create_app()'``.

Every knob reads the environment (names in README's table), with defaults for a small VM
behind a load balancer. bench/storefront.py serves the app and its bare baseline with this
very file.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# Where to listen: GUNICORN_BIND wins (e.g. "unix:/run/creditcraft.sock"), else PORT on all
# interfaces, as container platforms expect.
bind = [os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{_int('PORT', 8000)}"]

# Processes for CPU (the GIL allows one running thread each), threads to overlap the waits on
# PostgreSQL and Redis. WEB_CONCURRENCY is the usual platform variable.
workers = _int("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1)
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)

# Shopify delivers webhooks (and the App Proxy forwards look-ups) over reused connections:
# keep idle ones open longer than the load balancer's idle timeout (AWS ALB: 60 s), so that it
# is always the balancer that closes first and never sends a request into a closing socket.
keepalive = _int("GUNICORN_KEEPALIVE", 75)

# Shopify gives a webhook 5 s; nothing we serve legitimately takes 30. A stuck worker is
# killed and replaced; graceful restarts let in-flight requests finish.
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)

# The heartbeat file lives in memory: on a container's overlay or a slow disk, the fsync-free
# but still disk-backed default can stall workers into false timeouts.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - gunicorn only keeps its heartbeat file here

# No preloading. create_app opens no connection, so preloading would be safe, but it buys
# little here (a second of start-up, some shared pages) and costs the guarantees we rely on:
# each worker builds its own SQLAlchemy pool, Redis clients and cache listener thread after
# the fork, and `kill -HUP` reloads the code without restarting the master.
preload_app = False

# The app writes one JSON access line per request itself (observability/web.py: request id,
# route pattern, status, duration, shop), so gunicorn's own access log is off unless
# GUNICORN_ACCESS_LOG names a file (or "-"). Even then WITHOUT query strings: App Proxy URLs
# carry signatures and customer ids, and OAuth callbacks carry codes. %(U)s is the path alone;
# no referer either (it can carry the same).
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
errorlog = os.environ.get("GUNICORN_ERROR_LOG", "-")
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# gunicorn 25+ opens a control socket at one fixed path per user ($HOME/.gunicorn/gunicorn.ctl):
# two instances on a host (the app and a worker pool, or a bench's two servers) would take
# each other's. Off unless GUNICORN_CONTROL_SOCKET names a path of this instance's own.
_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
if _control_socket:
    control_socket = _control_socket
control_socket_disable = not _control_socket

# Headers and request lines stay within Shopify's sizes; reject anything larger early.
limit_request_line = 8190
limit_request_fields = 100


def post_worker_init(worker: object) -> None:
    """Move everything the app built at start-up out of the cyclic garbage collector's sight.

    The app's imports and models are some 120,000 long-lived objects; every full collection
    walked all of them (about 30-70 ms on this kind of machine, against 10 ms for a bare Flask
    app), a pause any request in flight had to sit out: it showed as the look-ups' p99.
    ``gc.freeze()`` (Python 3.7+) puts them in a permanent generation, never scanned.
    """
    import gc

    from sqlalchemy.orm import configure_mappers

    # SQLAlchemy builds its mappers on first use: do it now, so that the first request does
    # not pay for it and its objects are frozen with the rest.
    configure_mappers()
    gc.freeze()


# -- multiprocess metrics (observability/metrics.py) ------------------------------------------
# With PROMETHEUS_MULTIPROC_DIR set, each worker writes its metrics to files there and /metrics
# adds them up. The directory must be this server's alone (not shared with `flask worker`).


def on_starting(server: object) -> None:
    """Start from an empty directory: files of an earlier run would be counted again. (With
    --preload the master has loaded the app already; its files, all zero, go too.)"""
    import glob

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.db")):
            os.remove(path)


def child_exit(server: object, worker: object) -> None:
    """A worker is gone: its gauges (requests in flight, pool connections) stop counting;
    its counters and histograms stay in the sums, as Prometheus expects of counters."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, directory)  # type: ignore[attr-defined]
