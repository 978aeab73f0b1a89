"""The checked SageMaker call of the Ground Truth backend: refused before sending, error codes kept."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from orchestrator.backends.groundtruth.client import GroundTruthError, call
from orchestrator.errors import BackendError


@pytest.fixture
def sm():
    client = boto3.Session(region_name="us-east-1").client("sagemaker")
    with Stubber(client) as stub:
        yield client, stub


def test_a_request_the_service_model_refuses_is_never_sent(sm):
    client, stub = sm  # a stubber with no responses fails any call that reaches it
    with pytest.raises(BackendError, match="DescribeLabelingJob: invalid request") as info:
        call(client, "DescribeLabelingJob", LabelingJobName="no spaces allowed")
    assert not isinstance(info.value, GroundTruthError)
    stub.assert_no_pending_responses()


def test_a_refusal_keeps_sagemakers_code_and_gives_a_hint_for_throttling(sm):
    client, stub = sm
    stub.add_client_error("describe_labeling_job", "ThrottlingException", "Rate exceeded")
    with pytest.raises(GroundTruthError) as info:
        call(client, "DescribeLabelingJob", LabelingJobName="street-objects-001")
    assert info.value.code == "ThrottlingException"
    assert "DescribeLabelingJob: ThrottlingException: Rate exceeded" in str(info.value)
    assert "safe to repeat" in (info.value.hint or "")


def test_an_accepted_call_returns_the_response(sm):
    client, stub = sm
    stub.add_response("stop_labeling_job", {}, {"LabelingJobName": "street-objects-001"})
    assert call(client, "StopLabelingJob", LabelingJobName="street-objects-001") == {}
