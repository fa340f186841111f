"""The recipe as step objects: the stored format, the steps each recipe runs, and field checks."""

import itertools
import math
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from usseg.runtime.recipe import (
    RECIPES,
    STEPS,
    BilateralDenoise,
    Clahe,
    MedianDenoise,
    NlmDenoise,
    Recipe,
    RecipeError,
    Unsharp,
    get_recipe,
)
from usseg.runtime.recipe.fields import Integer, Real

STORED_FIELDS = ["name", "denoise", "nlm_h", "nlm_template", "nlm_search", "bilateral_d", "bilateral_sigma",
                 "median_ksize", "clahe", "clahe_clip", "clahe_tile", "unsharp", "unsharp_amount", "unsharp_sigma"]


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(5)
    base = cv2.GaussianBlur(rng.integers(0, 255, (60, 80)).astype(np.uint8), (0, 0), 2)
    return cv2.add(base, rng.integers(0, 40, (60, 80), dtype=np.uint8))


@pytest.mark.parametrize("name,steps", [
    ("seed", [NlmDenoise, Clahe, Unsharp]),
    ("none", []),
    ("realtime", [Clahe, Unsharp]),
    ("no-clahe", [NlmDenoise, Unsharp]),
    ("no-unsharp", [NlmDenoise, Clahe]),
    ("bilateral", [BilateralDenoise, Clahe, Unsharp]),
    ("median", [MedianDenoise, Clahe, Unsharp]),
])
def test_each_recipe_runs_its_steps_in_order(name, steps):
    assert [type(s) for s in get_recipe(name).steps] == steps


def test_stored_format_is_the_flat_record_and_round_trips():
    for name, recipe in RECIPES.items():
        data = recipe.to_dict()
        assert list(data) == STORED_FIELDS and data["name"] == name
        assert Recipe.from_dict(data) == recipe
    # Every stored field is a switch or exactly one step's parameter.
    params = [f for step in STEPS for f in step.field_names()]
    assert sorted(params + ["name", "denoise", "clahe", "unsharp"]) == sorted(STORED_FIELDS)


@pytest.mark.parametrize("name,chain", [
    # each recipe's host result is OpenCV's chain, bit for bit
    ("bilateral", lambda f: cv2.bilateralFilter(f, 5, 25.0, 25.0)),
    ("median", lambda f: cv2.medianBlur(f, 3)),
    ("nlm-small", lambda f: cv2.fastNlMeansDenoising(f, None, h=5, templateWindowSize=5, searchWindowSize=11)),
])
def test_host_steps_are_opencvs_chain(frame, name, chain):
    from usseg.runtime.preprocess import enhance

    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(chain(frame))
    expected = cv2.addWeighted(expected, 1.5, cv2.GaussianBlur(expected, (0, 0), 3.0), -0.5, 0)
    np.testing.assert_array_equal(enhance(frame, get_recipe(name)), expected)


@pytest.mark.parametrize("field,value,words", [
    ("nlm_search", 100001, "'nlm_search': 100001 must be an odd integer in [1, 35]"),  # crashed OpenCV
    ("nlm_search", 20, "'nlm_search': 20 must be an odd integer"),
    ("nlm_template", True, "'nlm_template': True must be an odd integer"),           # a bool is not a number
    ("nlm_template", 7.0, "'nlm_template': 7.0 must be an odd integer"),
    ("nlm_h", "5", "'nlm_h': '5' must be a number in (0, 255]"),                       # was a '<' TypeError
    ("nlm_h", 0, "'nlm_h': 0 must be a number in (0, 255]"),
    ("nlm_h", math.nan, "'nlm_h': nan must be a number"),
    ("unsharp_sigma", -1, "'unsharp_sigma': -1 must be a number in (0, 25]"),          # was a cv2 traceback
    ("unsharp_sigma", math.inf, "'unsharp_sigma': inf must be a number"),
    ("unsharp_amount", 11.0, "'unsharp_amount': 11.0 must be a number in [0, 10]"),
    ("clahe_clip", -0.5, "'clahe_clip': -0.5 must be a number in [0, 256]"),
    ("clahe_tile", 0, "'clahe_tile': 0 must be an integer in [1, 64]"),
    ("clahe_tile", 100000, "'clahe_tile': 100000 must be an integer in [1, 64]"),
    ("clahe", 1, "'clahe': 1 must be true or false"),
    ("unsharp", "yes", "'unsharp': 'yes' must be true or false"),
    ("denoise", "wavelet", "'denoise': 'wavelet'; valid: ['nlm', 'bilateral', 'median', 'none']"),
    ("denoise", None, "'denoise': None; valid:"),
    ("median_ksize", 4, "'median_ksize': 4 must be an odd integer in [1, 31]"),
    ("bilateral_d", 0, "'bilateral_d': 0 must be an integer in [1, 25]"),
    ("bilateral_sigma", -3, "'bilateral_sigma': -3 must be a number in (0, 1000]"),
    ("name", "", "'name': '' must be a non-empty text"),
    ("name", 3, "'name': 3 must be a non-empty text"),
])
def test_bad_fields_are_named(field, value, words):
    with pytest.raises(RecipeError, match=re.escape(f"recipe field {words}")) as err:
        Recipe.from_dict({**get_recipe("seed").to_dict(), field: value})
    assert err.value.field == field and isinstance(err.value, ValueError)


