"""`labeljob dataset card` on the demo job and on a Ground Truth output manifest written by hand from
docs/groundtruth.md ("Limits")."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.training.png import BAR, bar_chart_png
from tests.test_output import GT_LINE

# The output line of docs/groundtruth.md "Limits" (its bucket name lowercased: S3 allows no capitals),
# then a second image whose box leaves it.
GT_LINES = [
    {**GT_LINE, "source-ref": "s3://awsdoc-example-bucket/example_image.png"},
    {
        **GT_LINE,
        "source-ref": "s3://awsdoc-example-bucket/example_image_2.png",
        "bbox": {
            "image_size": [{"width": 500, "height": 400, "depth": 3}],
            "annotations": [{"class_id": 0, "left": 450, "top": 10, "width": 100, "height": 200}],
        },
    },
]


def card(tmp_path, source: str, *global_args: str) -> str:
    result = CliRunner().invoke(
        app,
        [*global_args, "--format", "json", "dataset", "card", source, "--out", str(tmp_path / "DATASET.md")],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["histogram"].endswith("/DATASET-box-sizes.png")
    return (tmp_path / "DATASET.md").read_text()


def test_a_manifest_without_a_label_attribute_is_refused(tmp_path):
    manifest = tmp_path / "input.manifest"
    manifest.write_text('{"source-ref": "s3://bucket/a.jpg"}\n')
    result = CliRunner().invoke(app, ["dataset", "card", str(manifest), "--out", str(tmp_path / "D.md")])
    assert result.exit_code == 1
    assert "no line has a bounding-box label attribute" in result.stderr
    assert not (tmp_path / "D.md").exists()


def test_the_card_of_a_ground_truth_output_manifest(tmp_path):
    manifest = tmp_path / "output.manifest"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in GT_LINES))
    text = card(tmp_path, str(manifest))
    assert text.startswith("---\nlicense: other  # TO FILL IN")
    assert "task_categories:\n- object-detection\n" in text
    # class_id is the index the algorithm trains on: ids 1-4 exist, with no image.
    assert (
        "| 0 | dog | 2 | 2 |" in text and "| 5 | bone | 1 | 1 |" in text and "| 3 | class_3 | 0 | 0 |" in text
    )
    # sqrt(61 x 128) = 88.4, sqrt(30 x 30) = 30, sqrt(100 x 200) = 141.4
    assert "| 16-32 px | 1 |" in text and "| 64-96 px | 1 |" in text and "| 128-256 px | 1 |" in text
    assert "**Labeling jobs:** identify-dogs-and-toys" in text
    assert "**Workforce, workers, consolidation:** not in the manifest" in text
    assert "- 1 boxes reaching outside their image" in text
    assert "**Review decisions:** adjustment job: unadjusted 2" in text
    assert "| all (no split key) | 2 |" in text


def test_the_card_of_the_demo_job(tmp_path):
    demo = tmp_path / "demo"
    assert CliRunner().invoke(app, ["demo", "--dir", str(demo)]).exit_code == 0
    text = card(tmp_path, "demo-street-objects", "--workspace", str(demo / "workspace"))
    manifest = demo / "output" / "demo-street-objects" / "manifests" / "output" / "output.manifest"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    images, boxes = Counter(), Counter()
    for line in lines:
        ids = [box["class_id"] for box in line["bbox"]["annotations"]]
        boxes.update(ids)
        images.update(set(ids))
    for class_id, name in enumerate(["car", "pedestrian", "sign"]):
        assert f"| {class_id} | {name} | {images[class_id]} | {boxes[class_id]} |" in text
    workers = list(csv.DictReader((demo / "output/demo-street-objects/reports/workers.csv").open()))
    assert f"{len(workers)} distinct workers" in text
    assert "**Workforce:** portal (private)" in text and "**Workers:** 5 an image" in text
    assert "iou_threshold 0.5, min_support 0.5, coordinates median, weighting agreement" in text
    assert "classes under 50 images" in text  # the demo's sample bucket is small, and says so
    png = Image.open(tmp_path / "DATASET-box-sizes.png")
    assert png.size == (480, 240) and png.mode == "RGB"


@pytest.mark.parametrize("counts", [[0, 3, 9, 1], [5]])
def test_the_tallest_bar_reaches_the_top_margin_and_an_empty_bin_has_none(tmp_path, counts):
    path = tmp_path / "h.png"
    path.write_bytes(bar_chart_png(counts, width=200, height=100, margin=10))
    image = Image.open(path).convert("RGB")
    slot = 180 // len(counts)
    centres = [10 + i * slot + slot // 2 for i in range(len(counts))]
    tallest = counts.index(max(counts))
    assert image.getpixel((centres[tallest], 10)) == BAR
    assert image.getpixel((centres[tallest], 9)) != BAR
    for centre, count in zip(centres, counts, strict=True):
        assert (image.getpixel((centre, 89)) == BAR) == (count > 0)
