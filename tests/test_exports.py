"""COCO, Pascal VOC, YOLO and CSV exports of an augmented manifest; label maps; confidence filter."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import stat
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from orchestrator.consolidation import ConsolidatedBox, ObjectResult
from orchestrator.errors import InputError
from orchestrator.outputs import AugmentedLine, augmented_line, export_lines, parse_label_map
from orchestrator.outputs.exports.dataset import build_dataset, file_stems
from orchestrator.storage import LocalStore, open_store

LABELS = ["car", "truck", "bicycle"]


def line(source_ref: str, boxes: list[tuple], size=(400, 200), labels=LABELS) -> AugmentedLine:
    """An augmented line; each box is (label, left, top, width, height, confidence)."""
    consolidated = [ConsolidatedBox(*b, support=1.0, votes=3, mean_iou=0.9, workers=("w",)) for b in boxes]
    result = ObjectResult("0", source_ref, size[0], size[1], consolidated, n_workers=3)
    data = augmented_line({"source-ref": source_ref}, result, labels, "bbox", "job", datetime(2026, 1, 1))
    return AugmentedLine.from_json(data, "bbox")


@pytest.fixture
def lines() -> list[AugmentedLine]:
    return [
        line("s3://bucket/images/a.jpg", [("car", 100, 50, 200, 100, 0.9), ("bicycle", 10, 10, 20, 30, 0.4)]),
        line("s3://bucket/images/b.png", [("truck", 0, 0, 40, 40, 0.75)], size=(640, 480)),
        line("s3://bucket/images/empty.jpg", []),
    ]


def test_coco_loads_in_pycocotools_and_faster_coco_eval_with_ap_one(tmp_path, lines):
    summary = export_lines(lines, "coco", LocalStore(tmp_path))
    assert (summary.images, summary.boxes, summary.files) == (3, 3, 1)
    path = str(tmp_path / "annotations.json")
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert doc["images"][0] == {"id": 1, "file_name": "s3://bucket/images/a.jpg", "width": 400, "height": 200}
    assert doc["annotations"][0] == {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "bbox": [100, 50, 200, 100],
        "area": 20000,
        "iscrowd": 0,
        "score": 0.9,
    }
    assert [c["name"] for c in doc["categories"]] == ["car", "truck", "bicycle"]
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3]

    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(path)
        evaluation = COCOeval(gt, gt.loadRes(doc["annotations"]), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        fast_gt = FastCOCO(path)
        fast = COCOeval_faster(fast_gt, fast_gt.loadRes(doc["annotations"]), "bbox")
        fast.evaluate()
        fast.accumulate()
        fast.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    assert fast.stats[0] == pytest.approx(1.0)
    assert len(gt.getImgIds()) == len(fast_gt.getImgIds()) == 3


def test_yolo_normalized_values_exact(tmp_path, lines):
    summary = export_lines(lines, "yolo", LocalStore(tmp_path))
    assert summary.warnings == []
    # Box 100,50 200x100 in 400x200: centre (200, 100) -> 0.5 0.5, size 0.5 0.5.
    assert (tmp_path / "labels/a.txt").read_text() == (
        "0 0.500000 0.500000 0.500000 0.500000\n2 0.050000 0.125000 0.050000 0.150000\n"
    )
    assert (tmp_path / "labels/b.txt").read_text() == "1 0.031250 0.041667 0.062500 0.083333\n"
    assert (tmp_path / "labels/empty.txt").read_text() == ""
    assert (tmp_path / "classes.txt").read_text() == "car\ntruck\nbicycle\n"
    data_yaml = (tmp_path / "data.yaml").read_text()
    assert 'nc: 3\nnames:\n  0: "car"\n  1: "truck"\n  2: "bicycle"\n' in data_yaml
    rows = list(csv.DictReader((tmp_path / "images.csv").open()))
    assert rows[1] == {
        "image": "b.png",
        "label_file": "labels/b.txt",
        "source-ref": "s3://bucket/images/b.png",
    }


def test_yolo_skips_images_of_unknown_size(tmp_path):
    unsized = [line("s3://b/x.jpg", [("car", 1, 1, 2, 2, 0.5)], size=(None, None))]
    summary = export_lines(unsized, "yolo", LocalStore(tmp_path))
    assert summary.warnings == ["s3://b/x.jpg: image size unknown, no YOLO label file written"]
    assert not (tmp_path / "labels").exists()


def test_voc_xml_parses_with_one_based_corners(tmp_path, lines):
    summary = export_lines(lines, "voc", LocalStore(tmp_path))
    assert summary.files == 3
    root = ET.parse(tmp_path / "Annotations/a.xml").getroot()
    assert root.tag == "annotation"
    assert root.findtext("filename") == "a.jpg"
    assert root.findtext("path") == "s3://bucket/images/a.jpg"
    assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == ["400", "200", "3"]
    objects = root.findall("object")
    assert [o.findtext("name") for o in objects] == ["car", "bicycle"]
    box = objects[0].find("bndbox")
    assert [box.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")] == ["101", "51", "300", "150"]
    assert ET.parse(tmp_path / "Annotations/empty.xml").getroot().findall("object") == []


def test_csv_header_and_rows(tmp_path, lines):
    export_lines(lines, "csv", LocalStore(tmp_path))
    text = (tmp_path / "annotations.csv").read_text().splitlines()
    assert text[0] == "image,label,xmin,ymin,xmax,ymax,confidence"
    assert text[1] == "s3://bucket/images/a.jpg,car,100,50,300,150,0.9"
    assert text[-1] == "s3://bucket/images/empty.jpg,,,,,,"  # a negative keeps its row
    assert len(text) == 5


def test_label_map_merges_renames_and_drops(tmp_path, lines):
    mapping = parse_label_map("from,to\ntruck,car\ncar,vehicle\n\n# bikes are out\nbicycle,\n", "map.csv")
    assert mapping == {"truck": "car", "car": "vehicle", "bicycle": None}
    # One step only: truck becomes car (not vehicle); car becomes vehicle.
    summary = export_lines(lines, "csv", LocalStore(tmp_path), label_map=mapping)
    assert summary.categories == ["vehicle", "car"]
    assert summary.dropped_by_label_map == 1
    rows = list(csv.DictReader((tmp_path / "annotations.csv").open()))
    assert [r["label"] for r in rows] == ["vehicle", "car", ""]

    merged = export_lines(lines, "yolo", LocalStore(tmp_path / "y"), label_map={"truck": "car"})
    assert merged.categories == ["car", "bicycle"]
    assert (tmp_path / "y/labels/b.txt").read_text().startswith("0 ")


def test_label_map_errors_name_file_and_line():
    with pytest.raises(InputError, match=r"^map\.csv:2: expected two columns"):
        parse_label_map("from,to\ncar\n", "map.csv")
    with pytest.raises(InputError, match=r"^map\.csv:3: 'car' is mapped twice"):
        parse_label_map("car,auto\n\ncar,vehicle\n", "map.csv")
    with pytest.raises(InputError, match=r"^map\.csv:1: the `from` column is empty"):
        parse_label_map(",car\n", "map.csv")


def test_min_confidence(tmp_path, lines):
    summary = export_lines(lines, "coco", LocalStore(tmp_path), min_confidence=0.75)
    assert (summary.boxes, summary.below_min_confidence) == (2, 1)
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert [a["score"] for a in doc["annotations"]] == [0.9, 0.75]
    assert len(doc["categories"]) == 3  # class ids do not depend on the threshold


def test_file_stems_are_safe_and_collision_free():
    refs = [
        "s3://b/day/img 1.jpg",
        "s3://b/night/img 1.JPG",
        "s3://b/x/../..hidden",
        "s3://b/a/b.jpg",
        "s3://b/a/b.jpg",
        "s3://b/other/B.jpeg",
        "/local/path/photo.png",
    ]
    stems = file_stems(refs)
    names = [stem for stem, _ in stems]
    assert len({n.lower() for n in names}) == len(names)
    assert names[0].startswith("img_1-") and names[1].startswith("img_1-") and names[0] != names[1]
    assert stems[2] == ("hidden", "")
    assert names[3].startswith("b-") and names[4] == names[3] + "-2" and names[5].startswith("B-")
    assert stems[6] == ("photo", ".png")
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_file_stems_keep_raw_s3_keys_and_decode_file_uris():
    refs = ["s3://b/shot #1.jpg", "s3://b/why?.png", "s3://b/100%25.jpg", "file:///data/a%20b.bmp"]
    assert file_stems(refs) == [("shot_1", ".jpg"), ("why_", ".png"), ("100_25", ".jpg"), ("a_b", ".bmp")]


def test_classes_merge_across_datasets_by_name():
    # Two jobs with different label lists: class ids differ, names decide.
    a = line("s3://b/1.jpg", [("car", 0, 0, 5, 5, 0.9)], labels=["car"])
    b = line("s3://b/2.jpg", [("car", 0, 0, 5, 5, 0.9), ("dog", 0, 0, 5, 5, 0.9)], labels=["dog", "car"])
    assert build_dataset([a, b]).categories == ["car", "dog"]


def test_export_to_s3(s3, lines):
    store = open_store("s3://exports/coco", s3)
    store.client.create_bucket(Bucket="exports")
    summary = export_lines(lines, "coco", store)
    assert summary.destination == "s3://exports/coco/"
    assert json.loads(store.get("annotations.json"))["images"][0]["file_name"] == "s3://bucket/images/a.jpg"


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_files_for_users_follow_the_umask(tmp_path, lines, umask, mask, mode):
    umask(mask)
    export_lines(lines, "csv", LocalStore(tmp_path))
    LocalStore(tmp_path).put("a/b.manifest", b"{}\n")
    assert stat.S_IMODE((tmp_path / "annotations.csv").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "a/b.manifest").stat().st_mode) == mode


def test_the_portal_database_stays_owner_only(tmp_path, umask):
    from orchestrator.backends.portal.db import Database

    old = tmp_path / "old.db"
    old.write_bytes(b"")
    old.chmod(0o644)
    for path in (tmp_path / "new.db", old):
        db = Database(f"sqlite:///{path}")
        db.create_all()
        db.dispose()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
