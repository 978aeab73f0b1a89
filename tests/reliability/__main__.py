"""The full reliability sweep; writes docs/reliability.md.

.venv/bin/python -m tests.reliability                 # what `make reliability` runs
.venv/bin/python -m tests.reliability --out /tmp/r.md --concurrent-runs 2
.venv/bin/python -m tests.reliability --portal-abuse-only   # rewrites only the "Portal abuse" section
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.fakes.aws import moto_server
from tests.reliability import abuse, concurrency
from tests.reliability.scenarios import REPO, GroundTruthScenario, MTurkScenario, PortalScenario, environment
from tests.reliability.sweep import COMMANDS, Outcome, Sweep, baseline, crash_sweep, transient_run
from tests.reliability.timing import worst_cases

RATES = (0.1, 0.3)
# A portal run makes only two or three database write transactions: with 5 runs a 10 % rate may
# never land, so the portal gets this many times the runs (each takes a fraction of a second).
PORTAL_SEED_FACTOR = 10
CHECKED = (
    "each object launched once; no assignment approved or rejected twice (MTurk); no answer lost; "
    "record valid and complete; outputs equal to the fault-free run"
)
TRANSIENT_FAULTS = {
    "portal": "database write transactions fail (`database is locked`) before they begin",
    "groundtruth": "fake Ground Truth: ThrottlingException (400), ServiceUnavailable (503), InternalFailure "
    "(500), a third of the rate each; S3 (moto): ThrottlingException, SlowDown (503), InternalError (500) "
    "before sending",
    "mturk": "fake MTurk: ServiceFault (HTTP 500) at the rate, after the call took effect for odd seeds "
    "(lost response); plus 3 ThrottlingExceptions each on CreateHITWithHITType, ListAssignmentsForHIT "
    "and ApproveAssignment",
}


def scenarios(moto_url: str) -> dict[str, object]:
    return {
        "portal": PortalScenario,
        "groundtruth": functools.partial(GroundTruthScenario, moto_url=moto_url),
        "mturk": MTurkScenario,
        "mturk (agreement review)": functools.partial(MTurkScenario, policy="agreement"),
        "portal (adaptive)": functools.partial(PortalScenario, adaptive=True),
        "mturk (adaptive)": functools.partial(MTurkScenario, adaptive=True),
    }


def isolated_environment(folder: Path):
    """Fake credentials and no user configuration, as the test suite's conftest gives every test."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "LABELJOB_")):
            del os.environ[name]
    (folder / "empty-labeljob.toml").write_text("")
    return environment(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(folder / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(folder / "no-aws-credentials"),
        LABELJOB_CONFIG=str(folder / "empty-labeljob.toml"),
    )


def _held(outcomes: list[Outcome]) -> str:
    held = sum(1 for o in outcomes if not o.problems)
    return f"{held}/{len(outcomes)}"


def crash_table(sweeps: list[Sweep]) -> list[str]:
    rows = [
        "| backend | command | crash points | runs | held | extra consolidation-response files |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for sweep in sweeps:
        command = sweep.command if sweep.command == "launch" else f"poll ({sweep.phase})"
        extra = sum(max(0, o.duplicates) for o in sweep.outcomes)
        rows.append(
            f"| {sweep.backend} | {command} | {sweep.points} | {len(sweep.outcomes)} | "
            f"{_held(sweep.outcomes)} | {extra} |"
        )
    return rows


def transient_table(results: dict[tuple[str, float], list[Outcome]]) -> list[str]:
    rows = [
        "| backend | rate | runs | faults injected | commands run again | held |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (backend, rate), outcomes in results.items():
        injected = sum(o.injected for o in outcomes)
        again = sum(o.failed_commands for o in outcomes)
        rows.append(
            f"| {backend} | {rate:.0%} | {len(outcomes)} | {injected} | {again} | {_held(outcomes)} |"
        )
    return rows


def concurrency_table(results: dict[str, list[concurrency.Outcome]]) -> list[str]:
    rows = [
        "| backend | runs | pollers at once | exited 0 | finish ran twice | conditional writes lost and "
        "retried | extra consolidation-response files | held |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, outcomes in results.items():
        zero = sum(1 for o in outcomes if o.exit_codes and not any(o.exit_codes))
        twice = sum(1 for o in outcomes if o.finishes > 1)
        lost = sum(o.lost_writes for o in outcomes)
        extra = sum(o.duplicates for o in outcomes)
        held = sum(1 for o in outcomes if not o.problems)
        rows.append(
            f"| {backend} | {len(outcomes)} | {concurrency.POLLERS} | {zero}/{len(outcomes)} | "
            f"{twice}/{len(outcomes)} | {lost} | {extra} | {held}/{len(outcomes)} |"
        )
    return rows


def problems_section(sweeps, transient, concurrent) -> list[str]:
    found = [f"- crash, {s.backend} {s.command} ({s.phase}): {p}" for s in sweeps for p in s.problems]
    found += [
        f"- transient, {backend} at {rate:.0%}: {p}"
        for (backend, rate), outcomes in transient.items()
        for o in outcomes
        for p in o.problems
    ]
    found += [
        f"- concurrency, {backend}: {p}"
        for backend, outs in concurrent.items()
        for o in outs
        for p in o.problems
    ]
    return found or ["None: every promise held in every run."]


def open_defects() -> list[str]:
    """The tests marked xfail: a defect found and not fixed yet, with the reason the mark gives."""
    found = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for mark in node.decorator_list:
                if isinstance(mark, ast.Call) and ast.unparse(mark.func) == "pytest.mark.xfail":
                    reason = next((ast.literal_eval(k.value) for k in mark.keywords if k.arg == "reason"), "")
                    found.append(f"- `tests/{path.name}::{node.name}`: {reason}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    parser.add_argument("--seeds", type=int, default=5, help="Transient-fault runs per backend and rate.")
    parser.add_argument("--concurrent-runs", type=int, default=10, help="Two-poller runs per backend.")
    parser.add_argument(
        "--portal-abuse-only",
        action="store_true",
        help="Run only the portal abuse probes and rewrite only that section of --out.",
    )
    args = parser.parse_args(argv)
    if args.portal_abuse_only:
        return portal_abuse_only(args.out)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="labeljob-reliability-"))
    sweeps: list[Sweep] = []
    transient: dict[tuple[str, float], list[Outcome]] = {}
    concurrent: dict[str, list[concurrency.Outcome]] = {}
    with isolated_environment(work), moto_server() as moto_url:
        for backend, make in scenarios(moto_url).items():
            for command, phase in COMMANDS:
                sweep = crash_sweep(make, backend, work / "crash", command, phase)
                print(f"crash {backend} {command} {phase}: {_held(sweep.outcomes)} held", file=sys.stderr)
                sweeps.append(sweep)
            base = baseline(make, work / "transient")
            seeds = args.seeds * (PORTAL_SEED_FACTOR if backend == "portal" else 1)
            for rate in RATES:
                outcomes = [
                    transient_run(make, work / "transient", rate, seed, base) for seed in range(seeds)
                ]
                print(f"transient {backend} {rate}: {_held(outcomes)} held", file=sys.stderr)
                transient[(backend, rate)] = outcomes
        worlds = {
            "portal": functools.partial(concurrency.PortalWorld, moto_url=moto_url),
            "mturk": functools.partial(
                concurrency.MTurkWorld, moto_url=moto_url, now=concurrency.harness_start()
            ),
        }
        for backend, make in worlds.items():
            base = concurrency.reference(make, work / "concurrency")
            concurrent[backend] = [
                concurrency.concurrent_run(make, work / "concurrency", run, base)
                for run in range(1, args.concurrent_runs + 1)
            ]
            print(f"concurrency {backend}: {len(concurrent[backend])} runs", file=sys.stderr)
    timings = worst_cases()
    probes = abuse.run(work / "abuse")
    elapsed = time.perf_counter() - started

    text = render(sweeps, transient, concurrent, timings, elapsed, args)
    text = abuse.replace_section(text, abuse.section(probes, "with the rest of this file"))
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} in {elapsed:.0f} s", file=sys.stderr)
    failed = any(s.problems for s in sweeps) or any(o.problems for outs in transient.values() for o in outs)
    failed = failed or any(o.problems for outs in concurrent.values() for o in outs)
    return 1 if failed or probes.problems else 0


def portal_abuse_only(out: Path) -> int:
    probes = abuse.run(Path(tempfile.mkdtemp(prefix="labeljob-abuse-")))
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on its own"
    out.write_text(abuse.replace_section(out.read_text(encoding="utf-8"), abuse.section(probes, when)))
    print(f"rewrote the portal abuse section of {out}", file=sys.stderr)
    return 1 if probes.problems else 0


def render(sweeps, transient, concurrent, timings, elapsed: float, args) -> str:
    runs = sum(len(s.outcomes) for s in sweeps)
    lines = [
        "# Reliability",
        "",
        "Produced by `make reliability` (`.venv/bin/python -m tests.reliability`), which runs the harness",
        "in `tests/reliability/` and writes this file; `make test` runs a fast subset of the same scenarios",
        "(`tests/test_reliability.py`). Everything runs on loopback: the fake Ground Truth and fake MTurk of",
        "`tests/fakes/`, S3 on a moto server, the portal on SQLite.",
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores.",
        "",
        "## Crash injection",
        "",
        "Each job is small (portal: 4 images x 2 answers; Ground Truth: 4 images x 3 workers; MTurk: 3",
        "images x 3 workers, HIT ids saved every 2 HITs; the adaptive ones start with 2 answers and the",
        "stopping rule asks up to 2 more, on odd images for the portal, whose crowd disagrees there).",
        "A crash point is one side of one call the command",
        "makes: every botocore call of the product's session (S3, SageMaker, MTurk; reads too), every portal",
        "database write transaction, every write to a local store; *before* it (the call never happens) or",
        "*after* it (it happened, the process died before using the answer). For every crash point k: run",
        "the command, kill it at k (a `BaseException` nothing catches), start a new process (new session,",
        "engine, backend), run the same command again, let the crowd finish and poll to the end.",
        "`poll (partial)` is a poll while half the objects are answered; `poll (final)` the poll that finds",
        "the job done and writes the outputs (in the adaptive jobs, the one that settles or extends tasks).",
        "",
        f"Checked after every run: {CHECKED}. Outputs are compared file by file (augmented manifest,",
        "worker responses, workers report, COCO export, remaining manifest, the workspace copy, the record's",
        "status, counters and outputs), ignoring only `creation-date` and the time in a consolidation-",
        "response file's name.",
        "",
        *crash_table(sweeps),
        "",
        f"{runs} crash runs in all. An extra consolidation-response file appears when a finish that had",
        "written one is interrupted and run again in another second: Ground Truth's layout names these",
        "files by time; nothing reads them back.",
        "",
        "## Transient errors",
        "",
        "A job from launch to outputs with a share of calls failing; botocore's own retries (adaptive",
        "mode, 10 attempts; backoff sleeps removed for speed) absorb the AWS faults. A command that still",
        "fails is run again, as a scheduler would, and counted.",
        "",
        *[f"- {backend}: {text}" for backend, text in TRANSIENT_FAULTS.items()],
        "",
        *transient_table(transient),
        "",
        f"{args.seeds} seeds per backend and rate ({args.seeds * PORTAL_SEED_FACTOR} for the portal, whose "
        "runs make only a few database write transactions).",
        "",
        "## Concurrent polls",
        "",
        "Two real `labeljob poll` processes at once on the same workspace in S3 (moto server), after every",
        "answer is in. `tests/reliability/poller.py` holds both at a barrier until each has read the job",
        "record, so both see the job unfinished and race to write it back. What must hold: both exit 0,",
        "the record ends valid and complete, no answer is lost or stored twice, no MTurk assignment is",
        "approved or rejected twice, the finish step (consolidation and outputs) runs once (the poll",
        "whose conditional write lost to the one that ended the job leaves finishing to it), and the",
        "outputs equal those of a single poller.",
        "",
        *concurrency_table(concurrent),
        "",
        "## Bad input",
        "",
        "`tests/test_fuzz.py` (hypothesis, derandomized, 150 examples per property, 40 for the slow ones):",
        "the element answer, Ground Truth payload (array, JSON Lines, BOM and CRLF), worker-response file",
        "and MTurk answer XML parsers; consolidation of random crowds (NaN, infinities, huge and negative",
        "values, unicode and HTML labels); the augmented manifest round trip; manifest lines (bad JSON,",
        "BOM, CRLF, split reads, very long and non-object lines); random job specs through `parse_spec`",
        "and each backend's `validate`. Each ends in a value, a counted repair or a clear error, but for",
        "the open defects listed at the end.",
        "",
        "Worst cases of one object's consolidation, measured here (not asserted in tests):",
        "",
        "| case | boxes in | seconds |",
        "|---|---:|---:|",
        *[f"| {name} | {boxes} | {seconds:.2f} |" for name, boxes, seconds in timings],
        "",
        "## Problems found",
        "",
        *problems_section(sweeps, transient, concurrent),
        "",
        "Defects the tests found and that are not fixed yet (each test is marked strict xfail, so it fails",
        "the suite once the defect is fixed and the mark must go):",
        "",
        *(open_defects() or ["None."]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
