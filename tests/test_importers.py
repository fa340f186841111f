"""usseg prepare --from coco | cvat | labelme | nnunet: each tool's export (tests/data/importers,
written by the tools' own format rules) becomes a mask folder whose masks equal an independent
drawing of the same shapes (tests/importer_shapes.py); bad entries are reported by file and key."""

import base64
import json
import shutil
import sys

import cv2
import numpy as np
import pytest
from importer_shapes import DATA, FRAMES, NERVE, VESSEL, H, W, agree, expected
from pycocotools import mask as coco_mask

from usseg.runtime import cli
from usseg.train.importers import FORMATS
from usseg.train.maskfolder import open_mask_folder, read_split
from usseg.train.prepare import main as prepare_main

IMAGES = DATA / "images"
NNUNET_PNG = DATA / "nnunet" / "Dataset001_Tiny"
NNUNET_NIFTI = DATA / "nnunet" / "Dataset002_TinyNifti"

SOURCES = {
    # name: prepare options (before --out), whether frame b's nerve is a 10-px line, the frames' ids
    "coco": (["--from", "coco", "--annotations", str(DATA / "coco" / "instances.json"), "--images", str(IMAGES)],
             False, dict(zip(FRAMES, FRAMES))),
    "cvat": (["--from", "cvat", "--annotations", str(DATA / "cvat" / "annotations.xml"), "--images", str(IMAGES)],
             True, dict(zip(FRAMES, FRAMES))),
    "cvat-mask": (["--from", "cvat", "--annotations", str(DATA / "cvat-mask"), "--images", str(IMAGES)],
                  True, dict(zip(FRAMES, FRAMES))),
    "labelme": (["--from", "labelme", "--annotations", str(DATA / "labelme"), "--images", str(IMAGES)],
                True, dict(zip(FRAMES, FRAMES))),
    "nnunet": (["--from", "nnunet", "--annotations", str(NNUNET_PNG), "--classes", "nerve,vessel"],
               True, {f: f"case_{f}" for f in FRAMES}),
    "nnunet-nifti": (["--from", "nnunet", "--annotations", str(NNUNET_NIFTI), "--classes", "nerve,vessel"],
                     True, {f: f"case_{f}" for f in FRAMES}),
}


def prepare(tmp_path, options, *more):
    out = tmp_path / "out"
    return prepare_main([*options, "--out", str(out), "--val", "0", "--test", "0", *more]), out


@pytest.mark.parametrize("source", SOURCES)
def test_each_tool_export_gives_the_independently_drawn_masks(tmp_path, source, capsys):
    options, lines, ids = SOURCES[source]
    rc, out = prepare(tmp_path, options)
    assert rc == 0, capsys.readouterr()
    folder = open_mask_folder(out)
    assert folder.classes == ("background", "nerve", "vessel")
    assert sorted(folder.ids()) == sorted(ids.values())
    for frame, item_id in ids.items():
        image, mask = folder.load(item_id)
        assert np.array_equal(image, cv2.imread(str(IMAGES / f"{frame}.png"), cv2.IMREAD_GRAYSCALE)), frame
        want = expected(frame, lines=lines)
        agree(mask, want)
        # what must be exact whatever the rasteriser: axis-aligned edges, the hole, the empty frame
        if frame == "a":
            assert (mask[4:16, 4:20] == NERVE).all() and not mask[:, :4].any() and not mask[16:, :20].any()
            assert (mask[8:14, 30:38] == NERVE).all()  # drawn after the triangle, over it
            assert mask[6, 34] == VESSEL
        if frame == "b":
            assert (mask[12:20, 20:28] == 0).all() and (mask[6:12, 14:34] == VESSEL).all()
        if frame == "c":
            assert not mask.any()
        if frame == "d":
            assert (mask[6:26, 28:44] == NERVE).all() and mask[16, 12] == VESSEL and not mask[:, 44:].any()


def test_nnunet_keeps_its_labelled_test_cases_in_test_and_counts_unlabelled_ones(tmp_path, capsys):
    rc, out = prepare(tmp_path, SOURCES["nnunet"][0])
    assert rc == 0
    assert read_split(out / "split.csv") == {"case_a": "train", "case_b": "train", "case_c": "train",
                                             "case_d": "test"}
    assert "ignored on purpose: 1 test image without a label" in capsys.readouterr().out


def test_nnunet_label_values_map_by_name_to_classes(tmp_path):
    """dataset.json says vessel 1, nerve 2: without --classes that is the class order, and the
    masks keep it; with --classes nerve,vessel the values are remapped."""
    rc, out = prepare(tmp_path, ["--from", "nnunet", "--annotations", str(NNUNET_PNG)])
    assert rc == 0
    folder = open_mask_folder(out)
    assert folder.classes == ("background", "vessel", "nerve")
    _, mask = folder.load("case_a")
    assert (mask[4:16, 4:20] == 2).all() and mask[6, 34] == 1


