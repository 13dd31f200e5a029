"""Where the edges find the app's Settings (set once by create_app)."""

from __future__ import annotations

from flask import current_app

from config import Settings

EXTENSION_KEY = "creditcraft.settings"


def current_settings() -> Settings:
    settings: Settings = current_app.extensions[EXTENSION_KEY]
    return settings
