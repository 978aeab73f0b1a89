"""`consolidation.assignment` is scipy's solver, loaded without `scipy.optimize`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_solver

from orchestrator.consolidation.assignment import linear_sum_assignment


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (7, 2), (12, 12)])
def test_the_same_assignment_as_scipy_optimize(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(50):
        cost = rng.random(shape) * (rng.random(shape) > 0.5)  # zeros too, as the vote's matrices have
        for maximize in (True, False):
            ours = linear_sum_assignment(cost, maximize=maximize)
            theirs = scipy_solver(cost, maximize=maximize)
            assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_a_bad_matrix_fails_as_scipy_fails():
    with pytest.raises(ValueError, match="invalid"):
        linear_sum_assignment(np.array([[np.nan, 1.0], [1.0, 0.0]]))


def test_solving_does_not_import_scipy_optimize():
    code = (
        "import sys, numpy as np\n"
        "from orchestrator.consolidation.assignment import linear_sum_assignment\n"
        "print(linear_sum_assignment(np.eye(3), maximize=True)[1].tolist())\n"
        "print('scipy.optimize' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[0,", "1,", "2]", "False"]
