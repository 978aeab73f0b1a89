"""The portal's database: jobs, tasks, leases, answers, workers and tokens (SQLAlchemy 2).

SQLite in the workspace by default, PostgreSQL by URL so several portal processes can share one
database. The schema itself guarantees the two invariants the crowd depends on: one answer per
(task, worker), and never more answers for a task than it wants (each answer takes a numbered
slot `1..wanted`, unique per task, checked against the task's own `wanted` through a composite
foreign key).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    CheckConstraint,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    make_url,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.schema import Column

from orchestrator.errors import ConfigError
from orchestrator.storage import LocalStore, ObjectStore

DB_ENV = "LABELJOB_PORTAL_DB"
DB_FILENAME = "portal.db"


class Base(DeclarativeBase):
    pass


class Job(Base):
    """A labeling job as the portal sees it; `spec` is the JobSpec as JSON (labels, instructions)."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    spec: Mapped[str] = mapped_column(Text)
    # Header, labels and instructions as rendered at launch: the instructions file stays behind.
    task_text: Mapped[str] = mapped_column(Text)
    # Images are served by their key under this root (the folder or bucket the manifest points into).
    image_root: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[float] = mapped_column(Double)
    stopped_at: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (CheckConstraint("status IN ('open', 'stopped')", name="job_status"),)


class Task(Base):
    """One manifest object that wants `wanted` answers from different workers."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    position: Mapped[int] = mapped_column(Integer)
    object_id: Mapped[str] = mapped_column(String(64))
    source_ref: Mapped[str] = mapped_column(Text)
    image_key: Mapped[str] = mapped_column(Text)
    wanted: Mapped[int] = mapped_column(Integer)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    time_limit: Mapped[int] = mapped_column(Integer)
    # The poll generation that last handed this task's answers to the job layer (see the backend).
    reported_in: Mapped[int | None] = mapped_column(Integer)
    # Answers leased out for now: `wanted` in a fixed-overlap job; in an adaptive one it starts at
    # min_workers and a poll raises it by one where the stopping rule asks, up to `wanted`.
    asked: Mapped[int] = mapped_column(Integer)
    # When the stopping rule settled the task (adaptive jobs); its answers are final from then on.
    settled_at: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (
        UniqueConstraint("job_id", "object_id"),
        UniqueConstraint("job_id", "position"),
        UniqueConstraint("id", "wanted", name="task_wanted"),
        CheckConstraint("wanted >= 1", name="task_wanted_positive"),
        CheckConstraint("answered >= 0 AND answered <= wanted", name="task_answered_range"),
        CheckConstraint("asked >= 1 AND asked <= wanted AND answered <= asked", name="task_asked_range"),
        CheckConstraint("time_limit >= 1", name="task_time_limit"),
        Index("ix_tasks_open", "job_id", "answered", "position"),
        Index("ix_tasks_image", "job_id", "image_key"),
    )


class Worker(Base):
    """Someone who answers tasks; `public_id` is the worker id written into answers."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(160), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(16))
    # An invite for one job restricts the worker to it; NULL means any open job.
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        CheckConstraint("source IN ('invite', 'mturk', 'external', 'simulator')", name="worker_source"),
    )


class Token(Base):
    """A bearer secret, stored only as its SHA-256. Admin tokens have no worker."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"))
    created_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double)
    # A marketplace session belongs to the one job whose link opened it.
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    # NULL: the token lives until it is revoked (admin tokens).
    expires_at: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (
        CheckConstraint(
            "(kind = 'admin' AND worker_id IS NULL)"
            " OR (kind IN ('worker', 'session') AND worker_id IS NOT NULL)",
            name="token_kind",
        ),
    )


class Report(Base):
    """A worker set a task down: skipped it, or reported that its image does not load or is not an
    image. The worker is not offered it again; enough reports of a broken image set it aside."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        UniqueConstraint("task_id", "worker_id"),
        CheckConstraint("reason IN ('skip', 'not_loading', 'not_an_image')", name="report_reason"),
    )


