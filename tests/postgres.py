"""`portal_db_url`: every portal test runs on SQLite and on a PostgreSQL database of its own.

The PostgreSQL server is the one at $PORTAL_TEST_POSTGRES_URL, else the local server
(`postgres` on 127.0.0.1:5432, database `test`); the URL names a database to connect to while a
test creates and drops its own. With no server answering, the PostgreSQL runs skip and say why.
"""

from __future__ import annotations

import functools
import os
import uuid

import pytest

from orchestrator.backends.portal.db import DB_ENV

SERVER_ENV = "PORTAL_TEST_POSTGRES_URL"
LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@functools.cache
def _unreachable(server: str) -> str | None:
    """Why no test database can be created on `server`, or None when one can."""
    try:
        import psycopg  # noqa: F401  (the `postgres` extra)
    except ImportError:
        return "psycopg is not installed: pip install -e '.[dev]'"
    from sqlalchemy import create_engine, text

    engine = create_engine(server, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means: skip, and say which
        return f"no PostgreSQL server answers at {server} ({type(exc).__name__}); set {SERVER_ENV}"
    finally:
        engine.dispose()
    return None


@pytest.fixture
def postgres_url(monkeypatch):
    """The URL of a new, empty PostgreSQL database, also set as $LABELJOB_PORTAL_DB; dropped after."""
    from sqlalchemy import create_engine, make_url, text

    server = os.environ.get(SERVER_ENV) or LOCAL_SERVER
    reason = _unreachable(server)
    if reason:
        pytest.skip(reason)
    name = f"labeljob_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv(DB_ENV, url)
    try:
        yield url
    finally:
        # FORCE ends the connections a portal server or engine under test may still hold.
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def portal_db_url(request, tmp_path):
    """The portal database for a test: SQLite in tmp_path (the default), then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'portal.db'}"
    return request.getfixturevalue("postgres_url")
