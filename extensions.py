"""Unbound extensions: created here, bound to an app in create_app (never at import time)."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
