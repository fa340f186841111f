"""The suite's guard against reading a data set beside the clone (tests/conftest.py's audit hook)."""

import sys
import tempfile

import conftest
import pytest


def _check(path) -> None:
    try:
        conftest._audit("open", (str(path), "r", 0))
    finally:
        conftest._outside_reads.clear()  # the guard's own record, not a read by this test


@pytest.mark.parametrize("sibling", ["shared/datasets/usgra-seg/split.csv", "other-project/data.png"])
def test_a_path_beside_the_repository_is_refused(sibling):
    with pytest.raises(conftest.OutsideRepositoryRead, match="tests read nothing outside the repository"):
        _check(conftest.ROOT.parent / sibling)


@pytest.mark.parametrize("where", [
    conftest.ROOT / "tests" / "data" / "usgra-seg" / "split.csv",   # the repository
    sys.prefix,                                                     # the interpreter (a venv beside the clone)
    tempfile.gettempdir(),                                          # pytest's temporary folders
])
def test_the_repository_interpreter_and_temporary_folders_are_allowed(where):
    _check(where)  # raises if refused
    assert conftest._outside_reads == []


def test_other_events_and_non_path_arguments_are_ignored():
    conftest._audit("open", (3, "r", 0))  # an open by file descriptor
    conftest._audit("os.remove", (str(conftest.ROOT.parent / "x"),))
    assert conftest._outside_reads == []
