"""MTurk's fee arithmetic and the backend's estimate: tiers, minimum fee, Masters, half-up rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.mturk.backend import MTurkBackend
from orchestrator.backends.mturk.fees import assignment_fee, job_cost, round_half_up
from orchestrator.spec import AdaptiveSpec, parse_spec


def spec(workers: int = 5, **mturk) -> object:
    return parse_spec(
        {
            "name": "fees",
            "backend": "mturk",
            "labels": ["pedestrian"],
            "input_manifest": "in.manifest",
            "output": "out",
            "task": {"workers_per_object": workers},
            "workforce": {"type": "public"},
            "mturk": {"sandbox": False, **mturk},
        }
    )


def test_rounding_is_half_up_not_bankers() -> None:
    assert round_half_up(Decimal("0.105")) == Decimal("0.11")
    assert round_half_up(Decimal("0.125")) == Decimal("0.13")  # round() would give 0.12
    assert round_half_up(Decimal("0.0249")) == Decimal("0.02")


@pytest.mark.parametrize(
    ("reward", "assignments", "masters", "fee"),
    [
        ("0.10", 5, False, "0.02"),  # 20 %
        ("0.10", 9, False, "0.02"),
        ("0.10", 10, False, "0.04"),  # 20 % + 20 % from 10 assignments on
        ("0.10", 5, True, "0.03"),  # 25 % of 0.10 = 0.025, half up
        ("0.10", 10, True, "0.05"),  # 45 %
        ("0.01", 5, False, "0.01"),  # 0.002: the $0.01 minimum
        ("0.04", 5, False, "0.01"),  # 0.008: the minimum
        ("0.05", 5, False, "0.01"),
        ("0.53", 3, False, "0.11"),  # 0.106
        ("1.25", 12, False, "0.50"),
    ],
)
def test_assignment_fee(reward: str, assignments: int, masters: bool, fee: str) -> None:
    assert assignment_fee(Decimal(reward), assignments, masters) == Decimal(fee)


@given(
    cents=st.integers(min_value=1, max_value=10_000),
    assignments=st.integers(min_value=1, max_value=100),
    masters=st.booleans(),
)
def test_fee_matches_the_published_formula(cents: int, assignments: int, masters: bool) -> None:
    reward = Decimal(cents) / 100
    rate = (
        Decimal("0.20") + (Decimal("0.20") if assignments >= 10 else 0) + (Decimal("0.05") if masters else 0)
    )
    expected = max(Decimal("0.01"), (reward * rate).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP"))
    fee = assignment_fee(reward, assignments, masters)
    assert fee == expected
    assert fee >= Decimal("0.01")
    assert assignment_fee(reward, max(assignments, 10), masters) >= fee


def test_job_cost_total() -> None:
    cost = job_cost("0.12", hits=100, assignments=5, masters=False)
    assert cost.total_assignments == 500
    assert cost.total == Decimal("70.00")  # 500 x (0.12 + 0.024 rounded to 0.02)


def test_estimate_lines_production() -> None:
    estimate = MTurkBackend().estimate(spec(reward_usd="0.10"), 20)
    assert [(line.quantity, line.unit_usd) for line in estimate.lines] == [(100, 0.10), (100, 0.02)]
    assert estimate.total_usd == 12.00
    assert any("closed permanently on 2026-09-30" in note for note in estimate.notes)


def test_an_adaptive_estimate_prices_the_most_and_names_the_least_and_the_expected() -> None:
    adaptive = spec(reward_usd="0.10").model_copy(deep=True)
    adaptive.task.adaptive = AdaptiveSpec(min_workers=2, max_workers=7)
    estimate = MTurkBackend().estimate(adaptive, 20)
    # 140 assignments at most, $0.12 each (the fee stays 20 %: HITs start below 10 and stay there).
    assert [(line.quantity, line.unit_usd) for line in estimate.lines] == [(140, 0.10), (140, 0.02)]
    assert estimate.total_usd == 16.80
    note = next(n for n in estimate.notes if n.startswith("adaptive"))
    assert "at least $4.80 (2 each), about $8.88 expected (3.7 each" in note


def test_estimate_ten_or_more_assignments_costs_forty_percent_and_says_so() -> None:
    estimate = MTurkBackend().estimate(spec(workers=10, reward_usd="0.10"), 20)
    assert estimate.total_usd == 28.00  # 200 x 0.10 + 200 x 0.04
    assert "40 %" in estimate.lines[1].item
    assert any("9 or fewer" in note for note in estimate.notes)


def test_estimate_masters_fee_is_its_own_line() -> None:
    estimate = MTurkBackend().estimate(spec(reward_usd="0.10", masters=True), 20)
    assert [line.unit_usd for line in estimate.lines] == [0.10, 0.02, 0.01]
    assert "Masters" in estimate.lines[2].item
    assert estimate.total_usd == 13.00


def test_estimate_minimum_fee_applies_per_assignment() -> None:
    estimate = MTurkBackend().estimate(spec(reward_usd="0.02"), 10)
    assert estimate.lines[1].unit_usd == 0.01
    assert estimate.total_usd == 1.50


def test_sandbox_costs_nothing_and_names_the_real_price() -> None:
    estimate = MTurkBackend().estimate(spec(reward_usd="0.10", sandbox=True), 20)
    assert estimate.total_usd == 0
    assert any("$12.00" in note for note in estimate.notes)
