import json

import pytest

from usseg.runtime.contract import (
    SPINE_CLASSES,
    Contract,
    ContractError,
    FrameSpec,
    InputSpec,
    PostprocessSpec,
    default_postprocess,
)
from usseg.runtime.preprocess import RECIPES, get_recipe


def make_contract(**kw):
    base = {"classes": SPINE_CLASSES, "input": InputSpec(height=64, width=80), "recipe": get_recipe("seed"),
            "postprocess": default_postprocess(SPINE_CLASSES), "provenance": {"epoch": 3}}
    return Contract(**{**base, **kw})


def test_round_trip_through_json():
    c = make_contract()
    again = Contract.from_json(c.to_json())
    assert again == c
    assert again.recipe.nlm_search == 21 and again.input.height == 64 and again.num_classes == 4


def test_other_class_sets_get_no_spine_rules():
    c = make_contract(classes=("background", "nerve", "vessel"), postprocess=default_postprocess(("background", "nerve", "vessel")))
    assert Contract.from_json(c.to_json()).postprocess.kind == "none"


def mutate(path, value):
    data = json.loads(make_contract().to_json())
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(data)


DELETE = object()
NESTED = {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": 1}}}}}}}}}
BAD = [
    # (path to change, new value, what the message must say: the field, the value, the rule)
    (["schema_version"], 99, r"'schema_version': 99 is not supported"),
    (["schema_version"], True, r"'schema_version': True is not supported"),  # True == 1 in Python
    (["schema_version"], DELETE, r"'schema_version': None is not supported"),
    (["extra"], 1, r"contract: unknown field\(s\) \['extra'\]"),
    # classes become label values (uint8), file names and JSON keys
    (["classes"], DELETE, r"'classes' is missing"),
    (["classes"], "MID", r"'classes': expected list, got str"),
    (["classes"], ["background"], r"'classes': 1 names; need 2 to 255"),
    (["classes"], [f"c{i}" for i in range(256)], r"'classes': 256 names; need 2 to 255"),
    (["classes", 1], 7, r"'classes\[1\]': expected a string, got int 7"),
    (["classes", 1], "../MID", r"'classes\[1\]': '\.\./MID' must be 1 to 64 characters"),
    (["classes", 1], "a/b", r"'classes\[1\]': 'a/b'"),
    (["classes", 1], "C:\\x", r"'classes\[1\]'"),
    (["classes", 1], "", r"'classes\[1\]': '' must be 1 to 64"),
    (["classes", 1], "tab\there", r"'classes\[1\]'"),
    (["classes", 1], "x" * 65, r"'classes\[1\]': 'xxx.*\.\.\. must be 1 to 64"),  # long values shown cut
    (["classes", 2], "MID", r"'classes': duplicate names"),
    # tensor names and choices
    (["output"], "heatmap", r"""'output': 'heatmap'; valid: \["logits", "probs", "labels"\]"""),
    (["output"], 1, r"'output': expected str, got int"),
    (["output_name"], "", r"'output_name': '' must be 1 to 256 printable characters"),
    (["output_name"], "out\nput", r"'output_name': 'out\\nput' must be 1 to 256 printable"),
    (["output_name"], 5, r"'output_name': expected a string, got int 5"),
    (["resize"], "stretch", r"'resize': 'stretch'; valid: \[\"letterbox\"\]"),
    # input
    (["input"], [], r"'input': expected dict, got list"),
    (["input", "colour"], "x", r"'input': unknown field\(s\) \['colour'\]"),
    (["input", "channels"], 3, r"'input.channels': 3; valid: \[1\]"),
    (["input", "layout"], "NHWC", r"'input.layout': 'NHWC'; valid: \[\"NCHW\"\]"),
    (["input", "dtype"], "float16", r"'input.dtype': 'float16'"),
    (["input", "height"], 4, r"'input.height': 4 must be an integer in \[8, 16384\]"),
    (["input", "width"], 10**9, r"'input.width': 1000000000 must be an integer in \[8, 16384\]"),
    (["input", "height"], "64", r"'input.height': expected an integer, got str '64'"),
    (["input", "height"], True, r"'input.height': expected an integer, got bool True"),
    (["input", "height"], 64.0, r"'input.height': expected an integer, got float 64.0"),
    (["input", "height"], 10**400, r"'input.height': 1000.*\.\.\. must be an integer in"),
    (["input", "batch"], 2, r"'input.batch': 2; valid: \[1, null\]"),
    (["input", "batch"], "dynamic", r"'input.batch': expected an integer or null, got str"),
    (["input", "name"], "x" * 300, r"'input.name': 'xxx.*must be 1 to 256 printable"),
    # recipe: types checked here, ranges by the Recipe itself, both named as contract fields
    (["recipe"], "seed", r"'recipe': expected dict, got str"),
    (["recipe", "denoise"], "wavelet", r"'recipe.denoise': 'wavelet'"),
    (["recipe", "nlm_search"], 20, r"'recipe.nlm_search': 20 must be"),
    (["recipe", "nlm_search"], "21", r"'recipe.nlm_search': expected an integer, got str '21'"),
    (["recipe", "nlm_h"], "5", r"'recipe.nlm_h': expected a finite number, got str '5'"),
    (["recipe", "nlm_h"], float("nan"), r"'recipe.nlm_h': expected a finite number, got float nan"),
    (["recipe", "unsharp_sigma"], float("inf"), r"'recipe.unsharp_sigma': expected a finite number"),
    (["recipe", "clahe"], 1, r"'recipe.clahe': expected true or false, got int 1"),
    (["recipe", "sharpen"], 1, r"'recipe': unknown field\(s\) \['sharpen'\]"),
    # post-processing: bounds that keep cv2.dilate and the Numba kernels safe
    (["postprocess"], None, r"'postprocess': expected an object, got NoneType"),
    (["postprocess", "kind"], "magic", r"'postprocess.kind': 'magic'; valid"),
    (["postprocess", "gap_iterations"], 10**9,
     r"^contract field 'postprocess.gap_iterations': 1000000000 must be an integer in \[0, 20\]$"),
    (["postprocess", "gap_kernel"], 4, r"'postprocess.gap_kernel': 4 must be an odd integer in \[1, 31\]"),
    (["postprocess", "gap_kernel"], 33, r"'postprocess.gap_kernel': 33 must be an odd integer"),
    (["postprocess", "min_line_area"], -1, r"'postprocess.min_line_area': -1 must be an integer in \[0, "),
    (["postprocess", "min_box_area"], 1.5, r"'postprocess.min_box_area': expected an integer, got float"),
    (["postprocess", "line_thickness_px"], 0, r"'postprocess.line_thickness_px': 0 must be"),
    (["postprocess", "line_thickness_px"], None, r"'postprocess.line_thickness_px': expected an integer, got"),
    # the clean-up chosen on val: foreground class names of this model, each once
    (["postprocess", "largest_component"], "MID", r"'postprocess.largest_component': expected a list of \(a string\), got str"),
    (["postprocess", "largest_component"], None, r"'postprocess.largest_component': expected a list of"),
    (["postprocess", "largest_component"], ["MID", 2], r"'postprocess.largest_component\[1\]': expected a string, got int 2"),
    (["postprocess", "largest_component"], ["background"],
     r"""'postprocess.largest_component\[0\]': 'background' is not a foreground class of this model; valid: \["MID", "VTB", "EPI"\]"""),
    (["postprocess", "fill_holes"], ["VTB", "nerve"], r"'postprocess.fill_holes\[1\]': 'nerve' is not a foreground class"),
    (["postprocess", "fill_holes"], ["../VTB"], r"'postprocess.fill_holes\[0\]': '\.\./VTB' is not a foreground class"),
    (["postprocess", "fill_holes"], ["EPI", "EPI"], r"'postprocess.fill_holes\[1\]': 'EPI' is listed twice"),
    # provenance: shown to users only, but bounded
    (["provenance"], [1], r"'provenance': expected an object, got list"),
    (["provenance", "notes"], "x" * 70000, r"'provenance': \d+ characters of JSON, more than 65536"),
    (["provenance", "deep"], NESTED, r"'provenance': nested deeper than 8 levels"),
    (["provenance", "dice"], float("nan"), r"'provenance': not plain JSON"),
    # in-graph preprocessing frame
    (["frame"], "raw", r"'frame': expected an object, got str"),
    (["frame"], {"height": 4, "width": 80}, r"'frame.height': 4 must be an integer in \[8, 16384\]"),
    (["frame"], {"height": 96, "width": 128, "dtype": "float32"}, r"'frame.dtype': 'float32'"),
    (["frame"], {"height": 96.0, "width": 128}, r"'frame.height': expected an integer, got float 96.0"),
    (["frame"], {"height": 32, "width": 40}, r"'frame': 32x40 frames would be enlarged"),
    (["frame"], {"name": "", "height": 96, "width": 128}, r"'frame.name': '' must be"),
]


@pytest.mark.parametrize("path,value,message", BAD)
def test_bad_contract_names_the_field(path, value, message):
    with pytest.raises(ContractError, match=message):
        Contract.from_json(mutate(path, value))


def test_cleanup_steps_round_trip_as_tuples():
    spec = PostprocessSpec(largest_component=["MID", "EPI"], fill_holes=("VTB",))
    c = make_contract(postprocess=spec)
    data = json.loads(c.to_json())
    assert data["postprocess"]["largest_component"] == ["MID", "EPI"] and data["postprocess"]["fill_holes"] == ["VTB"]
    again = Contract.from_json(c.to_json())
    assert again == c and again.postprocess.largest_component == ("MID", "EPI") and again.postprocess.fill_holes == ("VTB",)
    hash(again.postprocess)  # a frozen spec stays hashable with the lists it was given


def test_a_contract_written_before_the_cleanup_fields_loads_without_cleanup():
    data = json.loads(make_contract().to_json())
    for name in ("largest_component", "fill_holes"):
        del data["postprocess"][name]
    c = Contract.from_dict(data)
    assert c.postprocess.largest_component == () and c.postprocess.fill_holes == ()
    assert c == make_contract()


def test_score_buffer_is_bounded():
    """classes x height x width bounds the output buffer the runtime allocates per frame."""
    text = mutate(["input"], {"height": 4096, "width": 4096})
    assert Contract.from_json(text).input.height == 4096  # 4 classes: 64 Mi scores
    classes = ["background"] + [f"c{i}" for i in range(16)]
    data = json.loads(text)
    data.update(classes=classes, postprocess={"kind": "none"})
    with pytest.raises(ContractError, match=r"'input': 17 classes at 4096x4096 need more than 268435456 scores"):
        Contract.from_dict(data)


def test_names_that_are_fine():
    names = ["background", "nerve root", "L1-L2", "vessel_2", "Nervus (ulnaris)", "Gefäß", "c.5"]
    c = Contract.from_dict({**json.loads(make_contract().to_json()), "classes": names,
                            "postprocess": {"kind": "none"}, "output_name": "/model/logits:0"})
    assert c.classes == tuple(names) and c.output_name == "/model/logits:0"


def test_specs_check_themselves_when_built_in_code():
    with pytest.raises(ContractError, match=r"'postprocess.gap_iterations': 21 must be an integer in \[0, 20\]"):
        PostprocessSpec(gap_iterations=21)
    with pytest.raises(ContractError, match=r"'input.height': expected an integer, got str '64'"):
        InputSpec(height="64")
    with pytest.raises(ContractError, match=r"'frame.width': expected an integer, got float 8193.5"):
        FrameSpec(width=8193.5)
    with pytest.raises(ContractError, match=r"'recipe': expected a Recipe, got dict"):
        make_contract(recipe={})
    with pytest.raises(ContractError, match=r"'provenance': not plain JSON"):
        make_contract(provenance={"when": object()})


def test_every_named_recipe_and_default_spec_passes():
    for name in RECIPES:
        assert Contract.from_json(make_contract(recipe=get_recipe(name)).to_json()).recipe == get_recipe(name)
    assert PostprocessSpec() == default_postprocess(SPINE_CLASSES)
    # the seed's 500 px at 480x640 become 125 px on a 240x320 map, and the same on a 240x640 one
    assert default_postprocess(SPINE_CLASSES, (240, 320)).min_line_area == 125
    assert default_postprocess(SPINE_CLASSES, (240, 640)).min_box_area == 125
    assert default_postprocess(SPINE_CLASSES, (8, 8)).min_line_area == 1
    assert InputSpec().height == 480 and FrameSpec().width == 640


@pytest.mark.parametrize("text,message", [
    ("{oops", "not valid JSON"),
    (b"\xff\xfe{", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # nesting deeper than Python's recursion limit
    (" " * (1 << 20) + "{}", r"characters, more than the 1048576 a contract may have"),
    ("[1, 2]", "expected a JSON object, got list"),
])
def test_text_that_is_no_contract(text, message):
    with pytest.raises(ContractError, match=message):
        Contract.from_json(text)
