"""Atomic writes: complete files with ordinary permissions, or nothing."""

from __future__ import annotations

import os

import pytest

from keras_regnet.files import atomic_path


def test_success_renames_with_umask_permissions(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(str(target)) as tmp:
        with open(tmp, "w") as f:
            f.write("done")
        assert not target.exists()  # nothing at the final path until the block succeeds
    assert target.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
