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
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.consolidation import Box, ConsolidatedBox, ObjectAnswers, ObjectResult, WorkerAnswer
from orchestrator.errors import InputError
from orchestrator.outputs import (
    AugmentedLine,
    augmented_line,
    export_lines,
    export_splits,
    parse_label_map,
    write_augmented_manifest,
    write_worker_responses,
)
from orchestrator.outputs.exports.dataset import build_dataset, file_stems
from orchestrator.storage import LocalStore, open_object, open_store

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
    assert doc["images"][0] == {
        "id": 1,
        "file_name": "a.jpg",
        "width": 400,
        "height": 200,
        "source_ref": "s3://bucket/images/a.jpg",
    }
    assert doc["info"]["images_root"] == "s3://bucket/images/"
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
        "image": "images/b.png",
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
    dataset = build_dataset({"": [a, b]})
    assert dataset.categories == ["car", "dog"]
    assert dataset.warnings == ["the class-maps of these lines disagree on class ids; classes are car, dog"]


def test_export_to_s3(s3, lines):
    store = open_store("s3://exports/coco", s3)
    store.client.create_bucket(Bucket="exports")
    summary = export_lines(lines, "coco", store)
    assert summary.destination == "s3://exports/coco/"
    assert json.loads(store.get("annotations.json"))["images"][0]["source_ref"] == "s3://bucket/images/a.jpg"


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


def only(labels: list[str], *boxes: tuple, ref: str = "s3://bucket/val/v.jpg") -> AugmentedLine:
    """A line whose class-map, as Ground Truth writes it, names only the classes it uses."""
    return line(ref, list(boxes), labels=labels)


def test_a_split_missing_a_class_needs_the_label_list(tmp_path):
    # Ground Truth's class-maps hold used classes only: this split never saw truck (id 1).
    val = [only(LABELS, ("bicycle", 0, 0, 40, 40, 0.9))]
    assert val[0].metadata.class_map == {"2": "bicycle"}
    with pytest.raises(InputError, match="class id 0 has no name") as caught:
        export_lines(val, "yolo", LocalStore(tmp_path / "v"))
    assert "--labels" in caught.value.hint
    with pytest.raises(InputError, match="class 'bicycle' of the manifest is not in the job's labels"):
        export_lines(val, "yolo", LocalStore(tmp_path / "v"), labels=["car", "truck"])


def test_class_ids_are_the_same_in_every_split_and_format(tmp_path, lines):
    val = [
        only(LABELS, ("bicycle", 0, 0, 40, 40, 0.9)),
        only(LABELS, ("car", 0, 0, 8, 8, 0.9), ref="s3://x/w.jpg"),
    ]
    for name, split in (("train", lines), ("val", val)):
        for fmt in ("yolo", "coco"):
            summary = export_lines(split, fmt, LocalStore(tmp_path / name / fmt), labels=LABELS)
            assert summary.categories == LABELS
    assert (tmp_path / "train/yolo/labels/a.txt").read_text().splitlines()[1].startswith("2 ")
    assert (tmp_path / "val/yolo/labels/v.txt").read_text().startswith("2 ")
    assert (tmp_path / "val/yolo/classes.txt").read_text() == (
        tmp_path / "train/yolo/classes.txt"
    ).read_text()
    for name in ("train", "val"):
        doc = json.loads((tmp_path / name / "coco/annotations.json").read_text())
        assert {c["name"]: c["id"] for c in doc["categories"]} == {"car": 1, "truck": 2, "bicycle": 3}
    bicycle = json.loads((tmp_path / "val/coco/annotations.json").read_text())["annotations"][0]
    assert bicycle["category_id"] == 3
    # Without a label list, a manifest whose class-maps name every id gives the same ids.
    assert export_lines(lines, "csv", LocalStore(tmp_path / "c")).categories == LABELS


