"""Gold tasks on MTurk against the fake (docs/mturk.md, "Gold tasks"): gold HITs of the job's own HIT
type, each gold answer scored once, spammers out of the private pool after `gold_min_seen`, and no
gold answer in the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.backends.mturk.hits import spec_problems
from orchestrator.backends.mturk.pool import grant
from orchestrator.errors import SpecError
from orchestrator.jobs import status_row
from orchestrator.spec import parse_spec
from tests.fakes.mturk import IMAGE_BUCKET, SPAMMERS, FakeMTurk, MTurkJob, pedestrian_images

RULES = {"gold_rate": 0.9, "gold_min_f1": 0.5, "gold_min_seen": 2}


def _gold_manifest(folder: Path, images: list[dict]) -> Path:
    """The images' expert boxes as an augmented manifest."""
    path = folder / "gold.manifest"
    lines = [
        {
            "source-ref": f"s3://{IMAGE_BUCKET}/ped/{image['image']}",
            "gold": {
                "image_size": [{"width": image["width"], "height": image["height"], "depth": 3}],
                "annotations": [
                    {"class_id": 0, **{k: round(b[k]) for k in ("left", "top", "width", "height")}}
                    for b in image["expert"]
                ],
            },
            "gold-metadata": {
                "objects": [{"confidence": 1.0} for _ in image["expert"]],
                "class-map": {"0": "pedestrian"},
                "type": "groundtruth/object-detection",
                "human-annotated": "yes",
                "creation-date": "2026-12-01T00:00:00.000000",
                "job-name": "labeling-job/gold",
            },
        }
        for image in images
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_gold_needs_a_crowd_labeljob_scores_and_min_f1_a_private_pool(tmp_path):
    base = {"name": "g", "labels": ["car"], "input_manifest": "in.manifest", "output": "out"}
    with pytest.raises(SpecError, match="portal and mturk backends only"):
        parse_spec({**base, "backend": "groundtruth", "quality": {"gold": "gold.manifest"}})
    public = parse_spec(
        {**base, "backend": "mturk", "workforce": {"type": "public"}, "quality": {"gold": "g", **RULES}}
    )
    assert [key for key, _ in spec_problems(public)] == ["quality.gold_min_f1"]


def test_spammers_lose_the_pool_by_gold_and_gold_never_reaches_the_outputs(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    gold_images = pedestrian_images(7)[4:]
    quality = {"gold": str(_gold_manifest(tmp_path, gold_images)), **RULES}
    private = {"workforce": {"type": "private", "team": "crew"}, "quality": quality}
    job = MTurkJob(fake_mturk, tmp_path, count=4, task={"workers_per_object": 3}, **private)
    crowd = {f"AFAKE{w['worker'].upper()}" for image in job.images + gold_images for w in image["workers"]}
    grant(job.backend.client(job.spec), "crew", sorted(crowd | set(SPAMMERS)))
    record = job.launch()
    gold_hits = [entry["hit"] for entry in record.backend_state["gold_hits"].values()]
    assert len(gold_hits) == 3 and len(record.backend_state["hits"]) == 4
    # Unannounced: the same HIT type as the job's HITs.
    assert len({hit.hit_type_id for hit in fake_mturk.live_hits()}) == 1

    # The spammers get to the gold first: three gold tasks each, then the poll scores them.
    fake_mturk.spam_rate = 1.0
    fake_mturk.work(hit_ids=gold_hits)
    record = job.poll()
    revoked = record.backend_state["gold_revoked"]
    assert set(revoked) == set(SPAMMERS) and status_row(record)["gold_removed"] == revoked
    assert all(
        reason.startswith("gold F1 0.") and "after 3 gold tasks" in reason for reason in revoked.values()
    )
    calls = [c for c in fake_mturk.calls if c.operation == "DisassociateQualificationFromWorker"]
    assert sorted(c.params["WorkerId"] for c in calls) == sorted(SPAMMERS)
    scored = len(record.backend_state["gold_scored"])
    assert job.poll().backend_state["gold_scored"] == record.backend_state["gold_scored"]  # once each
    assert scored == len(fake_mturk.assignments)

    # Out of the pool, the spammers cannot even see the job's HITs; the crowd finishes the job.
    fake_mturk.work()
    job_assignments = [a for a in fake_mturk.assignments.values() if a.hit_id not in gold_hits]
    assert job_assignments and not {a.worker_id for a in job_assignments} & set(SPAMMERS)
    for _ in range(3):
        record = job.poll()
        fake_mturk.work()
    assert record.status == "completed" and record.counters.labeled == 4
    output = Path(record.outputs["manifest"].removeprefix("file://")).read_text()
    assert not any(image["image"] in output for image in gold_images)
    responses = job.output_folder() / "annotations" / "worker-response" / "iteration-1"
    assert sorted(p.name for p in responses.iterdir()) == ["0", "1", "2", "3"]
    assert set(SPAMMERS) <= set(record.backend_state["gold_scores"])
    # The ended job's gold HITs take no more workers.
    expired = {c.params["HITId"] for c in fake_mturk.calls if c.operation == "UpdateExpirationForHIT"}
    assert set(gold_hits) <= expired
