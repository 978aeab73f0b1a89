"""The Ground Truth post-annotation Lambda against a moto S3 payload."""

from __future__ import annotations

import json
import logging

import pytest

from orchestrator.errors import ConfigError
from orchestrator.lambdas import consolidation_handler, consolidation_params


def content(*boxes: tuple, size=(3745, 2497)) -> str:
    boxes_json = [dict(zip(("label", "left", "top", "width", "height"), b, strict=True)) for b in boxes]
    return json.dumps(
        {
            "boundingBox": {
                "boundingBoxes": boxes_json,
                "inputImageProperties": {"width": size[0], "height": size[1]},
            }
        }
    )


def annotation(worker: str, data) -> dict:
    data = data if isinstance(data, dict) else {"content": data}
    return {"workerId": worker, "annotationData": data}


PAYLOAD = [
    {
        "datasetObjectId": "0",
        "dataObject": {"s3Uri": "s3://gt-bucket/images/0.jpg"},
        "annotations": [
            annotation("w1", content(("Bird", 583, 302, 1375, 2052))),
            annotation("w2", content(("Bird", 590, 300, 1370, 2050))),
            # Ground Truth may store a large answer in S3 instead of inline.
            annotation("w3", {"s3Uri": "s3://gt-bucket/answers/w3.json"}),
        ],
    },
    {
        "datasetObjectId": "1",
        "dataObject": {"s3Uri": "s3://gt-bucket/images/1.jpg"},
        "annotations": [
            annotation("w1", content(("Bird", 10, 10, 50, 50))),
            annotation("w2", content()),
            annotation("w3", content()),
        ],
    },
    {
        "datasetObjectId": "2",
        "dataObject": {"s3Uri": "s3://gt-bucket/images/2.jpg"},
        "annotations": [
            annotation("w1", "{broken"),
            annotation("w2", json.dumps({"boundingBox": {"boundingBoxes": "nope"}})),
            annotation("w3", {"s3Uri": "s3://gt-bucket/answers/missing.json"}),
        ],
    },
]


@pytest.fixture
def event(s3):
    client = s3.client("s3")
    client.create_bucket(Bucket="gt-bucket")
    client.put_object(Bucket="gt-bucket", Key="payload/annotations.json", Body=json.dumps(PAYLOAD).encode())
    client.put_object(Bucket="gt-bucket", Key="answers/w3.json", Body=content(("Bird", 585, 305, 1372, 2049)))
    return {
        "version": "2018-10-16",
        "labelingJobArn": "arn:aws:sagemaker:us-east-1:111122223333:labeling-job/birds",
        "labelCategories": ["Bird", "Nest"],
        "labelAttributeName": "bbox",
        "roleArn": "arn:aws:iam::111122223333:role/role-name",
        "payload": {"s3Uri": "s3://gt-bucket/payload/annotations.json"},
    }


