"""Portal abuse: forged marketplace entries, an oversized chunked body and slow request heads, tried
against a real `labeljob portal serve` process on loopback, with that process's memory measured.

Each probe is bounded (a count of attempts or of bytes, and a deadline). The figures go into
docs/reliability.md, "Portal abuse"; the security model they check is docs/portal.md's.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func
from sqlalchemy import select as sql_select

from orchestrator.backends.portal import catalog, marketplace
from orchestrator.backends.portal.db import Answer, Lease, Token, Worker, open_database
from orchestrator.backends.portal.server import HEAD_SECONDS
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.jobs import ManifestItem
from orchestrator.spec import parse_spec
from tests.reliability.scenarios import REPO, sample_images

FORGED_PER_KIND = 30
OVERSIZED_BYTES = 300 * 1024 * 1024
CHUNK = 64 * 1024
SLOW_CONNECTIONS = 50
# Past this the slow-head probe gives up (the server's own deadline is HEAD_SECONDS) and says so.
SLOW_DEADLINE_SECONDS = 30
REFUSED = {403, 404, 409, 429}


@dataclass
class Forged:
    kind: str
    attempts: int = 0
    refused: int = 0
    statuses: Counter = field(default_factory=Counter)


@dataclass
class Abuse:
    forged: list[Forged] = field(default_factory=list)
    stored_before: tuple[int, ...] = ()
    stored_after: tuple[int, ...] = ()
    oversized_status: int | None = None
    oversized_sent: int = 0
    oversized_seconds: float = 0.0
    slow_cut: int = 0
    slow_seconds: float = 0.0
    healthy_after: int | None = None
    rss: dict[str, float] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        found = [
            f"{f.kind}: {f.attempts - f.refused} of {f.attempts} let in"
            for f in self.forged
            if f.refused < f.attempts
        ]
        if self.stored_after != self.stored_before:
            found.append(f"forged entries stored rows: {self.stored_before} -> {self.stored_after}")
        # Each check applies once its probe ran (the fast test in tests/test_reliability.py runs two).
        if self.oversized_sent and self.oversized_status != 413:
            found.append(f"oversized body answered {self.oversized_status}")
        if self.healthy_after is not None and self.slow_cut < SLOW_CONNECTIONS:
            found.append(f"slow heads: {self.slow_cut} of {SLOW_CONNECTIONS} cut")
        if self.healthy_after is not None and self.healthy_after != 200:
            found.append(f"/healthz after the slow heads: {self.healthy_after}")
        return found


def memory_mb(pid: int) -> tuple[float, float]:
    """The process's resident set and its peak (VmRSS, VmHWM) in MB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Portal:
    """Two portal jobs with marketplace entry on ("street": Prolific, "other": generic), an invited
    worker's token, and `labeljob portal serve` over them in a child process."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{folder / 'portal.db'}"
        db = open_database(self.db_url)
        self.secrets: dict[str, str] = {}
        with db.write() as session:
            for name, kind, count in (("street", "prolific", 3), ("other", "generic", 2)):
                spec = parse_spec(
                    {
                        "name": name,
                        "labels": ["car"],
                        "input_manifest": str(folder / "in.manifest"),
                        "output": str(folder / name),
                    }
                )
                items = [ManifestItem(str(i), p.as_uri(), {}) for i, p in enumerate(sample_images(count))]
                job, _ = catalog.load_job(session, spec, items, time.time())
                self.secrets[name] = marketplace.turn_on(session, job, kind, time.time()).secret
            worker = Worker(public_id="invited", name="invited", source="invite", created_at=time.time())
            session.add(worker)
            session.flush()
            self.worker_token = issue_token(session, "worker", worker.id)
        db.dispose()
        with socket.socket() as probe:  # a free port; `portal serve` binds it again at once
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        (folder / "empty-labeljob.toml").write_text("")
        env = {
            "LABELJOB_CONFIG": str(folder / "empty-labeljob.toml"),
            "LABELJOB_WORKSPACE": str(folder / "ws"),
        }
        command = [sys.executable, "-c", "from orchestrator.cli import main; main()"]
        self.process = subprocess.Popen(
            [*command, "portal", "serve", "--port", str(self.port), "--db", self.db_url],
            cwd=REPO,
            env={**_plain_environment(), **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("`labeljob portal serve` did not start")
            time.sleep(0.1)

    def stored(self) -> tuple[int, ...]:
        """Workers, tokens, leases and answers in the portal's database."""
        db = open_database(self.db_url)
        with db.read() as session:
            counts = tuple(
                session.scalar(sql_select(func.count()).select_from(t))
                for t in (Worker, Token, Lease, Answer)
            )
        db.dispose()
        return counts

    def entry(self, job: str, secret: str | None, pid: str) -> str:
        k = f"k={secret}&" if secret is not None else ""
        return f"{self.url}/go/{job}?{k}PROLIFIC_PID={pid}&STUDY_ID=S1&SESSION_ID=X{pid}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _plain_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LABELJOB_"))}


