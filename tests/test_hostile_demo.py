"""usseg demo deletes only what it made, and its report.html shows names from a model or a file
as text, never as markup."""

import html.parser
import os

import cv2
import numpy as np
import pytest

from usseg.benchmarks import demo
from usseg.benchmarks.demo import DEMO_MARK, main as demo_main, write_report
from usseg.runtime.fileio import LOCK_NAME


@pytest.fixture
def runs(monkeypatch):
    """demo's heavy part replaced by a stub that writes one file, recording the folders it ran in."""
    calls = []

    def fake_run(args, out):
        calls.append(sorted(p.name for p in out.iterdir()))
        (out / "summary.txt").write_text("made by the demo")
        return 0

    monkeypatch.setattr(demo, "_run", fake_run)
    return calls


def test_demo_refuses_a_folder_it_did_not_make_and_deletes_nothing(tmp_path, runs, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    assert demo_main(["--out", str(out), "--overwrite"]) == 2
    assert f"--out {out}: holds files the demo did not make" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["chapter1.tex"] and runs == []


def test_demo_refuses_a_symlink_naming_it(tmp_path, runs, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert demo_main(["--out", str(link), "--overwrite"]) == 2
    assert f"--out {link}: is a symbolic link (to {target})" in capsys.readouterr().err
    assert os.listdir(target) == ["keep.txt"] and runs == []


def test_demo_replaces_its_own_previous_run_only_with_overwrite(tmp_path, runs, capsys):
    out = tmp_path / "demo"
    assert demo_main(["--out", str(out)]) == 0                      # new folder
    assert (out / DEMO_MARK).is_file() and (out / "summary.txt").is_file()
    assert demo_main(["--out", str(out)]) == 2                      # a previous run: needs --overwrite
    assert "holds a previous demo run; pass --overwrite" in capsys.readouterr().err
    (out / "old-run-file.png").write_text("stale")
    assert demo_main(["--out", str(out), "--overwrite"]) == 0
    assert runs[-1] == sorted([LOCK_NAME, DEMO_MARK])                    # emptied before the run, then marked
    assert sorted(os.listdir(out)) == [DEMO_MARK, "summary.txt"]    # the lock is gone with the run


def test_demo_runs_into_an_empty_folder(tmp_path, runs):
    out = tmp_path / "empty"
    out.mkdir()
    assert demo_main(["--out", str(out)]) == 0 and (out / DEMO_MARK).is_file()


class _Inspector(html.parser.HTMLParser):
    """Every tag and attribute of a page, and its text."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


HOSTILE = '<script>alert("model")</script>'
BREAKOUT = "x``` </code><img src=x onerror=alert(1)> ```"


def test_report_html_shows_hostile_names_as_text(tmp_path):
    (tmp_path / "infer").mkdir()
    (tmp_path / "bench").mkdir()
    cv2.imwrite(str(tmp_path / "curves.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "bench" / "benchmark.png"), np.zeros((8, 8, 3), np.uint8))
    overlay = 'id"><svg onload=alert(3)> [x](javascript:alert(4))_overlay.png'
    cv2.imwrite(str(tmp_path / "infer" / overlay), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "bench" / "benchmark.md").write_text(
        f"| row | ms |\n|---|---|\n| {HOSTILE} | 1.0 |\n\n[click](javascript:alert(5)) <iframe src=//evil></iframe>\n")
    prov = {"model": HOSTILE, "sha256": "ab" * 32, "classes": ["background", BREAKOUT, "`MID`"],
            "recipe": {"name": "<b onmouseover=alert(2)>seed</b>"}, "provider": "CPU", "time": "now"}
    summary = f"test Dice: {BREAKOUT} 0.5\nmodel {HOSTILE}"
    write_report(tmp_path, summary, {"provenance": prov})
    page = (tmp_path / "report.html").read_text()
    seen = _Inspector()
    seen.feed(page)
    assert not {"script", "iframe", "svg"} & set(seen.tags)
    assert not [name for name, _ in seen.attrs if name.startswith("on")]
    assert not [name for name, _ in seen.attrs if name in ("href", "action", "formaction")]  # no link survives
    assert 'id"><svg onload=alert(3)> [x](javascript:alert(4))_overlay' in [v for _, v in seen.attrs]  # as alt text
    sources = [value for name, value in seen.attrs if name == "src"]
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # all embedded
    text = "".join(seen.text)
    # the names are shown as they are, in the summary and in the provenance
    assert text.count(HOSTILE) >= 2 and BREAKOUT in text and "`MID`" in text
    assert "<b onmouseover=alert(2)>seed</b>" in text
