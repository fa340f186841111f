import base64
import re
from pathlib import Path

import cv2
import numpy as np

from usseg.benchmarks.demo import bench_command, summary_text, write_report


def test_demo_report_is_one_html_file_with_its_images_inside(tmp_path):
    (tmp_path / "infer").mkdir()
    (tmp_path / "bench").mkdir()
    images = {"curves.png": np.full((30, 40, 3), 10, np.uint8),
              "infer/a_overlay.png": np.full((20, 30, 3), 20, np.uint8),
              "bench/benchmark.png": np.full((10, 10, 3), 30, np.uint8)}
    for name, image in images.items():
        cv2.imwrite(str(tmp_path / name), image)
    (tmp_path / "bench" / "benchmark.md").write_text("| stage | median ms |\n|---|---|\n| end to end | 12.5 |\n")
    prov = {"model": "model.onnx", "sha256": "ab" * 32, "classes": ["background", "MID"], "recipe": {"name": "seed"},
            "usseg": "0.1.0", "onnxruntime": "1.32.0", "provider": "CPUExecutionProvider",
            "time": "2026-01-01T00:00:00+00:00"}
    write_report(tmp_path, "summary line <not a tag>", {"provenance": prov})
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "![a_overlay](infer/a_overlay.png)" in md and f"SHA-256: `{'ab' * 32}`" in md
    # Every image is inside the page, byte for byte; nothing is linked from outside it.
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {(tmp_path / name).read_bytes() for name in images}
    assert "<table>" in page and "<td>12.5</td>" in page
    assert "summary line &lt;not a tag&gt;" in page and "ab" * 32 in page


def test_the_summary_names_the_report_as_a_link():
    ev = {"dice": {"MID": 0.5}, "frames": 3, "mean_dice": 0.5}
    stream = {"processed": 5, "captured": 6, "fps": 10.0, "latency_ms_p50": 1.0, "latency_ms_p99": 2.0, "dropped": 1}

    text = summary_text(Path("runs/demo"), ev, {}, {"timings_ms_median": {}}, stream, [], {})
    assert f"report: {Path('runs/demo/report.html').absolute().as_uri()}" in text


def test_demo_benchmark_times_the_checkpoint_so_the_seed_style_rows_run():
    import argparse

    from usseg.benchmarks.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cmd = bench_command(Path("runs/demo"))
    assert cmd[1:3] == ["-m", "usseg.benchmarks.cli"]
    args = parser.parse_args(cmd[3:])
    assert Path(args.model) == Path("runs/demo/run/best.pt") and args.quick
