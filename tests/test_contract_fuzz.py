"""Property: a model contract is untrusted input. Random mutations of a real contract (values of
other types, huge and negative numbers, NaN, long strings, keys removed or added) either raise
ContractError, or give a Contract whose values go through the real preprocessing and spine
post-processing on a small frame with no exception but FrameError -- never a crash of the process
or a raw OpenCV / Numba error."""

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from usseg.runtime.contract import SPINE_CLASSES, Contract, ContractError, FrameSpec, InputSpec, PostprocessSpec
from usseg.runtime.postprocess import postprocess_spine
from usseg.runtime.preprocess import FrameError, get_recipe, preprocess

# Real contracts as training and export write them: the seed recipe with the spine rules, and an
# in-graph-preprocessing model of another class set with the bilateral recipe.
BASES = [
    Contract(classes=SPINE_CLASSES, input=InputSpec(height=24, width=32), recipe=get_recipe("seed"),
             postprocess=PostprocessSpec(min_line_area=20, min_box_area=20),
             provenance={"epoch": 3, "val_dice": {"MID": 0.5, "VTB": None}, "precision": "fp32"}).to_dict(),
    Contract(classes=("background", "nerve", "vessel"), input=InputSpec(height=24, width=32, batch=None),
             recipe=get_recipe("bilateral"), output="labels", postprocess=PostprocessSpec(kind="none"),
             frame=FrameSpec(height=48, width=64)).to_dict(),
]
FRAME = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
MAX_PIXELS = 1 << 14  # valid larger inputs only cost time: they run at a smaller size

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.integers(-3, 40) | st.floats(-5, 60))
extremes = st.sampled_from([-1, 0, 1, 2, 4, 10**9, -(10**9), 2**63, 10**30, 100001, 1e300, -0.0, 0.5,
                            float("nan"), float("inf"), float("-inf"), "x" * 300, "", "../../etc/passwd",
                            "a\x00b", "NaN", [], {}])
values = st.recursive(scalars | extremes,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=6)


def paths(node, prefix=()):
    """Every place in a JSON tree: its dict keys and list indices, containers included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from paths(child, prefix + (key,))


@st.composite
def mutated_contracts(draw):
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(sorted(paths(data), key=repr)))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        else:
            parent[path[-1]] = draw(values)
    return json.dumps(data)  # NaN and Infinity as Python's json writes and reads them


# Values of the field's own type, around and beyond the edges of the ranges: most are accepted, so
# that the accepted ones really go through OpenCV and Numba.
INTS = (st.integers(-2, 70) | st.integers()
        | st.sampled_from([0, 1, 7, 8, 20, 21, 31, 35, 64, 255, 16384, 16385, 10**9, 2**31]))
FLOATS = st.floats(-1.0, 1100.0) | st.sampled_from([0.0, 1e-9, 10.0, 25.0, 255.0, 256.0, 1000.0])
TEXTS = {"denoise": ["nlm", "bilateral", "median", "none", "wavelet"], "output": ["logits", "probs", "labels"],
         "kind": ["spine", "none"]}


@st.composite
def retyped_contracts(draw):
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    places = sorted((p for p in paths(data) if p[0] not in ("classes", "provenance")), key=repr)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(places))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        old = parent[path[-1]]
        if isinstance(old, bool):
            parent[path[-1]] = draw(st.booleans())
        elif isinstance(old, int):
            parent[path[-1]] = draw(INTS)
        elif isinstance(old, float):
            parent[path[-1]] = draw(FLOATS | INTS)
        elif isinstance(old, str):
            parent[path[-1]] = draw(st.sampled_from(TEXTS.get(path[-1], [old])) | st.text(max_size=8))
    return json.dumps(data)


def spine_scene(height, width):
    """MID down the middle, a VTB block beside it, EPI across: every rule has work to do."""
    labels = np.zeros((height, width), np.uint8)
    cx = width // 2
    labels[height // 6:height // 3, max(0, cx - width // 3):max(0, cx - 2)] = 2
    labels[:, cx:cx + max(1, width // 16)] = 1
    labels[height // 2:height // 2 + max(1, height // 12), width // 4:3 * width // 4] = 3
    return labels


def run_pipeline(c: Contract) -> None:
    """What a Segmenter does with a contract's values, minus the graph."""
    h, w = c.input.height, c.input.width
    if h * w > MAX_PIXELS:
        h, w = 24, 32
    try:
        image, box = preprocess(FRAME, c.recipe, h, w)
    except FrameError:
        return
    assert image.shape == (h, w) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert box.new_h <= h and box.new_w <= w
    if c.postprocess.kind == "spine":
        geometry = postprocess_spine(spine_scene(h, w), c.postprocess)
        assert geometry.masks.shape == (3, h, w)


def refused_or_runs(text):
    """None if the contract was accepted and its values ran; else the ContractError message."""
    try:
        c = Contract.from_json(text)
    except ContractError as exc:
        assert str(exc).startswith("contract")  # names the contract field, or the contract as a whole
        return str(exc)
    assert Contract.from_json(c.to_json()) == c  # what was accepted is written back as read
    run_pipeline(c)
    return None


def outcome(message):
    """A label for --hypothesis-show-statistics: accepted, or the field named in the refusal."""
    event("accepted" if message is None else "refused: " + message.split(":")[0].split("[")[0])


FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated_contracts())
def test_a_mutated_contract_is_refused_by_name_or_runs(text):
    outcome(refused_or_runs(text))


@FUZZ
@given(retyped_contracts())
def test_values_of_the_right_type_at_and_beyond_the_edges_are_refused_by_name_or_run(text):
    outcome(refused_or_runs(text))


EDGE_INTS = [-(10**9), -1, 0, 1, 2, 3, 20, 21, 31, 35, 64, 255, 256, 16384, 16385, 10**9, 2**63]
EDGE_FLOATS = [-1.0, 0.0, 1e-9, 0.5, 25.0, 255.0, 256.0, 1000.5, 1e9, 1e300]
NUMBERS = [(i, place) for i, base in enumerate(BASES) for place in paths(base)
           if len(place) == 2 and place[0] in ("input", "recipe", "postprocess", "frame")
           and type(base[place[0]][place[1]]) in (int, float)]


@pytest.mark.parametrize("index,place", NUMBERS, ids=[f"{i}-{'.'.join(p)}" for i, p in NUMBERS])
def test_every_number_at_and_beyond_its_edges_is_refused_by_name_or_runs(index, place):
    """Hypothesis samples; this walks every numeric field through the same edges, and checks that
    a billion either way is refused with the field named."""
    section, name = place
    is_float = isinstance(BASES[index][section][name], float)
    outcomes = {}
    for value in EDGE_INTS + (EDGE_FLOATS if is_float else []):
        data = copy.deepcopy(BASES[index])
        data[section][name] = value
        outcomes[value] = refused_or_runs(json.dumps(data))
    for value in (10**9, -(10**9), 2**63):
        assert outcomes[value] is not None and outcomes[value].startswith(f"contract field '{section}.{name}': ")
    assert any(message is None for message in outcomes.values())  # and some edge is inside the range


@pytest.mark.parametrize("base", BASES, ids=["spine", "graph-labels"])
def test_the_unmutated_contracts_run(base):
    c = Contract.from_dict(copy.deepcopy(base))
    assert c.to_dict() == base
    run_pipeline(c)