def test_fields_of_steps_not_run_are_checked_too():
    with pytest.raises(RecipeError, match="'bilateral_d'"):
        Recipe(denoise="nlm", bilateral_d=-1)
    with pytest.raises(RecipeError, match="'clahe_tile'"):
        Recipe(clahe=False, clahe_tile=0)


def test_numbers_are_normalised():
    recipe = Recipe(nlm_h=5, nlm_search=np.int64(11), clahe_clip=np.float32(2.0))
    assert type(recipe.nlm_h) is float and type(recipe.nlm_search) is int and type(recipe.clahe_clip) is float
    assert recipe == Recipe(nlm_search=11) and recipe.to_dict()["nlm_h"] == 5.0


def test_the_old_name_no_nlm_is_only_a_label(frame):
    from usseg.runtime.contract import Contract
    from usseg.runtime.preprocess import enhance

    assert "no-nlm" not in RECIPES
    old = Recipe.from_dict({**get_recipe("realtime").to_dict(), "name": "no-nlm"})
    assert old.steps == get_recipe("realtime").steps
    np.testing.assert_array_equal(enhance(frame, old), enhance(frame, get_recipe("realtime")))
    contract = Contract.from_dict({"classes": ["background", "a"], "input": {"height": 48, "width": 64},
                                   "recipe": {"name": "no-nlm", "denoise": "none"}, "resize": "letterbox",
                                   "output": "logits", "postprocess": {"kind": "none"}, "schema_version": 1})
    assert contract.recipe.name == "no-nlm" and contract.recipe.steps == old.steps


def _extremes(check):
    if isinstance(check, Integer):
        return [check.lo, check.hi] if not check.odd else [check.lo | 1, check.hi if check.hi % 2 else check.hi - 1]
    assert isinstance(check, Real)
    return [check.lo + 1e-3 if check.above else check.lo, check.hi]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
def test_every_admitted_extreme_is_safe_for_opencv(step):
    """Each corner of each step's ranges runs on a tiny and a small frame: no crash, 8-bit out."""
    from dataclasses import fields

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, shape).astype(np.uint8) for shape in [(3, 5), (33, 47)]]
    names = step.field_names()
    corners = itertools.product(*(_extremes(f.metadata["check"]) for f in fields(step)))
    for values in corners:
        instance = step(**dict(zip(names, values)))
        for img in frames:
            out = instance.host(img)
            assert out.shape == img.shape and out.dtype == np.uint8, (step.__name__, values)


def test_graph_refuses_steps_without_an_exact_form():
    from usseg.runtime.recipe.graph import GraphRecipeError, recipe_graph

    assert not BilateralDenoise.in_graph and not MedianDenoise.in_graph
    with pytest.raises(GraphRecipeError, match=r"recipe 'median' field 'denoise': 'median' has no in-graph form "
                                               r"\(supported: \['nlm', 'none'\]\)"):
        recipe_graph(get_recipe("median"), 96, 128, 48, 64)


def test_the_frame_path_does_not_import_onnx():
    code = ("import sys, numpy as np\n"
            "from usseg.runtime.preprocess import get_recipe, preprocess\n"
            "preprocess(np.tile(np.arange(80, dtype=np.uint8), (60, 1)), get_recipe('seed'), 32, 48)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'onnx'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
