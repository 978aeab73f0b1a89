"""The review and adjudication app for any augmented manifest (docs/review.md).

`Review` holds the items and the reviewer's decisions and writes REVIEWED, `rejected.manifest` and
the decisions log; `create_review_app` serves it over HTTP.
"""

from orchestrator.review.app import Refused, build_review_app, create_review_app, new_code
from orchestrator.review.session import DECISIONS_NAME, JOB_REVIEWED_KEY, REJECTED_NAME, DecisionIn, Review

__all__ = [
    "DECISIONS_NAME",
    "JOB_REVIEWED_KEY",
    "REJECTED_NAME",
    "DecisionIn",
    "Refused",
    "Review",
    "build_review_app",
    "create_review_app",
    "new_code",
]
