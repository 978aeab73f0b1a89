"""Workforce backends behind one protocol (see base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.jobs import Backend
    from orchestrator.storage import ObjectStore


def get_backend(name: str, *, boto3_session=None, workspace: ObjectStore | None = None) -> Backend:
    """The backend called `name`, built from the caller's session and workspace store."""
    if name == "portal":
        from orchestrator.backends.portal.backend import PortalBackend

        return PortalBackend(workspace=workspace, boto3_session=boto3_session)
    if name == "groundtruth":
        from orchestrator.backends.groundtruth.backend import GroundTruthBackend

        return GroundTruthBackend(boto3_session=boto3_session, workspace=workspace)
    if name == "mturk":
        from orchestrator.backends.mturk.backend import MTurkBackend

        return MTurkBackend(boto3_session=boto3_session, workspace=workspace)
    raise ConfigError(f"unknown backend {name!r}", hint="use portal, groundtruth or mturk")