def test_nifti_without_nibabel_names_the_extra(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "nibabel", None)
    rc, _ = prepare(tmp_path, SOURCES["nnunet-nifti"][0])
    assert rc == 2
    assert 'NIfTI files need nibabel: pip install "usseg[nifti]"' in caplog.text


def test_labelme_reads_the_image_stored_in_the_file_when_the_image_file_is_not_there(tmp_path, caplog):
    """Without --images, a.json's ../images/a.png is looked for beside the JSON (a path from an
    annotation file is never followed); b.json carries its image in imageData."""
    rc, out = prepare(tmp_path, ["--from", "labelme", "--annotations", str(DATA / "labelme")])
    assert rc == 1
    folder = open_mask_folder(out)
    assert folder.ids() == ["b"]
    image, mask = folder.load("b")
    assert np.array_equal(image, cv2.imread(str(IMAGES / "b.png"), cv2.IMREAD_GRAYSCALE))
    agree(mask, expected("b"))
    assert f"{DATA / 'labelme' / 'a.json'}: image '../images/a.png' not found in {DATA / 'labelme'}" in caplog.text


def test_points_are_counted_and_left_out(tmp_path, capsys):
    rc, _ = prepare(tmp_path, SOURCES["labelme"][0])
    assert rc == 0 and "ignored on purpose: 1 point shape" in capsys.readouterr().out
    rc, _ = prepare(tmp_path, SOURCES["cvat"][0], "--overwrite")
    assert rc == 0 and "ignored on purpose: 1 points shape" in capsys.readouterr().out


@pytest.mark.parametrize("width", [3, 15])
def test_line_width_is_the_width_of_lines(tmp_path, width):
    rc, out = prepare(tmp_path, [*SOURCES["cvat"][0], "--line-width", str(width)])
    assert rc == 0
    _, mask = open_mask_folder(out).load("b")
    column = mask[:, 6]  # left of the ring: only the line, along y = 28
    rows = sum(abs(y + 0.5 - 28) <= width / 2 for y in range(H))
    assert abs(int((column == NERVE).sum()) - rows) <= 1


def test_classes_option_orders_classes_and_makes_other_labels_unknown(tmp_path, caplog):
    rc, out = prepare(tmp_path, [*SOURCES["coco"][0], "--classes", "vessel"])
    assert rc == 1  # frames a, b and d have nerve annotations
    folder = open_mask_folder(out)
    assert folder.classes == ("background", "vessel") and folder.ids() == ["c"]
    assert "unknown label 'nerve'; valid labels are ['vessel']" in caplog.text


# -- a round trip through COCO's RLE ---------------------------------------------------------------------------
def column_runs(binary):
    """COCO's uncompressed RLE: run lengths down the columns, starting with a run of zeros."""
    flat = binary.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def test_masks_round_trip_through_coco_rle(tmp_path):
    """Random masks with holes and specks -> pycocotools.mask.encode (compressed) and a plain
    column-major run list (uncompressed) -> usseg prepare --from coco -> the same masks exactly."""
    rng = np.random.default_rng(3)
    images, annotations, masks = [], [], {}
    (tmp_path / "img").mkdir()
    for i in range(6):
        name = f"r{i}"
        cv2.imwrite(str(tmp_path / "img" / f"{name}.png"), rng.integers(0, 255, (H, W), np.uint8))
        labels = np.zeros((H, W), np.uint8)
        for value in (1, 2):
            blob = cv2.GaussianBlur(rng.random((H, W)), (0, 0), 2) > 0.55
            labels[blob] = value
        masks[name] = labels
        images.append({"id": i, "file_name": f"{name}.png", "width": W, "height": H})
        for value in (1, 2):
            binary = np.asfortranarray((labels == value).astype(np.uint8))
            if i % 2:
                rle = coco_mask.encode(binary)
                rle["counts"] = rle["counts"].decode()
            else:
                runs = column_runs(binary)
                rle = {"counts": runs, "size": [H, W]}
            annotations.append({"id": len(annotations), "image_id": i, "category_id": value, "segmentation": rle,
                                "iscrowd": 1})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": 1, "name": "nerve"}, {"id": 2, "name": "vessel"}]}
    (tmp_path / "rle.json").write_text(json.dumps(doc))
    rc, out = prepare(tmp_path, ["--from", "coco", "--annotations", str(tmp_path / "rle.json"),
                                 "--images", str(tmp_path / "img")])
    assert rc == 0
    folder = open_mask_folder(out)
    for name, labels in masks.items():
        assert np.array_equal(folder.load(name)[1], labels), name


