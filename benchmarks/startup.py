"""Start-up time of `labeljob` commands against `python -c "import boto3"`, process start to exit.

Each run is a fresh process; the commands run interleaved, `--repeats` times each, and the best wall
time and the best CPU time (user + system, from the child's rusage) of each are kept. `status` reads
a local workspace holding `--jobs` job records. labeljob's bytecode is cached in a temporary
`PYTHONPYCACHEPREFIX` by a first, untimed run of each command, as an installed package's would be
(with PYTHONDONTWRITEBYTECODE set, every run would compile labeljob's sources again).

    .venv/bin/python -m benchmarks.startup
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.jobs import JobStore, new_record
from orchestrator.spec import example_spec_toml, parse_spec
from orchestrator.storage import LocalStore

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.0  # at most this many times `import boto3`


def make_workspace(folder: Path, n_jobs: int) -> None:
    import tomllib

    spec = tomllib.loads(example_spec_toml())
    jobs = JobStore(LocalStore(folder))
    for i in range(n_jobs):
        jobs.create(new_record(parse_spec({**spec, "name": f"startup-job-{i:03d}"}), total=25))


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of `argv`, which must exit 0."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="job records in the workspace")
    parser.add_argument("--repeats", type=int, default=15, help="runs of each command; the best is kept")
    args = parser.parse_args()

    labeljob = str(Path(sys.executable).with_name("labeljob"))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        workspace = Path(tmp) / "workspace"
        make_workspace(workspace, args.jobs)
        commands = {
            'python -c "import boto3"': [sys.executable, "-c", "import boto3"],
            "labeljob --help": [labeljob, "--help"],
            f"labeljob status ({args.jobs} jobs)": [labeljob, "--workspace", str(workspace), "status"],
            f"labeljob --format json status ({args.jobs} jobs)": [
                labeljob,
                "--workspace",
                str(workspace),
                "--format",
                "json",
                "status",
            ],
        }
        for argv in commands.values():
            run_once(argv, env)
        best = {name: [float("inf"), float("inf")] for name in commands}
        for _ in range(args.repeats):
            for name, argv in commands.items():
                wall, cpu = run_once(argv, env)
                best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]

    base_wall, base_cpu = best['python -c "import boto3"']
    print(f"best of {args.repeats}, interleaved; target: at most {TARGET:g}x `import boto3`\n")
    print("| command | wall ms | CPU ms | x boto3 (wall) | x boto3 (CPU) | met |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (wall, cpu) in best.items():
        ratio_wall, ratio_cpu = wall / base_wall, cpu / base_cpu
        met = "" if name.startswith("python") else ("yes" if max(ratio_wall, ratio_cpu) <= TARGET else "no")
        print(
            f"| {name} | {wall * 1000:.0f} | {cpu * 1000:.0f} | {ratio_wall:.2f} | {ratio_cpu:.2f} | {met} |"
        )


if __name__ == "__main__":
    main()