def test_handler_returns_ground_truth_consolidation_shape(event, caplog):
    with caplog.at_level(logging.INFO, logger="orchestrator.lambdas"):
        response = consolidation_handler(event, None)
    assert [r["datasetObjectId"] for r in response] == ["0", "1", "2"]
    assert all(list(r["consolidatedAnnotation"]["content"]) == ["bbox"] for r in response)
    first = response[0]["consolidatedAnnotation"]["content"]["bbox"]
    assert first == {
        "image_size": [{"width": 3745, "height": 2497, "depth": 3}],
        # Median edges: left 585, top 302, right 1958, bottom 2354.
        "annotations": [{"class_id": 0, "left": 585, "top": 302, "width": 1373, "height": 2052}],
    }
    # One worker of three drew a box: voted out, empty annotations.
    assert response[1]["consolidatedAnnotation"]["content"]["bbox"]["annotations"] == []
    # Every answer malformed: still a response, with nothing in it.
    assert response[2]["consolidatedAnnotation"]["content"]["bbox"] == {"image_size": [], "annotations": []}

    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.levelno == logging.INFO]
    assert record["objects"] == 3 and record["boxes"] == 1
    assert record["repairs"]["bad_json"] == 2 and record["repairs"]["boxes_not_a_list"] == 1
    assert "roleArn" not in caplog.text and "testing" not in caplog.text
    assert any("missing.json" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_handler_reads_tuning_from_the_environment(event, monkeypatch):
    monkeypatch.setenv("LABELJOB_MIN_SUPPORT", "0.3")
    response = consolidation_handler(event, None)
    assert len(response[1]["consolidatedAnnotation"]["content"]["bbox"]["annotations"]) == 1


def test_consolidation_params():
    assert consolidation_params({}).iou_threshold == 0.5
    assert consolidation_params({"LABELJOB_COORDINATES": "mean"}).coordinates == "mean"
    with pytest.raises(ConfigError):
        consolidation_params({"LABELJOB_WEIGHTING": "sometimes"})


# The test event and payload of AWS's aws-sagemaker-ground-truth-recipe (resources/): no
# labelCategories, an outputConfig, and answers under the element name `annotatedResult`.
RECIPE_PAYLOAD = [
    {
        "datasetObjectId": "0",
        "dataObject": {"s3Uri": "s3://test-bucket/test-image1.jpg"},
        "annotations": [
            annotation(
                "private.us-east-1.CYUQXZT3LFXJIUFCZMZ6HC2KFM",
                json.dumps(
                    {
                        "annotatedResult": {
                            "boundingBoxes": [
                                {"height": 128, "label": "Red", "left": 116, "top": 283, "width": 137},
                                {"height": 141, "label": "Green", "left": 418, "top": 281, "width": 138},
                            ],
                            "inputImageProperties": {"height": 432, "width": 640},
                        }
                    }
                ),
            )
        ],
    },
    {
        "datasetObjectId": "2",
        "dataObject": {"s3Uri": "s3://test-bucket/test-image2.jpg"},
        "annotations": [
            annotation(
                "private.us-east-1.CYUQXZT3LFXJIUFCZMZ6HC2KFM",
                content(("Green", 76, 485, 182, 192), ("Red", 414, 516, 205, 186), size=(1000, 1000)),
            )
        ],
    },
]


@pytest.fixture
def recipe_event(s3):
    client = s3.client("s3")
    client.create_bucket(Bucket="test-bucket")
    client.put_object(
        Bucket="test-bucket",
        Key="sample_annotation_consolidation_payload.json",
        Body=json.dumps(RECIPE_PAYLOAD).encode(),
    )
    return {
        "version": "2018-10-06",
        "labelingJobArn": "arn:aws:sagemaker:us-east-1:111111111111:labeling-job/test-labeling-job",
        "payload": {"s3Uri": "s3://test-bucket/sample_annotation_consolidation_payload.json"},
        "labelAttributeName": "test-label-attribute",
        "roleArn": "arn:aws:iam::111111111111:role/service-role/test-gt-role",
        "outputConfig": "s3://test-bucket/test-image.jpg",
    }


@pytest.mark.parametrize("categories", ["missing", None, []])
def test_handler_without_label_categories_takes_the_labels_of_the_answers(recipe_event, caplog, categories):
    if categories != "missing":
        recipe_event["labelCategories"] = categories
    with caplog.at_level(logging.INFO, logger="orchestrator.lambdas"):
        response = consolidation_handler(recipe_event, None)
    # One worker: each box is its own object; Red appears first in the payload, so it is class 0.
    labels = [response[i]["consolidatedAnnotation"]["content"]["test-label-attribute"] for i in (0, 1)]
    assert [(a["class_id"], a["left"]) for a in labels[0]["annotations"]] == [(0, 116), (1, 418)]
    assert sorted((a["class_id"], a["left"]) for a in labels[1]["annotations"]) == [(0, 414), (1, 76)]
    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.levelno == logging.INFO]
    assert record["labels_from"] == "answers" and record["labels"] == ["Red", "Green"]
    assert record["boxes"] == 4 and "unknown_label" not in record["repairs"]


def test_handler_with_label_categories_keeps_their_order_and_says_so(recipe_event, caplog):
    recipe_event["labelCategories"] = ["Green", "Red"]
    with caplog.at_level(logging.INFO, logger="orchestrator.lambdas"):
        response = consolidation_handler(recipe_event, None)
    first = response[0]["consolidatedAnnotation"]["content"]["test-label-attribute"]["annotations"]
    assert [(a["class_id"], a["left"]) for a in first] == [(1, 116), (0, 418)]
    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.levelno == logging.INFO]
    assert record["labels_from"] == "labelCategories" and "labels" not in record
