"""The portal database as several processes open it: an older database upgraded by many at once."""

from __future__ import annotations

import threading

from sqlalchemy import inspect

from orchestrator.backends.portal.db import Base, Database


def test_processes_opening_an_older_database_at_once_all_upgrade_it(tmp_path):
    # Each thread has its own engine, as a process would: scheduled pollers and `portal serve` that a
    # new labeljob starts at the same moment on a database an older one created.
    url = f"sqlite:///{tmp_path / 'portal.db'}"
    for _ in range(3):
        old = Database(url)
        old.create_all()
        with old.engine.begin() as connection:
            for table in ("drops", "reports", "invites"):
                connection.exec_driver_sql(f"DROP TABLE {table}")
        old.dispose()
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        threads = [threading.Thread(target=_open, args=(url, barrier, errors)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        upgraded = Database(url)
        assert {t.name for t in Base.metadata.sorted_tables} <= set(
            inspect(upgraded.engine).get_table_names()
        )
        upgraded.dispose()


def _open(url: str, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    database = Database(url)
    barrier.wait()
    try:
        database.create_all()
    except Exception as exc:  # the failure under test: "database is locked"
        errors.append(exc)
    finally:
        database.dispose()
