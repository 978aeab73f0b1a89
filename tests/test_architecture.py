"""The layout of the package (docs/architecture.md), checked from the source: imports run one way.

Every import counts, including those inside functions and under `TYPE_CHECKING`: a typing-only import
is still the contract pointing the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"

# Lower layers first; a module may import its own layer and the layers before it, never a later one.
LAYERS = [
    {"errors", "config", "spec", "redact", "fastjson", "storage", "aws", "service_model", "iam_policy"}
    | {"templates"},
    {"manifest", "consolidation"},
    {"outputs"},
    {"review"},
    {"jobs"},
    {"backends", "training"},
    {"cli", "lambdas", "demo", "doctor"},
]
WORKFORCE_WORDS = ("mturk", "groundtruth", "ground_truth", "portal", "private_workforce", "workforce")


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (not itself or its submodules)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not target.startswith(name + "."):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def top_package(module: str) -> str:
    """`orchestrator.jobs.store` -> `jobs`; `orchestrator` itself -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = packages.setdefault(top_package(module), set())
        edges.update(top_package(t) for t in targets if top_package(t) != top_package(module))
    return packages


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


# ------------------------------------------------------------------------- the checker itself


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_reader_sees_relative_function_level_and_typing_imports(tmp_path):
    pkg = tmp_path / "orchestrator"
    (pkg / "jobs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "jobs" / "__init__.py").write_text("")
    (pkg / "backends.py").write_text("")
    (pkg / "jobs" / "store.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from orchestrator.backends import x\n"
        "def f():\n    from . import record\n"
    )
    (pkg / "jobs" / "record.py").write_text("")
    files = module_files(pkg)
    found = imported_modules("orchestrator.jobs.store", files["orchestrator.jobs.store"], set(files))
    assert found == {"orchestrator.backends", "orchestrator.jobs.record", "orchestrator.jobs"}


# ------------------------------------------------------------------------------- the package


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_top_level_packages():
    cycle = find_cycle(package_graph(import_graph()))
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_every_top_level_module_has_a_layer():
    packages = {top_package(m) for m in module_files()} - {""}
    unplaced = sorted(p for p in packages if not any(p in layer for layer in LAYERS))
    assert not unplaced, f"add these to LAYERS and docs/architecture.md: {unplaced}"


@pytest.mark.parametrize(
    "package",
    sorted(
        {p for layer in LAYERS for p in layer if (PACKAGE / p).is_dir() or (PACKAGE / f"{p}.py").exists()}
    ),
)
def test_imports_run_one_way(package: str):
    graph = package_graph(import_graph())
    upward = sorted(t for t in graph.get(package, ()) if t and layer_of(t) > layer_of(package))
    assert not upward, f"{package} imports the later layer(s) {upward}"


def test_the_job_layer_owns_the_backend_protocol():
    graph = import_graph()
    wrong = sorted(
        f"{m} -> {t}"
        for m, ts in graph.items()
        if top_package(m) == "jobs"
        for t in ts
        if top_package(t) == "backends"
    )
    assert not wrong


def test_consolidation_is_pure():
    """No AWS, no storage, no HTTP: consolidation takes answers and returns results."""
    for name, path in module_files().items():
        if top_package(name) != "consolidation":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for imported in names:
                    assert not imported.startswith(("boto3", "botocore", "httpx", "orchestrator.storage")), (
                        f"{name} imports {imported}"
                    )


def test_no_top_level_module_is_named_after_a_workforce():
    top = [p.stem for p in PACKAGE.glob("*.py")] + [p.name for p in PACKAGE.iterdir() if p.is_dir()]
    named = sorted(n for n in top if n.startswith(WORKFORCE_WORDS))
    assert not named, f"move these into backends/<workforce>/: {named}"
    assert {p.name for p in (PACKAGE / "backends").iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "groundtruth",
        "mturk",
        "portal",
    }