class Block(Base):
    """A worker the ML lead blocked, in one job or (job_id NULL) in every job: no new task, no answer."""

    __tablename__ = "blocks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[float] = mapped_column(Double)
    # Why, when labeljob blocked the worker itself (gold); None for a block by the ML lead.
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("worker_id", "job_id"),)


class Drop(Base):
    """A worker's answers dropped from a job (`portal block --drop-answers`): deleted from its tasks at
    once, then named to the job layer by the next poll (`reported_in`, the poll generation, as for
    tasks), which removes them from the stored worker responses."""

    __tablename__ = "drops"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[float] = mapped_column(Double)
    reported_in: Mapped[int | None] = mapped_column(Integer)


class Invite(Base):
    """A one-time invite code (stored as its SHA-256), exchanged once for a worker token."""

    __tablename__ = "invites"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    used_at: Mapped[float | None] = mapped_column(Double)


class Lease(Base):
    """A task handed to one worker until `expires_at`; a worker holds at most one lease per task."""

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    started_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    submitted_at: Mapped[float | None] = mapped_column(Double)
    # The session that took a marketplace lease: only that browser may see or submit it.
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))

    __table_args__ = (
        UniqueConstraint("task_id", "worker_id"),
        Index("ix_leases_task_live", "task_id", "submitted_at", "expires_at"),
        Index("ix_leases_worker", "worker_id", "submitted_at"),
    )


class Answer(Base):
    """One worker's answer for one task: the element's JSON, e.g. `{"annotatedResult": {...}}`."""

    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer)
    wanted: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    lease_id: Mapped[int] = mapped_column(ForeignKey("leases.id"), unique=True)
    content: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[float] = mapped_column(Double)
    seconds: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        ForeignKeyConstraint(["task_id", "wanted"], ["tasks.id", "tasks.wanted"], name="answer_task"),
        UniqueConstraint("task_id", "worker_id", name="one_answer_per_worker"),
        UniqueConstraint("task_id", "slot", name="one_answer_per_slot"),
        CheckConstraint("slot >= 1 AND slot <= wanted", name="answer_slot_range"),
    )


class Provisional(Base):
    """An answer from a marketplace session, kept out of the outputs until the ML lead approves it
    (`labeljob portal approve`): a marketplace does not sign its worker ids, so anyone with the link
    can answer under one. Its task is not final while it has one (docs/portal.md, "Security model")."""

    __tablename__ = "provisional_answers"

    answer_id: Mapped[int] = mapped_column(ForeignKey("answers.id"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))


class GoldTask(Base):
    """A task whose true boxes are known (JSON `[{label, left, top, width, height}]`): mixed into a
    worker's tasks unannounced, scored, and never handed to the job layer. Its own table, so a
    database made before gold tasks existed gains it without a migration."""

    __tablename__ = "gold_tasks"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    boxes: Mapped[str] = mapped_column(Text)


class RetiredTask(Base):
    """A task a reviewer's reject replaced by a new round of the same object (rounds.py): its answers
    stay, but it is leased, counted and reported no more. Renamed (object id `<id>~<round>`,
    position `-<task id>`) so the new round's task takes the object's id and place."""

    __tablename__ = "retired_tasks"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    object_id: Mapped[str] = mapped_column(String(64))
    # 1 for the launch's task, 2 for the first re-opened one, ...
    round: Mapped[int] = mapped_column(Integer)
    retired_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (UniqueConstraint("job_id", "object_id", "round"),)


class TaskStart(Base):
    """The boxes a verification task shows the worker to start from (JSON, like GoldTask's)."""

    __tablename__ = "task_starts"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    boxes: Mapped[str] = mapped_column(Text)


