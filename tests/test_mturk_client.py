"""The MTurk client: endpoint, checked requests, MTurk's error codes, retries; and the fake's own rules."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from orchestrator.backends.mturk.client import (
    PRODUCTION_ENDPOINT,
    SANDBOX_ENDPOINT,
    MTurkError,
    call,
    mturk_client,
    paginate,
)
from orchestrator.errors import BackendError
from tests.fakes.mturk import FakeMTurk


def session() -> boto3.Session:
    return boto3.Session(region_name="eu-west-1")  # MTurk is us-east-1 whatever the session says


def test_sandbox_endpoint_by_default_and_production_on_request() -> None:
    sandbox = mturk_client(session(), sandbox=True)
    assert sandbox.meta.endpoint_url == SANDBOX_ENDPOINT
    assert sandbox.meta.region_name == "us-east-1"
    assert mturk_client(session(), sandbox=False).meta.endpoint_url == PRODUCTION_ENDPOINT


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_MTURK", "AWS_ENDPOINT_URL"])
@pytest.mark.parametrize("sandbox", [True, False])
def test_a_configured_endpoint_wins_over_the_sandbox(monkeypatch, variable: str, sandbox: bool) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    assert mturk_client(session(), sandbox=sandbox).meta.endpoint_url == "http://127.0.0.1:9"


def test_client_retries_adaptively() -> None:
    retries = mturk_client(session(), sandbox=True).meta.config.retries
    assert retries["mode"] == "adaptive"
    assert retries["total_max_attempts"] >= 10


def test_an_invalid_request_is_refused_before_it_is_sent(fake_mturk: FakeMTurk) -> None:
    mturk = mturk_client(session(), sandbox=True)
    with pytest.raises(BackendError, match=r"Reward: '0\.125' does not match"):
        call(
            mturk,
            "CreateHITType",
            AssignmentDurationInSeconds=300,
            Reward="0.125",
            Title="t",
            Description="d",
        )
    assert fake_mturk.calls == []


def test_turk_error_code_is_read_from_the_top_level(fake_mturk: FakeMTurk) -> None:
    mturk = mturk_client(session(), sandbox=True)
    with pytest.raises(MTurkError) as caught:
        call(mturk, "GetHIT", HITId="3NOSUCHHIT")
    assert caught.value.code == "RequestError"
    assert caught.value.turk_code == "AWS.MechanicalTurk.HITDoesNotExist"
    assert "sandbox" in (caught.value.hint or "")


def test_throttling_is_retried(fake_mturk: FakeMTurk, fast_retries: None) -> None:
    fake_mturk.faults.throttle("GetAccountBalance", times=3)
    balance = call(mturk_client(session(), sandbox=True), "GetAccountBalance")
    assert balance["AvailableBalance"] == "10000.00"
    assert fake_mturk.count("GetAccountBalance", "ThrottlingException") == 3


def test_service_faults_are_retried(fake_mturk: FakeMTurk, fast_retries: None) -> None:
    fake_mturk.faults.service_faults(rate=0.5, seed=1)
    mturk = mturk_client(session(), sandbox=True)
    for _ in range(10):
        call(mturk, "GetAccountBalance")
    assert fake_mturk.count("GetAccountBalance", "AWS.ServiceUnavailable") > 0
    assert fake_mturk.count("GetAccountBalance") == 10


def test_paginate_reads_every_page(fake_mturk: FakeMTurk) -> None:
    mturk = mturk_client(session(), sandbox=True)
    for i in range(7):
        call(
            mturk, "CreateQualificationType", Name=f"q{i}", Description="d", QualificationTypeStatus="Active"
        )
    names = [
        q["Name"]
        for q in paginate(mturk, "ListQualificationTypes", "QualificationTypes", MustBeRequestable=False)
    ]
    assert names == [f"q{i}" for i in range(7)]


# ------------------------------------------------------------------------ the fake's own rules


def raw(fake: FakeMTurk):
    return boto3.Session(region_name="us-east-1").client(
        "mturk", region_name="us-east-1", endpoint_url=fake.url
    )


def test_fake_checks_the_service_model_botocore_skips() -> None:
    with FakeMTurk() as fake:
        with pytest.raises(ClientError) as caught:
            raw(fake).create_hit_type(
                AssignmentDurationInSeconds=300, Reward="1.234", Title="t", Description="d"
            )
    assert caught.value.response["Error"]["Code"] == "ParameterValidationError"
    assert "Reward" in caught.value.response["Error"]["Message"]


def test_fake_requires_us_east_1_signatures() -> None:
    with FakeMTurk() as fake:
        client = boto3.Session().client("mturk", region_name="sandbox", endpoint_url=fake.url)
        with pytest.raises(ClientError, match="us-east-1"):
            client.get_account_balance()


def test_fake_enforces_assignment_rules() -> None:
    with FakeMTurk() as fake:
        client = raw(fake)
        type_id = client.create_hit_type(
            AssignmentDurationInSeconds=300,
            Reward="0.05",
            Title="t",
            Description="d",
            AutoApprovalDelayInSeconds=60,
        )["HITTypeId"]
        question = (
            '<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/'
            'HTMLQuestion.xsd"><HTMLContent><![CDATA[<p>x</p>]]></HTMLContent><FrameHeight>0</FrameHeight>'
            "</HTMLQuestion>"
        )
        hit = client.create_hit_with_hit_type(
            HITTypeId=type_id,
            MaxAssignments=5,
            LifetimeInSeconds=600,
            Question=question,
            UniqueRequestToken="t1",
        )["HIT"]
        with pytest.raises(ClientError) as repeated:
            client.create_hit_with_hit_type(
                HITTypeId=type_id,
                MaxAssignments=5,
                LifetimeInSeconds=600,
                Question=question,
                UniqueRequestToken="t1",
            )
        assert repeated.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.HitAlreadyExists"
        assert hit["HITId"] in repeated.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as crossing:
            client.create_additional_assignments_for_hit(HITId=hit["HITId"], NumberOfAdditionalAssignments=5)
        assert (
            crossing.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease"
        )
        with pytest.raises(ClientError, match="Reviewing, Reviewable"):
            client.delete_hit(HITId=hit["HITId"])
        fake.work(limit=1)
        (assignment,) = client.list_assignments_for_hit(HITId=hit["HITId"])["Assignments"]
        client.approve_assignment(AssignmentId=assignment["AssignmentId"])
        with pytest.raises(ClientError) as twice:
            client.approve_assignment(AssignmentId=assignment["AssignmentId"])
        assert twice.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.InvalidAssignmentState"
        with pytest.raises(ClientError, match="idempotency token"):
            for _ in range(2):
                client.update_expiration_for_hit(HITId=hit["HITId"], ExpireAt=0)
        fake.advance(1)  # expired, one of five answered and approved: reviewable, deletable
        client.delete_hit(HITId=hit["HITId"])
        with pytest.raises(ClientError, match="does not exist"):
            client.get_hit(HITId=hit["HITId"])


def test_fake_auto_approves_as_its_clock_passes() -> None:
    with FakeMTurk() as fake:
        client = raw(fake)
        hit = client.create_hit(
            LifetimeInSeconds=600,
            AssignmentDurationInSeconds=300,
            AutoApprovalDelayInSeconds=3600,
            Reward="0.05",
            Title="t",
            Description="d",
            Question=(
                '<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
                '2006-07-14/ExternalQuestion.xsd"><ExternalURL>https://example.com/task</ExternalURL>'
                "<FrameHeight>0</FrameHeight></ExternalQuestion>"
            ),
        )["HIT"]
        fake.work()
        fake.advance(3601)
        (assignment,) = client.list_assignments_for_hit(HITId=hit["HITId"])["Assignments"]
        assert assignment["AssignmentStatus"] == "Approved"