def test_coco_file_names_are_relative_to_the_images_root(tmp_path, lines):
    export_lines(lines, "coco", LocalStore(tmp_path / "a"), images_root="s3://bucket")
    doc = json.loads((tmp_path / "a/annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["images/a.jpg", "images/b.png", "images/empty.jpg"]
    assert doc["info"]["images_root"] == "s3://bucket/"
    with pytest.raises(InputError, match=r"^s3://bucket/images/a\.jpg: not under --images-root s3://other/"):
        export_lines(lines, "coco", LocalStore(tmp_path / "b"), images_root="s3://other/")
    mixed = [line("s3://one/x/a%20.jpg", []), line("s3://one/y/b.jpg", [])]
    export_lines(mixed, "coco", LocalStore(tmp_path / "c"))
    doc = json.loads((tmp_path / "c/annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["x/a%20.jpg", "y/b.jpg"]  # an S3 key is raw
    local = [line("file:///data/set/day%201/a.jpg", []), line("file:///data/set/b.jpg", [])]
    export_lines(local, "coco", LocalStore(tmp_path / "d"))
    doc = json.loads((tmp_path / "d/annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["day 1/a.jpg", "b.jpg"]  # a file:// URI is decoded
    export_lines(local, "coco", LocalStore(tmp_path / "e"), images_root="/data")  # a local path
    doc = json.loads((tmp_path / "e/annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["set/day 1/a.jpg", "set/b.jpg"]


def test_coco_per_worker_has_each_workers_boxes_with_their_id(tmp_path, lines):
    answers = [
        ObjectAnswers(
            dataset_object_id="0",
            source_ref="s3://bucket/images/a.jpg",
            answers=[
                WorkerAnswer(
                    worker_id="w1", boxes=[Box(label="car", left=100, top=50, width=200, height=100)]
                ),
                WorkerAnswer(
                    worker_id="w2",
                    boxes=[
                        Box(label="car", left=101.5, top=50, width=198, height=100),
                        Box(label="truck", left=0, top=0, width=10, height=10),
                        Box(label="lorry", left=0, top=0, width=10, height=10),
                    ],
                ),
            ],
        ),
        ObjectAnswers(dataset_object_id="9", source_ref="s3://bucket/images/gone.jpg", answers=[]),
    ]
    summary = export_lines(lines, "coco", LocalStore(tmp_path), answers=answers, label_map={"truck": "car"})
    assert summary.boxes == 3
    assert summary.warnings == [
        "1 answered image(s) are not in the manifest: left out",
        "1 worker box(es) with a label not in the classes: left out",
    ]
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert [(a["image_id"], a["worker_id"], a["category_id"], a["bbox"]) for a in doc["annotations"]] == [
        (1, "w1", 1, [100, 50, 200, 100]),
        (1, "w2", 1, [101.5, 50, 198, 100]),
        (1, "w2", 1, [0, 0, 10, 10]),
    ]
    assert all("score" not in a for a in doc["annotations"])
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        assert len(COCO(str(tmp_path / "annotations.json")).getAnnIds(imgIds=[1])) == 3
    with pytest.raises(ValueError, match="answers is for the coco format"):
        export_lines(lines, "yolo", LocalStore(tmp_path), answers=answers)


def ultralytics_pairs(root, data: dict, key: str) -> list[tuple]:
    """The (image, label file) pairs Ultralytics would load for `key`, resolved as it does."""
    listing = root / data[key]
    pairs = []
    for entry in listing.read_text().splitlines():
        assert entry.startswith("./")  # resolved against the list's folder, not the working directory
        image = listing.parent / entry[2:]
        label = str(image).rsplit("/images/", 1)
        pairs.append((image, Path(label[0] + "/labels/" + label[1]).with_suffix(".txt")))
    return pairs


def test_yolo_splits_point_data_yaml_at_their_own_image_lists_and_copy_images(tmp_path, lines):
    import yaml

    source = tmp_path / "bucket"
    for name in ("a.jpg", "b.png", "v.jpg"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode())
    train = [line(str(source / "a.jpg"), [("car", 1, 1, 4, 4, 0.9)]), line(str(source / "b.png"), [])]
    val = [
        line(str(source / "v.jpg"), [("truck", 2, 2, 4, 4, 0.9)]),
        line(str(source / "missing.jpg"), []),
    ]
    out = tmp_path / "ds"
    summary = export_splits(
        {"train": train, "validation": val},
        "yolo",
        LocalStore(out),
        labels=LABELS,
        fetch_image=lambda ref: open_object(ref)[0].get(open_object(ref)[1]),
    )
    assert summary.splits == {"train": 2, "validation": 2}
    assert len(summary.warnings) == 1 and "missing.jpg: not copied" in summary.warnings[0]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert "path" not in data  # Ultralytics then resolves the lists against data.yaml's folder
    assert (data["train"], data["val"], data["nc"]) == ("train.txt", "validation.txt", 3)
    assert data["names"] == {0: "car", 1: "truck", 2: "bicycle"}
    train_pairs = ultralytics_pairs(out, data, "train")
    val_pairs = ultralytics_pairs(out, data, "val")
    assert [image.relative_to(out).as_posix() for image, _ in train_pairs] == [
        "images/train/a.jpg",
        "images/train/b.png",
    ]
    assert [image.relative_to(out).as_posix() for image, _ in val_pairs] == ["images/validation/v.jpg"]
    assert all(image.is_file() and label.is_file() for image, label in train_pairs + val_pairs)
    assert (out / "images/validation/v.jpg").read_bytes() == b"v.jpg"
    assert (out / "labels/validation/v.txt").read_text().startswith("1 ")
    assert (out / "labels/train/b.txt").read_text() == ""


def test_yolo_split_names_must_say_train_val_or_test(tmp_path, lines):
    with pytest.raises(InputError, match="split 'extra': not a train, val or test split"):
        export_splits({"train": lines[:1], "extra": lines[1:]}, "yolo", LocalStore(tmp_path))
    summary = export_splits({"train": lines[:1], "test": lines[1:]}, "yolo", LocalStore(tmp_path))
    assert summary.warnings == ["no validation split: data.yaml validates on train.txt"]
    assert "train: train.txt\ntest: test.txt\nval: train.txt\n" in (tmp_path / "data.yaml").read_text()


def test_splits_in_coco_voc_and_csv(tmp_path, lines):
    splits = {"train": lines[:2], "val": lines[2:]}
    export_splits(splits, "coco", LocalStore(tmp_path / "coco"))
    train = json.loads((tmp_path / "coco/annotations_train.json").read_text())
    val = json.loads((tmp_path / "coco/annotations_val.json").read_text())
    assert [len(train["images"]), len(val["images"])] == [2, 1]
    assert train["categories"] == val["categories"]
    export_splits(splits, "voc", LocalStore(tmp_path / "voc"))
    assert (tmp_path / "voc/ImageSets/Main/train.txt").read_text() == "a\nb\n"
    assert (tmp_path / "voc/ImageSets/Main/val.txt").read_text() == "empty\n"
    export_splits(splits, "csv", LocalStore(tmp_path / "csv"))
    assert (tmp_path / "csv/annotations_val.csv").read_text().splitlines()[
        1
    ] == "s3://bucket/images/empty.jpg,,,,,,"


# ------------------------------------------------------------------------------ labeljob export


def cli(*args: str):
    return CliRunner().invoke(app, ["--format", "json", "export", *args])


@pytest.fixture
def split_manifests(tmp_path):
    """train.manifest uses every class; validation.manifest never saw truck; local images."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("t1.jpg", "t2.jpg", "v1.jpg"):
        (images / name).write_bytes(b"jpeg " + name.encode())
    train = [
        line((images / "t1.jpg").as_uri(), [("car", 10, 10, 40, 20, 0.9), ("truck", 100, 50, 80, 40, 0.8)]),
        line((images / "t2.jpg").as_uri(), [("bicycle", 5, 5, 10, 10, 0.7)]),
    ]
    val = [line((images / "v1.jpg").as_uri(), [("bicycle", 20, 20, 10, 10, 0.9)])]
    paths = []
    for name, lines in (("train", train), ("validation", val)):
        store = LocalStore(tmp_path / "manifests")
        write_augmented_manifest(store, f"{name}.manifest", [x.to_json() for x in lines])
        paths.append(str(tmp_path / "manifests" / f"{name}.manifest"))
    labels = tmp_path / "labels.json"
    labels.write_text(
        json.dumps({"document-version": "2018-11-28", "labels": [{"label": n} for n in LABELS]})
    )
    return paths, str(labels)


def test_cli_refuses_options_of_other_formats_before_reading(tmp_path, split_manifests):
    (train, _), _ = split_manifests
    out = str(tmp_path / "out")
    for args, message in (
        (["--format", "coco", "--copy-images"], "--copy-images is for --format yolo"),
        (["--format", "yolo", "--images-root", "s3://b/"], "--images-root is for --format coco"),
        (["--format", "csv", "--per-worker"], "--per-worker is for --format coco"),
        (["--format", "coco", "--per-worker"], "--per-worker and --answers go together"),
        (
            ["--format", "yolo", "--copy-images", "--out", "s3://b/ds"],
            "--copy-images writes into a local folder",
        ),
    ):
        result = cli(train, "--out", out, *args)
        assert result.exit_code == 2 and message in result.stderr, result.output
    result = cli(train, str(tmp_path / "other" / "train.manifest"), "--format", "csv", "--out", out)
    assert result.exit_code == 2 and "two manifests are named 'train'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_split_exported_alone_needs_the_labels_and_then_keeps_the_ids(tmp_path, split_manifests):
    (train, val), labels = split_manifests
    result = cli(val, "--format", "yolo", "--out", str(tmp_path / "v"))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    error, hint = result.stderr.splitlines()
    assert error.startswith("Error: class id 0 has no name in the manifest's class-map")
    assert hint.startswith("Hint: ") and "--labels" in hint
    for name, manifest in (("t", train), ("v", val)):
        result = cli(manifest, "--format", "yolo", "--out", str(tmp_path / name), "--labels", labels)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["categories"] == LABELS
    assert (tmp_path / "t/labels/t2.txt").read_text().startswith("2 ")
    assert (tmp_path / "v/labels/v1.txt").read_text().startswith("2 ")


def test_cli_yolo_splits_with_copied_images(tmp_path, split_manifests):
    import yaml

    manifests, labels = split_manifests
    out = tmp_path / "ds"
    result = cli(*manifests, "--format", "yolo", "--out", str(out), "--labels", labels, "--copy-images")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"] == {"train": 2, "validation": 1}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"]) == ("train.txt", "validation.txt")
    assert (out / "validation.txt").read_text() == "./images/validation/v1.jpg\n"
    assert (out / "images/train/t2.jpg").read_bytes() == b"jpeg t2.jpg"
    assert (out / "labels/train/t1.txt").read_text().count("\n") == 2


def test_cli_coco_per_worker_and_images_root(tmp_path, split_manifests):
    (train, _), labels = split_manifests
    ref = json.loads(Path(train).read_text().splitlines()[0])["source-ref"]
    answer = json.dumps(
        {"crowd": {"boundingBoxes": [{"label": "car", "left": 1, "top": 2, "width": 3, "height": 4}]}}
    )
    payload = tmp_path / "payload.json"
    payload.write_text(
        json.dumps(
            [
                {
                    "datasetObjectId": "0",
                    "dataObject": {"s3Uri": ref},
                    "annotations": [
                        {"workerId": w, "annotationData": {"content": answer}} for w in ("w1", "w2")
                    ],
                }
            ]
        )
    )
    out = tmp_path / "coco"
    root = tmp_path.as_uri()
    result = cli(train, "--format", "coco", "--out", str(out), "--labels", labels,
                 "--per-worker", "--answers", str(payload), "--images-root", root)  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["images/t1.jpg", "images/t2.jpg"]
    assert [(a["image_id"], a["worker_id"], a["bbox"]) for a in doc["annotations"]] == [
        (1, "w1", [1, 2, 3, 4]),
        (1, "w2", [1, 2, 3, 4]),
    ]


def test_cli_copies_images_from_s3(s3, tmp_path):
    client = s3.client("s3")
    client.create_bucket(Bucket="pics")
    client.put_object(Bucket="pics", Key="day/a.jpg", Body=b"jpeg a")
    manifest = tmp_path / "out.manifest"
    lines = [line("s3://pics/day/a.jpg", [("car", 1, 1, 4, 4, 0.9)]), line("s3://pics/day/gone.jpg", [])]
    write_augmented_manifest(LocalStore(tmp_path), "out.manifest", [x.to_json() for x in lines])
    result = cli(str(manifest), "--format", "yolo", "--out", str(tmp_path / "ds"), "--copy-images")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ds/images/a.jpg").read_bytes() == b"jpeg a"
    assert (tmp_path / "ds/images.txt").read_text() == "./images/a.jpg\n"
    assert "s3://pics/day/gone.jpg: not copied" in result.stderr


def test_an_empty_split_still_gets_its_files(tmp_path, lines):
    summary = export_splits({"train": lines, "val": []}, "coco", LocalStore(tmp_path))
    assert summary.splits == {"train": 3, "val": 0}
    assert json.loads((tmp_path / "annotations_val.json").read_text())["images"] == []
    assert export_lines(lines, "coco", LocalStore(tmp_path / "one")).splits == {}


def test_cli_per_worker_from_a_jobs_stored_worker_responses(tmp_path, split_manifests):
    (train, _), labels = split_manifests
    refs = [json.loads(row)["source-ref"] for row in Path(train).read_text().splitlines()]
    (tmp_path / "input.manifest").write_text("".join(json.dumps({"source-ref": ref}) + "\n" for ref in refs))
    job = LocalStore(tmp_path / "job")
    box = Box(label="truck", left=5, top=6, width=7, height=8)
    write_worker_responses(
        job,
        [
            ObjectAnswers(
                dataset_object_id="1",
                source_ref=refs[1],
                answers=[WorkerAnswer(worker_id="ada", boxes=[box], submitted_at="2026-01-01T00:00:00Z")],
            )
        ],
    )
    out = tmp_path / "coco"
    job_args = ["--answers", str(tmp_path / "job"), "--input-manifest", str(tmp_path / "input.manifest")]
    result = cli(train, "--format", "coco", "--out", str(out), "--labels", labels, "--per-worker", *job_args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "annotations.json").read_text())
    assert [(a["image_id"], a["worker_id"], a["category_id"]) for a in doc["annotations"]] == [(2, "ada", 2)]