def forged_entries(portal: Portal, abuse: Abuse, per_kind: int = FORGED_PER_KIND) -> None:
    """Entries without the secret, with another job's, and with a worker id whose lease another
    browser holds: each must get no task page, and the database must not change."""
    with httpx.Client(follow_redirects=False) as victim:
        page = victim.get(portal.entry("street", portal.secrets["street"], "VICTIM"))
        assert page.status_code == 200 and "<crowd-form" in page.text, "the honest entry failed"
    abuse.stored_before = portal.stored()
    attempts = {
        "no secret": lambda i: portal.entry("street", None, f"N{i}"),
        "another job's secret": lambda i: portal.entry("street", portal.secrets["other"], f"W{i}"),
        "a worker id whose lease another browser holds": lambda i: portal.entry(
            "street", portal.secrets["street"], "VICTIM"
        ),
    }
    for kind, url in attempts.items():
        tally = Forged(kind)
        for i in range(per_kind):
            with httpx.Client(follow_redirects=False) as thief:  # a fresh browser each time
                response = thief.get(url(i))
            tally.attempts += 1
            tally.statuses[response.status_code] += 1
            if response.status_code in REFUSED and "<crowd-form" not in response.text:
                tally.refused += 1
        abuse.forged.append(tally)
    abuse.stored_after = portal.stored()


def oversized_body(portal: Portal, abuse: Abuse, limit: int = OVERSIZED_BYTES) -> None:
    """A chunked answer of up to `limit` bytes with a worker's token: sent until the server answers."""
    bearer = {"Authorization": f"Bearer {portal.worker_token}"}
    submit = httpx.post(f"{portal.url}/api/tasks/next", headers=bearer).json()["submit_url"]
    head = (
        f"POST {submit} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {portal.worker_token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", portal.port), timeout=30) as connection:
        connection.sendall(head)
        reply = b""
        while abuse.oversized_sent < limit:
            if select.select([connection], [], [], 0)[0]:
                break
            try:
                connection.sendall(chunk)
            except OSError:  # the server closed the connection while we sent
                break
            abuse.oversized_sent += CHUNK
        try:
            reply = connection.recv(1024)
        except OSError:
            pass
    abuse.oversized_seconds = time.perf_counter() - started
    if reply.startswith(b"HTTP/1.1 "):
        abuse.oversized_status = int(reply.split()[1])


def slow_heads(portal: Portal, abuse: Abuse, connections: int = SLOW_CONNECTIONS) -> None:
    """Half the connections send half a request head and go quiet, half send one byte a second:
    the server must close every one of them, and still answer /healthz afterwards."""
    started = time.perf_counter()
    open_ = []
    for _ in range(connections):
        connection = socket.create_connection(("127.0.0.1", portal.port), timeout=5)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        open_.append(connection)
    trickling = set(open_[::2])
    closed_at: dict[socket.socket, float] = {}
    next_byte = time.monotonic() + 1
    while len(closed_at) < connections and time.perf_counter() - started < SLOW_DEADLINE_SECONDS:
        live = [c for c in open_ if c not in closed_at]
        for connection in select.select(live, [], [], 0.2)[0]:
            try:
                data = connection.recv(1024)
            except OSError:
                data = b""
            if not data:  # closed by the server without a response
                closed_at[connection] = time.perf_counter() - started
        if time.monotonic() >= next_byte:
            next_byte += 1
            for connection in trickling.difference(closed_at):
                try:
                    connection.sendall(b"X")
                except OSError:
                    closed_at[connection] = time.perf_counter() - started
    for connection in open_:
        connection.close()
    abuse.slow_cut = len(closed_at)
    abuse.slow_seconds = max(closed_at.values(), default=0.0)
    abuse.healthy_after = httpx.get(f"{portal.url}/healthz").status_code


