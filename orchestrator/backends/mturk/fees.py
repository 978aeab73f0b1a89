"""Mechanical Turk's fees, as published on mturk.com/pricing, in exact decimal arithmetic.

MTurk takes 20 % of the reward, another 20 % when a HIT has 10 or more assignments, and 5 % more
for Masters; at least $0.01 per assignment; rounded half up to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

BASE_RATE = Decimal("0.20")
LARGE_HIT_RATE = Decimal("0.20")
MASTERS_RATE = Decimal("0.05")
MINIMUM_FEE = Decimal("0.01")
# From this many assignments per HIT on, MTurk charges the extra 20 %.
LARGE_HIT_ASSIGNMENTS = 10
CENT = Decimal("0.01")


def round_half_up(amount: Decimal) -> Decimal:
    """To the cent, half up: 0.105 -> 0.11 (MTurk's rule; Python's round() would give 0.10)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def fee_rate(max_assignments: int, masters: bool) -> Decimal:
    """The share of the reward MTurk charges on each assignment of a HIT."""
    rate = BASE_RATE
    if max_assignments >= LARGE_HIT_ASSIGNMENTS:
        rate += LARGE_HIT_RATE
    if masters:
        rate += MASTERS_RATE
    return rate


def assignment_fee(reward: Decimal, max_assignments: int, masters: bool) -> Decimal:
    """MTurk's fee on one approved assignment: the rate applied, rounded, never below $0.01."""
    return max(MINIMUM_FEE, round_half_up(reward * fee_rate(max_assignments, masters)))


@dataclass(frozen=True)
class JobCost:
    """What a job of `hits` HITs with `assignments` each costs when every assignment is approved."""

    hits: int
    assignments: int
    reward: Decimal
    fee: Decimal
    rate: Decimal

    @property
    def total_assignments(self) -> int:
        return self.hits * self.assignments

    @property
    def total(self) -> Decimal:
        return (self.reward + self.fee) * self.total_assignments


def job_cost(reward_usd: str, hits: int, assignments: int, masters: bool) -> JobCost:
    reward = Decimal(reward_usd)
    return JobCost(
        hits=hits,
        assignments=assignments,
        reward=reward,
        fee=assignment_fee(reward, assignments, masters),
        rate=fee_rate(assignments, masters),
    )
