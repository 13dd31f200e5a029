"""Load-testing a served app the way bench/storefront.py and bench/webhooks.py do: gunicorn with
the production gunicorn.conf.py on a free loopback port, wrk driving it, and one side's figures
(req/s, merged latency quantiles, failures) from wrk's own report.

Each bench writes its own wrk Lua ``request`` function; ``run_wrk`` appends ``WRK_REPORT_LUA``,
whose ``done`` prints one ``BENCH {json}`` line, and reads that line back.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench._common import API_SECRET, ROOT
from config import DEVELOPMENT_FERNET_KEY

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
WARMUP_SECONDS = 3

# wrk keeps no raw samples: report 201 points of the latency curve (every half percent, then
# 99.5 and 99.9) so that runs can be merged, weighted by their request counts (Side.quantile).
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local points = {}
  for p = 1, 199 do points[#points + 1] = latency:percentile(p / 2) end
  for _, p in ipairs({99.5, 99.9}) do points[#points + 1] = latency:percentile(p) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"socket_errors":%d,"non_2xx":%d,' ..
    '"p50":%d,"p99":%d,"points":[%s]}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), table.concat(points, ",")))
end
"""

SIDES_HEADER = f"{'':18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'failed':>7}"


# -- one side's figures -----------------------------------------------------------------------


@dataclass
class Side:
    """The wrk runs of one side (the app, or its bare baseline), as ``run_wrk`` returned them."""

    name: str
    runs: list[dict[str, object]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(int(r["requests"]) for r in self.runs)  # type: ignore[call-overload]

    @property
    def seconds(self) -> float:
        return sum(int(r["duration_us"]) for r in self.runs) / 1e6  # type: ignore[call-overload]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def failures(self) -> int:
        return sum(int(r["socket_errors"]) + int(r["non_2xx"]) for r in self.runs)  # type: ignore[call-overload]

    def quantile(self, q: float) -> float:
        """Latency quantile (ms) over all runs: each run's percentile curve, weighted by its
        request count (wrk keeps no raw samples to merge)."""
        weighted: list[tuple[float, float]] = []
        for run in self.runs:
            points = run["points"]
            assert isinstance(points, list)
            weight = int(run["requests"]) / len(points)  # type: ignore[call-overload]
            weighted += [(float(p) / 1000, weight) for p in points]
        weighted.sort()
        total = sum(w for _, w in weighted)
        seen = 0.0
        for value, weight in weighted:
            seen += weight
            if seen >= q * total:
                return value
        return weighted[-1][0]

    def row(self) -> str:
        """This side's line under SIDES_HEADER."""
        return (
            f"{self.name:18} {self.rate:9,.0f} {self.quantile(0.5):8.2f} "
            f"{self.quantile(0.99):8.2f} {self.requests:9,d} {self.failures:7d}"
        )


# -- gunicorn -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def production_env(url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """This environment plus what the app needs to start with CREDITCRAFT_ENV=production."""
    return (
        dict(os.environ)
        | {
            "CREDITCRAFT_ENV": "production",
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "SHOPIFY_API_KEY": "bench-api-key",
            "SHOPIFY_API_SECRET": API_SECRET,
            "TOKEN_ENCRYPTION_KEYS": DEVELOPMENT_FERNET_KEY,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
        }
        | extra
    )


def describe_gunicorn(env: dict[str, str]) -> str:
    """Workers x threads as gunicorn.conf.py will choose them from ``env``."""
    workers = env.get("WEB_CONCURRENCY") or f"{(os.cpu_count() or 1) * 2 + 1}"
    return f"{workers} workers x {env.get('GUNICORN_THREADS', '4')} threads (gthread)"


class Gunicorn:
    """``app`` (a WSGI spec such as ``app:create_app()``) served by gunicorn with the
    production gunicorn.conf.py on a free loopback port; its output goes to ``logs/NAME.log``.
    Started at once (so that two servers boot side by side), stopped on leaving ``with``.
    """

    def __init__(self, name: str, app: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), app],
            cwd=ROOT,
            env=env | {"GUNICORN_BIND": f"127.0.0.1:{self.port}"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The master's: its children are the workers."""
        return self.process.pid

    def wait_ready(self, path: str, timeout: float = 180) -> None:
        """Until GET ``path`` answers 200 (a loaded 2-core machine boots ten workers slowly);
        on failure, print the log's tail and exit."""
        url = self.base + path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        print(self.log_path.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"{self.name} did not come up on {url}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# -- wrk ------------------------------------------------------------------------------------


def ensure_wrk(bench: str) -> str:
    """wrk's path; installed with apt-get when missing and this is root on Debian/Ubuntu."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"{bench} needs wrk: apt-get install wrk")
    print("installing wrk with apt-get ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, **quiet)  # type: ignore[call-overload]
    subprocess.run(  # type: ignore[call-overload]
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], env=env, **quiet
    )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk still missing after apt-get install")
    return found


def run_wrk(
    binary: str,
    request_lua: str,
    script: Path,
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
) -> dict[str, object]:
    """One wrk run against ``url`` sending what ``request_lua`` makes (written with
    WRK_REPORT_LUA to ``script``): its BENCH report."""
    script.write_text(request_lua + WRK_REPORT_LUA)
    command = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("BENCH "))
    result: dict[str, object] = json.loads(line[len("BENCH ") :])
    return result