class MarketplaceLink(Base):
    """A job's marketplace entry: present only while the ML lead has it on (`labeljob portal link`).

    The secret is kept in clear so `link` can print the URL again: it is published to every worker
    of the marketplace anyway, so it keeps out strangers, not readers of this database.
    """

    __tablename__ = "marketplace_links"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    marketplace: Mapped[str] = mapped_column(String(16))
    secret: Mapped[str] = mapped_column(String(64))
    completion_code: Mapped[str | None] = mapped_column(String(64))
    completion_url: Mapped[str | None] = mapped_column(Text)
    new_workers_per_minute: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        CheckConstraint(
            "marketplace IN ('generic', 'prolific', 'cloudresearch', 'mturk')", name="link_marketplace"
        ),
        CheckConstraint("new_workers_per_minute >= 1", name="link_rate"),
    )


class Setting(Base):
    """Process-independent values every portal process must share, such as the URL signing key."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# ------------------------------------------------------------------------------------ engine


def default_db_url(workspace: ObjectStore | None, db_url: str | None = None) -> str:
    """`db_url`, else $LABELJOB_PORTAL_DB, else `<workspace>/portal.db` for a local workspace."""
    url = db_url or os.environ.get(DB_ENV)
    if url:
        return url
    if isinstance(workspace, LocalStore):
        return f"sqlite:///{workspace.root / DB_FILENAME}"
    raise ConfigError(
        "the portal needs a database URL when the workspace is not a local folder",
        hint=f"pass --db postgresql+psycopg://USER@HOST/DB (or sqlite:///PATH), or set {DB_ENV}",
    )


def redacted(url: str) -> str:
    """The URL without its password, for messages and job records."""
    return make_url(url).render_as_string(hide_password=True)


class Database:
    """An engine plus the two kinds of transaction the portal uses: `read()` and `write()`."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError(f"{url!r} is not a database URL", hint="e.g. sqlite:///portal.db") from None
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                _owner_only(Path(database).expanduser())
            self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
            _sqlite_transactions(self.engine)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        # On SQLite a writer takes the write lock at BEGIN (IMMEDIATE), so two writers never both
        # read the same state and then both write; PostgreSQL gets row locks in the queries.
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        # SQLite's busy handler waits by sleeping (up to 100 ms a try); queueing this process's own
        # writers on a lock instead keeps latency low. Other processes still meet the busy handler.
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()

    def create_all(self) -> None:
        """Create the tables and columns a database lacks. On SQLite this runs as a writer: two
        processes opening an older database at once would otherwise both read its schema, both try to
        add to it, and one would fail with "database is locked"."""
        Base.metadata.create_all(self._writer)
        _add_missing_columns(self._writer)

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success; on SQLite it holds the database's write lock."""
        with self._write_lock, Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _owner_only(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by its owner only: it holds the URL signing
    key and the marketplace secrets. SQLite gives its -wal and -shm files the same mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    if path.stat().st_uid == os.getuid():
        path.chmod(0o600)  # a database an older labeljob left world-readable


def _missing_columns(engine: Engine) -> list[tuple[str, Column]]:
    tables = inspect(engine)
    missing = []
    for table in Base.metadata.sorted_tables:
        existing = {column["name"] for column in tables.get_columns(table.name)}
        missing += [(table.name, column) for column in table.columns if column.name not in existing]
    return missing


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns a newer labeljob declares to tables an older one created, as nullable columns;
    a task of an older database then asks for all the answers it wants (`asked`), as it did."""
    missing = _missing_columns(engine)
    if not missing:
        return
    try:
        with engine.begin() as connection:
            for table, column in missing:
                kind = column.type.compile(dialect=engine.dialect)
                connection.exec_driver_sql(f'ALTER TABLE {table} ADD COLUMN "{column.name}" {kind}')
            if ("tasks", "asked") in {(table, column.name) for table, column in missing}:
                connection.exec_driver_sql("UPDATE tasks SET asked = wanted")
    except DBAPIError:
        # Another portal process added them at the same moment; its transaction is the one that counts.
        if _missing_columns(engine):
            raise


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy emit BEGIN itself (DEFERRED for reads, IMMEDIATE for writes)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        # WAL lets readers (admin pages, polls) run while one writer holds the lock.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def open_database(url: str) -> Database:
    """The database at `url` with its tables created."""
    db = Database(url)
    db.create_all()
    return db
