"""One `labeljob` process of the concurrency scenario, instrumented from the outside.

    python -m tests.reliability.poller BARRIER_DIR PARTIES LOG DELAY -- labeljob-arguments...

It waits until PARTIES processes have reached the barrier before the job layer's `poll_job`
starts, so the processes overlap; it sleeps DELAY seconds before each conditional write of a job
record, so they overlap exactly where a record is read and written back; and it appends to LOG one
line per finish it runs and per conditional write it loses. The product code is unchanged.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BARRIER_TIMEOUT_SECONDS = 60


def _log(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {line}\n")


def _arrive(barrier: Path, parties: int) -> None:
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_SECONDS
    while len(list(barrier.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise SystemExit("the other pollers never reached the barrier")
        time.sleep(0.005)


def main(argv: list[str]) -> None:
    barrier, parties, log, delay = Path(argv[0]), int(argv[1]), Path(argv[2]), float(argv[3])
    args = argv[argv.index("--") + 1 :]

    import orchestrator.cli.job as job_cmd
    from orchestrator.errors import PreconditionFailed
    from orchestrator.storage import S3Store

    real_poll, real_finish, real_put = job_cmd.poll_job, job_cmd.finish_job, S3Store.put_if_match

    def poll_job(*a, **kw):
        _arrive(barrier, parties)
        return real_poll(*a, **kw)

    def finish_job(*a, **kw):
        outputs = real_finish(*a, **kw)
        _log(log, "finish")
        return outputs

    def put_if_match(self, key, data, etag, content_type=None):
        time.sleep(delay)
        try:
            return real_put(self, key, data, etag, content_type)
        except PreconditionFailed:
            _log(log, f"lost {key}")
            raise

    job_cmd.poll_job, job_cmd.finish_job, S3Store.put_if_match = poll_job, finish_job, put_if_match

    from orchestrator.cli.app import app

    app(args, prog_name="labeljob")


if __name__ == "__main__":
    main(sys.argv[1:])