# -- bad entries ---------------------------------------------------------------------------------------------
def copy_source(tmp_path, name):
    shutil.copytree(DATA, tmp_path / "src")
    return tmp_path / "src"


def edit_json(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def coco(src, change):
    edit_json(src / "coco" / "instances.json", change)
    return ["--from", "coco", "--annotations", str(src / "coco" / "instances.json"), "--images", str(src / "images")]


def cvat(src, old, new):
    path = src / "cvat" / "annotations.xml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return ["--from", "cvat", "--annotations", str(path), "--images", str(src / "images")]


def labelme(src, frame, change):
    edit_json(src / "labelme" / f"{frame}.json", change)
    return ["--from", "labelme", "--annotations", str(src / "labelme"), "--images", str(src / "images")]


def nnunet(src, change):
    change(src / "nnunet" / "Dataset001_Tiny")
    return ["--from", "nnunet", "--annotations", str(src / "nnunet" / "Dataset001_Tiny")]


def write_label(value):
    def change(root):
        labels = cv2.imread(str(root / "labelsTr" / "case_b.png"), cv2.IMREAD_UNCHANGED)
        labels[0, 0] = value
        cv2.imwrite(str(root / "labelsTr" / "case_b.png"), labels)
    return change


BAD = [
    # (what, options from the copied source, the id skipped, words of the one-line report)
    ("coco: unknown category", lambda s: coco(s, lambda d: d["annotations"][4].update(category_id=9)),
     "b", "instances.json: image 'b.png' (images[1]): annotations[4]: category_id 9 is not one of"),
    ("coco: point outside", lambda s: coco(s, lambda d: d["annotations"][0]["segmentation"][0].__setitem__(2, 48.5)),
     "a", "image 'a.png' (images[0]): annotations[0].segmentation[0]: point (48.5, 4) is outside the 48x32 image"),
    ("coco: RLE of the wrong length", lambda s: coco(s, lambda d: d["annotations"][3]["segmentation"]["counts"].append(5)),
     "b", "annotations[3]: run lengths cover 1541 pixels, the mask has 1536"),
    ("coco: RLE string cut off", lambda s: coco(s, lambda d: d["annotations"][5]["segmentation"].update(counts="0a")),
     "d", "annotations[5]: compressed RLE string is cut off or malformed"),
    ("coco: a path out of the image folder", lambda s: coco(s, lambda d: d["images"][2].update(file_name="../../c.png")),
     "c", "image '../../c.png' (images[2]): image name '../../c.png': '..' is not a plain file name"),
    ("coco: size differs", lambda s: coco(s, lambda d: d["images"][3].update(width=50)),
     "d", "image 'd.png' (images[3]): declares 50x32 but"),
    ("cvat: unknown label", lambda s: cvat(s, 'label="vessel" source="manual" occluded="0" points',
                                           'label="artery" source="manual" occluded="0" points'),
     "a", "annotations.xml: image 'a.png' (id 0): <polygon> #1 ('artery'): unknown label 'artery'"),
    ("cvat: point outside", lambda s: cvat(s, 'xbr="44.00"', 'xbr="49.00"'),
     "d", "image 'd.png' (id 3): <box> #1 ('nerve'): point (49, 26) is outside the 48x32 image"),
    ("cvat: not a number", lambda s: cvat(s, 'cx="12.00"', 'cx="nan"'),
     "d", "<ellipse> #0 ('vessel'): cx 'nan' is not a finite number"),
    ("cvat: mask runs too long", lambda s: cvat(s, 'rle="', 'rle="7, '),
     "b", "<mask> #1 ('vessel'): run lengths cover 407 pixels, the mask has 400"),
    ("cvat: mask beyond the image", lambda s: cvat(s, 'left="14"', 'left="40"'),
     "b", "<mask> #1 ('vessel'): width 20 is outside [1, 8]"),
    ("cvat: unknown shape", lambda s: (cvat(s, "</ellipse>", "</blob>"), cvat(s, "<ellipse ", "<blob "))[1],
     "d", "unknown shape <blob>"),
    ("labelme: unknown shape type", lambda s: labelme(s, "d", lambda d: d["shapes"][1].update(shape_type="ai_blob")),
     "d", "labelme/d.json: shapes[1] ('nerve'): unknown shape type 'ai_blob'"),
    ("labelme: point outside", lambda s: labelme(s, "a", lambda d: d["shapes"][0]["points"].append([-1, 3])),
     "a", "labelme/a.json: shapes[0] ('nerve'): point (-1, 3) is outside the 48x32 image"),
    ("labelme: not a number", lambda s: labelme(s, "a", lambda d: d["shapes"][2]["points"].__setitem__(0, [1e999, 1])),
     "a", "labelme/a.json: shapes[2] ('nerve'): a point is not a finite number"),
    ("labelme: empty file", lambda s: (s / "labelme" / "c.json").write_text("") or
     ["--from", "labelme", "--annotations", str(s / "labelme"), "--images", str(s / "images")],
     "c", "labelme/c.json: empty file"),
    ("labelme: an embedded image over the pixel budget, refused from its header", lambda s: labelme(s, "a", lambda d: d.update(
        imagePath="gone.png", imageData=base64.b64encode(cv2.imencode(".png", np.zeros((4200, 4200), np.uint8))[1]).decode())),
     "a", "imageData: a frame of 4200x4200 (17,640,000 pixels) is over the limit of 16,777,216 pixels per frame"),
    ("labelme: mask of another size", lambda s: labelme(s, "b", lambda d: d["shapes"][0]["points"].__setitem__(1, [30, 25])),
     "b", "labelme/b.json: shapes[0] ('vessel'): mask is (20, 20) but its box is 17x20"),
    ("nnunet: a label value dataset.json does not list", lambda s: nnunet(s, write_label(7)),
     "case_b", "labelsTr/case_b.png: case_b.png holds label value 7, which is not one of dataset.json's labels"),
    ("nnunet: a case without its label", lambda s: nnunet(s, lambda r: (r / "labelsTr" / "case_c.png").unlink()),
     "case_c", "labelsTr/case_c.png not found"),
    ("cvat mask: a colour the label map does not list",
     lambda s: (cv2.imwrite(str(s / "cvat-mask" / "SegmentationClass" / "a.png"), np.full((H, W, 3), 9, np.uint8)),
                ["--from", "cvat", "--annotations", str(s / "cvat-mask"), "--images", str(s / "images")])[1],
     "a", "SegmentationClass/a.png: pixel (0, 0) has the colour (9, 9, 9), which labelmap.txt does not list"),
]


@pytest.mark.parametrize("what, make, skipped, words", BAD, ids=[b[0] for b in BAD])
def test_bad_entries_are_reported_by_file_and_key_and_skipped(tmp_path, caplog, what, make, skipped, words):
    options = make(copy_source(tmp_path, what))
    rc, out = prepare(tmp_path, options)
    assert rc == 1
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped: ")]
    assert len(reports) == 1 and words in reports[0], reports
    ids = open_mask_folder(out).ids()
    assert skipped not in ids and len(ids) == len(FRAMES) - 1
    caplog.clear()
    rc, strict_out = prepare(tmp_path / "strict", options, "--strict")
    assert rc == 2 and words in caplog.text and not strict_out.exists()


@pytest.mark.parametrize("what, make, words", [
    ("empty COCO file", lambda s: (s / "coco" / "instances.json").write_text("") or
     ["--from", "coco", "--annotations", str(s / "coco" / "instances.json"), "--images", str(s / "images")],
     "instances.json: empty file"),
    ("COCO without categories", lambda s: coco(s, lambda d: d.update(categories=[])), "no categories"),
    ("XML with an entity", lambda s: cvat(s, "<annotations>", '<!DOCTYPE a [<!ENTITY x "y">]><annotations>'),
     "refused XML"),
    ("CVAT for video", lambda s: cvat(s, "</annotations>", '<track id="0" label="nerve"></track></annotations>'),
     "export the task as 'CVAT for images 1.1'"),
    ("nnU-Net regions", lambda s: nnunet(s, lambda r: edit_json(r / "dataset.json", lambda d: d["labels"].update(
        nerve=[1, 2]))), "region-based training is not supported"),
    ("nnU-Net ending", lambda s: nnunet(s, lambda r: edit_json(r / "dataset.json", lambda d: d.update(
        file_ending=".mha"))), "file_ending '.mha'"),
])
def test_a_source_that_cannot_be_read_at_all_is_one_line_and_exit_2(tmp_path, capsys, what, make, words):
    options = make(copy_source(tmp_path, what))
    rc, out = prepare(tmp_path, options)
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1 and not out.exists()


# -- one table drives the choices, the help and the README ------------------------------------------------------
def test_the_format_table_drives_the_choices_and_the_docs():
    parser = cli.build_parser("prepare")
    action = next(a for a in parser._actions if a.dest == "source_format")
    assert list(action.choices) == [f.name for f in FORMATS] == ["seed", "coco", "cvat", "labelme", "nnunet", "masks"]
    readme = (DATA.parents[2] / "README.md").read_text()
    for fmt in FORMATS:
        assert f"--from {fmt.name}" in readme, fmt.name
        assert f"{fmt.name}: {fmt.reads}" in action.help
