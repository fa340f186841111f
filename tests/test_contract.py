import json

import pytest

from usseg.runtime.contract import SPINE_CLASSES, Contract, ContractError, InputSpec, default_postprocess
from usseg.runtime.preprocess import get_recipe


def make_contract(**kw):
    base = dict(classes=SPINE_CLASSES, input=InputSpec(height=64, width=80), recipe=get_recipe("seed"),
                postprocess=default_postprocess(SPINE_CLASSES), provenance={"epoch": 3})
    base.update(kw)
    return Contract(**base)


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
BAD = [
    # (path to change, new value, words in the error)
    (["schema_version"], 99, "schema_version"),
    (["schema_version"], DELETE, "schema_version"),
    (["classes"], DELETE, "'classes' is missing"),
    (["classes"], ["background"], "'classes'"),
    (["output"], "heatmap", "'output'"),
    (["resize"], "stretch", "'resize'"),
    (["input", "channels"], 3, "'input'"),
    (["input", "colour"], "x", "unknown field(s) ['colour']"),
    (["recipe", "denoise"], "wavelet", "'denoise'"),
    (["recipe", "nlm_search"], 20, "'nlm_search'"),
    (["postprocess", "kind"], "magic", "'postprocess.kind'"),
    (["extra"], 1, "unknown field(s) ['extra']"),
]


@pytest.mark.parametrize("path,value,words", BAD)
def test_bad_contract_names_the_field(path, value, words):
    with pytest.raises(ContractError) as err:
        Contract.from_json(mutate(path, value))
    assert words in str(err.value)


def test_not_json_at_all():
    with pytest.raises(ContractError, match="not valid JSON"):
        Contract.from_json("{oops")
