"""Unbound extensions: created here, bound to an app in create_app (never at import time)."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Session

from models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()


def current_session() -> Session:
    """This request's or job's session, as the plain SQLAlchemy Session the domain takes."""
    return db.session()