def run(folder: Path) -> Abuse:
    """Every probe against one server, with its memory before the first and after the last."""
    abuse = Abuse()
    portal = Portal(folder)
    try:
        abuse.rss["before"], _ = memory_mb(portal.process.pid)
        forged_entries(portal, abuse)
        oversized_body(portal, abuse)
        slow_heads(portal, abuse)
        abuse.rss["after"], abuse.rss["peak"] = memory_mb(portal.process.pid)
    finally:
        portal.close()
    return abuse


SECTION = "## Portal abuse"


def section(abuse: Abuse, when: str) -> list[str]:
    """The "Portal abuse" section of docs/reliability.md."""
    rows = ["| forged entry | attempts | refused | responses |", "|---|---:|---:|---|"]
    for f in abuse.forged:
        responses = ", ".join(f"{n} x {status}" for status, n in sorted(f.statuses.items()))
        rows.append(f"| {f.kind} | {f.attempts} | {f.refused} | {responses} |")
    stored = sum(abuse.stored_after) - sum(abuse.stored_before)
    return [
        SECTION,
        "",
        "`tests/reliability/abuse.py` against a real `labeljob portal serve` process on loopback (SQLite),",
        "over two jobs with marketplace entry on (Prolific and generic links) and one invited worker. It",
        "runs in the full harness and alone with `python -m tests.reliability --portal-abuse-only`,",
        f"which rewrites only this section. This section's run: {when}.",
        "",
        "Forged entries, each from a fresh browser (no cookies): a Prolific entry URL without the job's",
        "secret, with the other job's secret, and with the worker id of a worker whose live lease",
        "another browser holds. Refused means a 403, 404, 409 or 429 and no task page.",
        "",
        *rows,
        "",
        f"Rows added to the database by all {sum(f.attempts for f in abuse.forged)} forged entries "
        f"(workers, tokens, leases, answers): {stored}.",
        "",
        f"Oversized body: a chunked answer POST of up to {OVERSIZED_BYTES // 2**20} MB with a worker's token",
        f"and a live lease was answered {abuse.oversized_status} after "
        f"{abuse.oversized_sent / 2**20:.1f} MB had left the client (the app",
        f"reads at most 2 MB; the rest sat in the socket buffers) in {abuse.oversized_seconds:.2f} s.",
        "",
        f"Slow heads: {SLOW_CONNECTIONS} connections sent half a request head; half of them then went",
        f"quiet and half sent one more byte a second. The server closed {abuse.slow_cut} of "
        f"{SLOW_CONNECTIONS}, the last",
        f"{abuse.slow_seconds:.1f} s after they opened (the head deadline is {HEAD_SECONDS} s), and",
        f"`/healthz` then answered {abuse.healthy_after}.",
        "",
        "The server's memory (resident set, from /proc): "
        f"{abuse.rss['before']:.1f} MB before the first probe, {abuse.rss['after']:.1f} MB after",
        f"the last, {abuse.rss['peak']:.1f} MB at its peak.",
        "",
        *([f"- problem: {p}" for p in abuse.problems] or ["Every probe held."]),
        "",
    ]


def replace_section(text: str, new: list[str]) -> str:
    """`text` (docs/reliability.md) with its "Portal abuse" section replaced by `new`, or `new`
    put before "## Problems found" when it has none."""
    lines = text.split("\n")
    if SECTION in lines:
        start = lines.index(SECTION)
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    else:
        start = end = lines.index("## Problems found")
    return "\n".join([*lines[:start], *new, *lines[end:]])
