"""Property tests of the importers' boundary: one value anywhere in a COCO, LabelMe or CVAT export
replaced by a random one. Whatever comes in, prepare ends in a mask folder (exit 0 or 1, the bad
frame reported) or in one line (exit 2), and writes nothing outside its output folder: no value
reaches OpenCV, pycocotools or a path unchecked. Drawn the same way every run (derandomize)."""

import json
import shutil
import tempfile
from pathlib import Path

from boundary_support import tree_digest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from importer_shapes import DATA

from usseg.train.maskfolder import open_mask_folder
from usseg.train.prepare import main as prepare_main

FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

numbers = (st.integers(-10, 60) | st.sampled_from([10**30, -(10**30), 2**31, 2**63]) |
           st.floats(allow_nan=True, allow_infinity=True))
values = st.recursive(st.none() | st.booleans() | numbers | st.text(max_size=8) |
                      st.sampled_from(["../x.png", "/etc/passwd", "C:x.png", "a\u202eb.png", "CON.png", "00a"]),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=10)


def paths(node, at=()):
    """Every position in a JSON document, as a tuple of keys and indices."""
    yield at
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from paths(child, (*at, key))


def replaced(doc, at, value):
    if not at:
        return value
    parent = doc
    for key in at[:-1]:
        parent = parent[key]
    parent[at[-1]] = value
    return doc


def run_prepare(root, options):
    out = root / "out"
    before = tree_digest(root, skip=out)
    rc = prepare_main([*options, "--out", str(out), "--val", "0", "--test", "0"])
    event(f"exit code {rc}")
    assert rc in (0, 1, 2)
    assert tree_digest(root, skip=out) == before
    if rc < 2:
        folder = open_mask_folder(out)
        for item_id in folder.ids():
            image, mask = folder.load(item_id)
            assert image.shape == mask.shape
    else:
        assert not out.exists()


def fuzzed_copy(folder, name, draw):
    """The fixtures copied into a fresh folder, with one value of ``name`` replaced."""
    root = Path(folder)
    shutil.copytree(DATA, root / "src")
    path = root / "src" / name
    doc = json.loads(path.read_text())
    positions = list(paths(doc))
    doc = replaced(doc, positions[draw(st.integers(0, len(positions) - 1))], draw(values))
    path.write_text(json.dumps(doc))
    return root


@FUZZ
@given(data=st.data())
def test_coco_with_a_random_value_anywhere(data):
    with tempfile.TemporaryDirectory() as folder:
        root = fuzzed_copy(folder, "coco/instances.json", data.draw)
        run_prepare(root, ["--from", "coco", "--annotations", str(root / "src" / "coco" / "instances.json"),
                           "--images", str(root / "src" / "images")])


@FUZZ
@given(data=st.data(), frame=st.sampled_from("abd"))
def test_labelme_with_a_random_value_anywhere(data, frame):
    with tempfile.TemporaryDirectory() as folder:
        root = fuzzed_copy(folder, f"labelme/{frame}.json", data.draw)
        run_prepare(root, ["--from", "labelme", "--annotations", str(root / "src" / "labelme"),
                           "--images", str(root / "src" / "images")])


attribute_values = (numbers.map(str) | st.text(max_size=12) |
                    st.sampled_from(["", "nan", "inf", "-1", "1e999", "3,4;5", "0x10", "../../a.png", "99999999999"]))


@FUZZ
@given(data=st.data())
def test_cvat_with_a_random_attribute_value(data):
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        shutil.copytree(DATA, root / "src")
        path = root / "src" / "cvat" / "annotations.xml"
        tree = ET.parse(path)
        elements = [el for el in tree.getroot().iter() if el.attrib]
        el = elements[data.draw(st.integers(0, len(elements) - 1))]
        name = data.draw(st.sampled_from(sorted(el.attrib)))
        el.set(name, data.draw(attribute_values))
        tree.write(path)
        run_prepare(root, ["--from", "cvat", "--annotations", str(path), "--images", str(root / "src" / "images")])
