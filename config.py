"""Settings read from the environment once, at start-up.

Production refuses to start without its secrets and names the first one missing; development
(`make run`) and tests get harmless defaults so that they need nothing but Python.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent
ENVIRONMENTS = ("production", "development", "test")
DEFAULT_API_VERSION = "2026-10"
# The scopes shopify.app.toml declares (a test keeps the two equal).
DEFAULT_SCOPES = (
    "read_customers,read_orders,read_store_credit_accounts,"
    "write_store_credit_account_transactions,write_app_proxy"
)
# Development and test defaults only: production refuses to start without its own secrets.
DEVELOPMENT_SECRET = "dev-only-secret-not-for-production-0123456789"  # noqa: S105
DEVELOPMENT_FERNET_KEY = "ZGV2LW9ubHkta2V5LW5vdC1mb3ItcHJvZHVjdGlvbiE="
DEVELOPMENT_ARCHIVE_KEY = "dev-only-archive-signing-key-not-for-production"  # noqa: S105
SQLITE_DEFAULT = f"sqlite:///{PROJECT_ROOT / 'instance' / 'creditcraft.sqlite3'}"
# libpq's sslmode values (https://www.postgresql.org/docs/current/libpq-ssl.html).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(SystemExit):
    """Stops the process with one line naming what is wrong (SystemExit prints it)."""


@dataclass(frozen=True)
class Settings:
    env: str
    secret_key: str
    shopify_api_key: str
    shopify_api_secret: str
    token_encryption_keys: tuple[str, ...]
    shopify_api_secret_previous: str | None = None
    shopify_api_version: str = DEFAULT_API_VERSION
    shopify_scopes: str = DEFAULT_SCOPES
    shopify_admin_origin: str = "https://{shop}"
    app_url: str = "http://127.0.0.1:8000"
    database_url: str = SQLITE_DEFAULT
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_pool_timeout: int = 10
    db_sslmode: str | None = None
    db_sslrootcert: str | None = None  # CA file that verify-ca / verify-full check against
    db_pool_recycle: int = 1800  # seconds; below the server's or a proxy's idle cut-off
    db_connect_timeout: int = 5  # seconds; also bounds /readyz when the database is away
    # Per transaction of a web request (SET LOCAL); jobs and the CLI run without it. 0 = off.
    web_statement_timeout_ms: int = 5000
    redis_url: str | None = None
    slow_query_ms: int = 200
    log_format: str = "json"  # "json" (one object per line) or "text"
    log_level: str = "INFO"
    worker_metrics_port: int | None = None  # `flask worker` serves its jobs' metrics there
    idempotency_key_ttl_hours: int = 48
    # Retention (ledger/archive.py): the schedule archives entries older than this many days
    # (None: never by itself); the checkpoints' HMAC secrets, newest first (rotation).
    ledger_retention_days: int | None = None
    archive_signing_keys: tuple[str, ...] = ()
    # Storefront balance look-ups (App Proxy): limits per minute, and cache lifetimes.
    proxy_rate_limit_per_ip: int = 120
    proxy_rate_limit_per_shop: int = 6000
    storefront_cache_ttl: int = 120
    storefront_local_ttl: int = 30
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def engine_options(self) -> dict[str, object]:
        """Pool and TLS options for SQLAlchemy's engine (SQLite takes none of them).

        Parameter values never reach logs or error messages (``hide_parameters``): they hold
        customers' emails and names, and an exception's text is logged with its traceback.
        """
        if not self.database_url.startswith("postgresql"):
            return {"hide_parameters": True}
        connect_args: dict[str, object] = {"connect_timeout": self.db_connect_timeout}
        if self.db_sslmode:
            connect_args["sslmode"] = self.db_sslmode
        if self.db_sslrootcert:
            connect_args["sslrootcert"] = self.db_sslrootcert
        return {
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_max_overflow,
            "pool_timeout": self.db_pool_timeout,
            "pool_pre_ping": True,
            "pool_recycle": self.db_pool_recycle,
            "hide_parameters": True,
            "connect_args": connect_args,
        }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``environ`` (default ``os.environ``); raise ConfigError if unusable."""
    env = dict(os.environ if environ is None else environ)
    mode = env.get("CREDITCRAFT_ENV", "production")
    if mode not in ENVIRONMENTS:
        raise ConfigError(f"config: CREDITCRAFT_ENV must be one of {', '.join(ENVIRONMENTS)}")

    def secret(name: str, dev_default: str) -> str:
        value = env.get(name, "").strip()
        if value:
            return value
        if mode == "production":
            raise ConfigError(f"config: the environment variable {name} is required")
        return dev_default

    return Settings(
        env=mode,
        secret_key=secret("SECRET_KEY", DEVELOPMENT_SECRET),
        shopify_api_key=secret("SHOPIFY_API_KEY", "creditcraft-dev-api-key"),
        shopify_api_secret=secret("SHOPIFY_API_SECRET", DEVELOPMENT_SECRET),
        token_encryption_keys=_csv(secret("TOKEN_ENCRYPTION_KEYS", DEVELOPMENT_FERNET_KEY)),
        shopify_api_secret_previous=env.get("SHOPIFY_API_SECRET_PREVIOUS") or None,
        shopify_api_version=env.get("SHOPIFY_API_VERSION", DEFAULT_API_VERSION),
        shopify_scopes=env.get("SHOPIFY_SCOPES", DEFAULT_SCOPES),
        shopify_admin_origin=env.get("SHOPIFY_ADMIN_ORIGIN", "https://{shop}"),
        app_url=env.get("APP_URL", "http://127.0.0.1:8000").rstrip("/"),
        database_url=_database_url(env.get("DATABASE_URL", SQLITE_DEFAULT)),
        db_pool_size=_int(env, "DB_POOL_SIZE", 10),
        db_max_overflow=_int(env, "DB_MAX_OVERFLOW", 10),
        db_pool_timeout=_int(env, "DB_POOL_TIMEOUT", 10),
        db_sslmode=_choice(env, "DB_SSLMODE", SSL_MODES, "") or None,
        db_sslrootcert=env.get("DB_SSLROOTCERT") or None,
        db_pool_recycle=_positive(env, "DB_POOL_RECYCLE", 1800),
        db_connect_timeout=_positive(env, "DB_CONNECT_TIMEOUT", 5),
        web_statement_timeout_ms=_int(env, "WEB_STATEMENT_TIMEOUT_MS", 5000),
        redis_url=env.get("REDIS_URL") or None,
        slow_query_ms=_int(env, "SLOW_QUERY_MS", 200),
        log_format=_choice(env, "LOG_FORMAT", LOG_FORMATS, _default_log_format(mode)),
        log_level=_choice(env, "LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
        worker_metrics_port=_worker_metrics_port(env),
        proxy_rate_limit_per_ip=_positive(env, "PROXY_RATE_LIMIT_PER_IP", 120),
        proxy_rate_limit_per_shop=_positive(env, "PROXY_RATE_LIMIT_PER_SHOP", 6000),
        storefront_cache_ttl=_positive(env, "STOREFRONT_CACHE_TTL", 120),
        storefront_local_ttl=_positive(env, "STOREFRONT_LOCAL_TTL", 30),
        ledger_retention_days=_retention_days(env),
        archive_signing_keys=_archive_signing_keys(env, mode),
    )


def _choice(
    env: Mapping[str, str],
    name: str,
    allowed: tuple[str, ...],
    default: str,
    *,
    upper: bool = False,
) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ConfigError(f"config: {name} must be one of {', '.join(allowed)}, got {raw!r}")
    return value


def _worker_metrics_port(env: Mapping[str, str]) -> int | None:
    """A port for the worker's metrics; its jobs run in forked horses, whose counts only
    survive them in PROMETHEUS_MULTIPROC_DIR."""
    if not env.get("WORKER_METRICS_PORT", "").strip():
        return None
    if not env.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
        raise ConfigError(
            "config: WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR (a directory)"
        )
    return _positive(env, "WORKER_METRICS_PORT", 9200)


def _default_log_format(mode: str) -> str:
    """Text for a developer's terminal; JSON everywhere a machine reads the logs."""
    return "text" if mode == "development" else "json"


def _retention_days(env: Mapping[str, str]) -> int | None:
    if not env.get("LEDGER_RETENTION_DAYS", "").strip():
        return None
    return _positive(env, "LEDGER_RETENTION_DAYS", 1)


def _archive_signing_keys(env: Mapping[str, str], mode: str) -> tuple[str, ...]:
    """Production needs its own once the schedule archives; elsewhere a development key."""
    keys = _csv(env.get("ARCHIVE_SIGNING_KEYS", ""))
    if keys or mode != "production":
        return keys or (DEVELOPMENT_ARCHIVE_KEY,)
    if env.get("LEDGER_RETENTION_DAYS", "").strip():
        raise ConfigError(
            "config: ARCHIVE_SIGNING_KEYS is required when LEDGER_RETENTION_DAYS is set"
        )
    return ()


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"config: {name} must be a whole number, got {raw!r}")
    return int(raw)


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"config: {name} must be at least 1, got {value}")
    return value


def _database_url(url: str) -> str:
    """Make a relative SQLite path relative to the project, not to whatever the cwd is."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix:
        return prefix + str(PROJECT_ROOT / url[len(prefix) :])
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url
