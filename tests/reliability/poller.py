"""One `labeljob` process of the concurrency scenario, instrumented from the outside.

    python -m tests.reliability.poller BARRIER_DIR PARTIES LOG -- labeljob-arguments...

It waits until PARTIES processes have reached the barrier before the job layer's `poll_job`
starts, and again once each has read the job record, so every process has read the record before
any writes it back; and it appends to LOG one line per finish it runs and per conditional write
it loses. The product code is unchanged.
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
    barrier, parties, log = Path(argv[0]), int(argv[1]), Path(argv[2])
    args = argv[argv.index("--") + 1 :]

    import orchestrator.cli.job as job_cmd
    import orchestrator.jobs as jobs_package
    from orchestrator.errors import PreconditionFailed
    from orchestrator.jobs import JobStore
    from orchestrator.storage import S3Store

    # The CLI imports finish_job from the package when it polls, so it is patched there.
    real_poll, real_finish, real_put = job_cmd.poll_job, jobs_package.finish_job, S3Store.put_if_match
    real_load = JobStore.load
    stage = ["cli"]  # the CLI reads the record before poll_job; the barrier is after poll_job's read

    def poll_job(*a, **kw):
        _arrive(barrier, parties)
        stage[0] = "poll"
        return real_poll(*a, **kw)

    def load(self, name):
        loaded = real_load(self, name)
        if stage[0] == "poll":
            stage[0] = "read"
            _arrive(barrier.with_name(barrier.name + "-read"), parties)
        return loaded

    def finish_job(*a, **kw):
        outputs = real_finish(*a, **kw)
        _log(log, "finish")
        return outputs

    def put_if_match(self, key, data, etag, content_type=None):
        try:
            return real_put(self, key, data, etag, content_type)
        except PreconditionFailed:
            _log(log, f"lost {key}")
            raise

    job_cmd.poll_job, jobs_package.finish_job, S3Store.put_if_match = poll_job, finish_job, put_if_match
    JobStore.load = load

    from orchestrator.cli.app import app

    app(args, prog_name="labeljob")


if __name__ == "__main__":
    main(sys.argv[1:])
