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


# /proc takes no new entries, for root too: the hidden staging name beside the target fails.
UNWRITABLE = "/proc/keras_regnet_test_target"


@pytest.mark.parametrize("writer", ["atomic_path", "atomic_directory", "staged_files"])
def test_an_unwritable_place_is_named_by_the_target_not_the_staging_name(writer):
    from keras_regnet import files, writers

    write = {"atomic_path": files.atomic_path, "atomic_directory": files.atomic_directory,
             "staged_files": writers.staged_files}[writer]
    with pytest.raises(OSError) as raised:
        with write(UNWRITABLE):
            pass
    assert raised.value.filename == UNWRITABLE and ".part" not in str(raised.value), raised.value


@pytest.mark.parametrize("target, prefix, folder", [
    (f"{UNWRITABLE}/1", ".1.exporting.", True),  # the SavedModel export's, in its output folder
    (UNWRITABLE, ".train-staging-", True),  # the TFRecord writer's, in its output folder
    (f"{UNWRITABLE}/1", ".1.exporting.", False),  # the file form
])
def test_a_staging_place_made_elsewhere_is_named_by_its_target_too(target, prefix, folder):
    from keras_regnet.files import new_staging

    with pytest.raises(OSError) as raised:
        new_staging(target, folder=folder, directory=UNWRITABLE, prefix=prefix, suffix="")
    assert raised.value.filename == target and prefix not in str(raised.value), raised.value


def test_a_preset_into_an_unwritable_place_is_one_line_naming_it(capsys):
    from keras_regnet import cli

    assert cli.main(["preset", "--model", "RegNetX002", "--weights", "none", "--output", UNWRITABLE]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and UNWRITABLE in error and ".part" not in error, error
