"""Settings: production fails fast naming what is missing; development needs nothing."""

from __future__ import annotations

import pytest

from config import PROJECT_ROOT, ConfigError, load_settings

PRODUCTION = {
    "CREDITCRAFT_ENV": "production",
    "SECRET_KEY": "s",
    "SHOPIFY_API_KEY": "k",
    "SHOPIFY_API_SECRET": "x",
    "TOKEN_ENCRYPTION_KEYS": "a,b",
}


@pytest.mark.smoke
@pytest.mark.parametrize(
    "missing", ["SECRET_KEY", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET", "TOKEN_ENCRYPTION_KEYS"]
)
def test_production_refuses_to_start_without_a_secret_and_names_it(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(ConfigError, match=missing) as stopped:
        load_settings(env)
    assert "\n" not in str(stopped.value)


def test_production_is_the_default_environment():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings({})


def test_development_runs_on_defaults():
    settings = load_settings({"CREDITCRAFT_ENV": "development"})
    assert settings.database_url == f"sqlite:///{PROJECT_ROOT / 'instance' / 'creditcraft.sqlite3'}"
    assert settings.redis_url is None
    assert settings.shopify_api_version == "2026-10"
    assert settings.engine_options() == {"hide_parameters": True}


def test_values_are_parsed_and_checked():
    settings = load_settings(
        PRODUCTION
        | {
            "DATABASE_URL": "postgresql://u@db/x",
            "DB_POOL_SIZE": "7",
            "DB_SSLMODE": "require",
            "TOKEN_ENCRYPTION_KEYS": " new , old ",
            "APP_URL": "https://cc.example/",
        }
    )
    assert settings.database_url == "postgresql+psycopg://u@db/x"
    assert settings.token_encryption_keys == ("new", "old")
    assert settings.app_url == "https://cc.example"
    assert settings.engine_options()["pool_size"] == 7
    assert settings.engine_options()["connect_args"] == {"connect_timeout": 5, "sslmode": "require"}
    with pytest.raises(ConfigError, match="DB_POOL_SIZE"):
        load_settings(PRODUCTION | {"DB_POOL_SIZE": "many"})
    with pytest.raises(ConfigError, match="CREDITCRAFT_ENV"):
        load_settings(PRODUCTION | {"CREDITCRAFT_ENV": "staging"})


def test_bad_fernet_keys_stop_the_app_with_one_line():
    from tokens import TokenBox

    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_KEYS"):
        TokenBox(["not-a-key"])
