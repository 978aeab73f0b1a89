"""scipy's `linear_sum_assignment`, without importing `scipy.optimize`.

The solver is one compiled module, `scipy/optimize/_lsap`, that needs only numpy; `scipy.optimize`'s
package import brings in scipy.linalg, sparse and the optimizers with it, about 0.3 s of CPU that a
`labeljob consolidate` on a job of thousands of images spent on nothing else (docs/benchmarks.md).
The module is loaded from its file under scipy's own name; where a scipy release moves it, the public
import is used, so only the start-up time is at stake, never the result.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["linear_sum_assignment"]

_MODULE = "scipy.optimize._lsap"


@cache
def _solver() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    loaded = sys.modules.get(_MODULE)
    if loaded is None:
        import scipy

        folder = Path(scipy.__file__).parent / "optimize"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_lsap{suffix}"
            if path.is_file():
                spec = importlib.util.spec_from_file_location(_MODULE, path)
                if spec is not None and spec.loader is not None:
                    loaded = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(loaded)
                break
    solve = getattr(loaded, "linear_sum_assignment", None)
    if solve is None:
        from scipy.optimize import linear_sum_assignment as solve
    return solve


def linear_sum_assignment(cost: np.ndarray, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`scipy.optimize.linear_sum_assignment(cost, maximize)`: rows and columns of an optimal assignment."""
    return _solver()(cost, maximize=maximize)
