"""The RQ worker's side: work horses that count into their worker's metric files, a log line
with the duration of every job, and an optional ``/metrics`` port for the worker process.

Jobs run in forked work horses, so what they count (webhook lag and outcomes, native-sync
attempts, throttle waits, job durations) lives in the horse's memory and dies with it, unless
``PROMETHEUS_MULTIPROC_DIR`` is set: then horses write to that directory under their worker's
identity (``observability.metrics.become_work_horse``) and ``WORKER_METRICS_PORT`` serves the
sum. The web's /metrics serves the queue depths; this port serves what the jobs did.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from rq import Worker

from config import ConfigError, Settings
from observability import metrics

log = logging.getLogger("creditcraft.jobs")


class ObservedWorker(Worker):
    """RQ's forking worker; each horse counts under the worker's identity and logs its job."""

    def main_work_horse(self, job: Any, queue: Any) -> None:
        metrics.become_work_horse()
        super().main_work_horse(job, queue)

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        started = time.perf_counter()
        ok: bool = super().perform_job(job, queue, execution)
        seconds = time.perf_counter() - started
        outcome = "ok" if ok else "failed"
        metrics.JOB_DURATION.labels(queue.name, outcome).observe(seconds)
        log.log(
            logging.INFO if ok else logging.WARNING,
            "job %s %s in %.0f ms",
            job.func_name,
            outcome,
            seconds * 1000,
            extra={
                "job_id": job.id,
                "queue": queue.name,
                "outcome": outcome,
                "duration_ms": round(seconds * 1000, 1),
            },
        )
        return ok


def serve_worker_metrics(settings: Settings) -> None:
    """Serve the jobs' metrics on WORKER_METRICS_PORT (a daemon thread), if it is set."""
    port = settings.worker_metrics_port
    if port is None:
        return
    directory = metrics.multiprocess_dir()
    if directory is None:  # load_settings refuses this too; a hand-built Settings may not
        raise ConfigError("config: WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    start_http_server(port, registry=registry)
    log.info("worker metrics on port %d", port)
