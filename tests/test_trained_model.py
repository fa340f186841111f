"""The tiny model that the runtime and export tests use has learnt the structures: tests that
look at its labels and geometry test something only if there is something to find."""

import numpy as np

from usseg.train.maskfolder import open_mask_folder


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(int(a.sum() + b.sum()), 1)


def test_the_fixture_model_finds_the_structures_on_unseen_frames(tiny_onnx, phantom_data):
    from usseg.runtime import Segmenter

    seg = Segmenter(tiny_onnx, device="cpu")
    folder = open_mask_folder(phantom_data)
    dice: dict[str, list[float]] = {name: [] for name in seg.contract.classes[1:]}
    lines_found = 0
    test_ids = folder.ids("test")
    for item_id in test_ids:
        image, truth = folder.load(item_id)
        result = seg(image)
        for c, name in enumerate(seg.contract.classes[1:], start=1):
            if (truth == c).any():
                dice[name].append(_dice(result.labels == c, truth == c))
        if (truth == 1).any() and result.lines["MID"] is not None:
            midline = result.lines["MID"]
            xs = np.nonzero(truth == 1)[1]
            # the midline's end points lie within the band of the annotated midline (+- 10 px)
            assert xs.min() - 10 <= midline[:, 0].min() and midline[:, 0].max() <= xs.max() + 10
            lines_found += 1
    means = {name: float(np.mean(v)) for name, v in dice.items() if v}
    assert set(means) == {"MID", "VTB", "EPI"}
    assert min(means.values()) > 0.4, means
    assert lines_found >= len(test_ids) // 2
