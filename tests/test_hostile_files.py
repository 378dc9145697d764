"""The filesystem rule: medharness replaces or deletes only folders it made (marked, never
through a link), whatever sits at the hidden staging path of the folder it is making."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.core.errors import UserError
from medharness.core.folders import whole_or_absent


def user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("the user's own")
    return path


def test_a_users_folder_at_the_staging_path_is_refused_and_kept(tmp_path: Path) -> None:
    theirs = user_folder(tmp_path / ".export.partial")
    with (
        pytest.raises(UserError, match="is not a medharness run directory"),
        whole_or_absent(tmp_path / "export"),
    ):
        pass
    assert (theirs / "notes.txt").read_text() == "the user's own"
    assert not (tmp_path / "export").exists()


def test_a_link_at_the_staging_path_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    elsewhere = user_folder(tmp_path / "elsewhere")
    (tmp_path / ".export.partial").symlink_to(elsewhere)
    with pytest.raises(UserError, match="is a symbolic link"), whole_or_absent(tmp_path / "export"):
        pass
    assert [p.name for p in elsewhere.iterdir()] == ["notes.txt"]


def test_a_staging_folder_medharness_left_is_replaced_and_the_result_unmarked(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError), whole_or_absent(tmp_path / "export") as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert not (tmp_path / ".export.partial").exists()  # ours: removed
    with whole_or_absent(tmp_path / "export") as staging:
        (staging / "whole.txt").write_text("whole")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["whole.txt"]


def test_a_dangling_link_at_the_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "export").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="already exists"), whole_or_absent(tmp_path / "export"):
        pass
    assert (tmp_path / "export").is_symlink()
