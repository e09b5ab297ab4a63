"""The images ``input=`` names: one file, or a folder searched recursively (by extension,
through linked folders once each), leaving out hidden and run folders and saying so."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from detr_lightning.errors import MissingFileError
from detr_lightning.inference.image_search import find_images


def _write(path, size=(40, 30), value=100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_find_images_recurses_and_filters_by_extension(tmp_path) -> None:
    _write(tmp_path / "b.png")
    _write(tmp_path / "a" / "c.JPG")
    _write(tmp_path / "a" / "deep" / "d.webp")
    (tmp_path / "notes.txt").write_text("not an image")
    records = find_images(tmp_path)
    assert [r.file_name for r in records] == ["a/c.JPG", "a/deep/d.webp", "b.png"]
    assert [r.image_id for r in records] == [1, 2, 3]
    single = find_images(tmp_path / "b.png")
    assert len(single) == 1 and single[0].file_name == "b.png"


def test_find_images_names_the_input_when_nothing_is_there(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="input=.*no such"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image"):
        find_images(tmp_path / "empty")


def test_find_images_follows_linked_folders_once_each(tmp_path) -> None:
    """A folder reached through a symlink was skipped without a word (rglob does not follow
    links): ``input=DIR`` holding ``linked_dir -> elsewhere/sub`` predicted 1 image of 3."""
    _write(tmp_path / "elsewhere" / "sub" / "a.png")
    _write(tmp_path / "elsewhere" / "sub" / "deep" / "b.jpg")
    _write(tmp_path / "input" / "linked.jpg")
    (tmp_path / "input" / "linked_dir").symlink_to(tmp_path / "elsewhere" / "sub")
    # a link back to a parent (a loop) and a second link to the same folder: searched once
    (tmp_path / "elsewhere" / "sub" / "deep" / "up").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "input" / "same_dir").symlink_to(tmp_path / "elsewhere" / "sub")
    records = find_images(tmp_path / "input")
    names = ["linked.jpg", "linked_dir/a.png", "linked_dir/deep/b.jpg"]
    assert [r.file_name for r in records] == names
    assert [r.path for r in records] == [tmp_path / "input" / n for n in names]
    assert [r.image_id for r in records] == [1, 2, 3]


def test_find_images_leaves_out_hidden_and_run_folders_and_says_so(tmp_path, caplog) -> None:
    """A second predict run over a folder holding the first one's output predicted its
    drawings too, as it did hidden files and folders (``.ipynb_checkpoints`` copies)."""
    photos = ["a.jpg", "sub/b.png"]
    left_out = [".hidden.png", ".cache/e.png", ".ipynb_checkpoints/a-checkpoint.jpg",
                "out1/drawn/a.png", "out1/drawn/sub/b.png", "out2/drawn/a.png"]  # fmt: skip
    for name in photos + left_out:
        _write(tmp_path / name)
    (tmp_path / "out1" / ".hydra").mkdir()  # a finished predict run's directory
    with caplog.at_level(logging.INFO, logger="detr_lightning.inference.image_search"):
        records = find_images(tmp_path, output_dir=tmp_path / "out2")
    assert [r.file_name for r in records] == photos
    (line,) = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert f"input={tmp_path}: left out" in line and "input=<file>" in line
    for count in ["2 hidden folder(s)", "1 hidden image file(s)", "1 earlier run folder(s)",
                  "1 folder(s) that are this run's output_dir"]:  # fmt: skip
        assert re.search(rf"\b{re.escape(count)}", line), (count, line)
    # named explicitly, a hidden file is still predicted; a tidy folder logs nothing
    (single,) = find_images(tmp_path / ".hidden.png")
    assert single.path == tmp_path / ".hidden.png"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detr_lightning.inference.image_search"):
        assert len(find_images(tmp_path / "sub")) == 1
    assert "left out" not in caplog.text


def test_a_folder_holding_only_left_out_images_names_them(tmp_path) -> None:
    _write(tmp_path / ".cache" / "e.png")
    with pytest.raises(FileNotFoundError, match=r"holds no image.*left out 1 hidden folder"):
        find_images(tmp_path)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder all the same")
def test_an_unreadable_sub_folder_is_named_in_a_warning(tmp_path, caplog) -> None:
    """A sub-folder without read permission was left out without a word: its images were
    simply missing from the predictions."""
    _write(tmp_path / "a.png")
    _write(tmp_path / "locked" / "b.png")
    (tmp_path / "locked").chmod(0)
    try:
        with caplog.at_level(logging.WARNING, logger="detr_lightning.inference.image_search"):
            records = find_images(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)  # so that pytest can remove it
    assert [r.file_name for r in records] == ["a.png"]
    (line,) = _warnings(caplog)
    assert line.startswith(f"input={tmp_path}: left out 1 path(s) that could not be searched: ")
    assert "locked (Permission denied)" in line


def test_a_sub_folder_the_system_refuses_to_list_is_named_in_a_warning(
    tmp_path, caplog, monkeypatch
) -> None:
    """The test above as root (which reads a chmod 000 folder): listing the folder fails with
    the error the system gives a user without permission."""
    _write(tmp_path / "a.png")
    _write(tmp_path / "locked" / "b.png")
    _write(tmp_path / "open" / "c.png")
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with caplog.at_level(logging.WARNING, logger="detr_lightning.inference.image_search"):
        records = find_images(tmp_path)
    assert [r.file_name for r in records] == ["a.png", "open/c.png"]
    (line,) = _warnings(caplog)
    assert line == (f"input={tmp_path}: left out 1 path(s) that could not be searched: locked "
                    "(Permission denied); fix their permissions or links, or ignore this if they "
                    "hold no images")  # fmt: skip


def test_broken_links_are_named_in_a_warning_the_first_five_of_them(tmp_path, caplog) -> None:
    """A link to a moved photo or folder was passed over without a word. Six broken links: the
    warning counts them and names the first five in path order, each with its target."""
    _write(tmp_path / "a.png")
    for i in range(5):
        (tmp_path / f"gone{i}.jpg").symlink_to(tmp_path / "moved" / f"{i}.jpg")
    (tmp_path / "photos").symlink_to("/nonexistent/photos")  # was a folder, sorts last
    (tmp_path / ".hidden_link").symlink_to(tmp_path / "nowhere")  # hidden: left out quietly
    with caplog.at_level(logging.WARNING, logger="detr_lightning.inference.image_search"):
        records = find_images(tmp_path)
    assert [r.file_name for r in records] == ["a.png"]
    (line,) = _warnings(caplog)
    named = ", ".join(f"gone{i}.jpg (broken link to {tmp_path}/moved/{i}.jpg)" for i in range(5))
    head = f"input={tmp_path}: left out 6 path(s) that could not be searched: "
    assert f"{head}{named} and 1 more" in line
    assert "/nonexistent/photos" not in line and ".hidden_link" not in line


def test_a_folder_of_broken_links_only_names_them_in_its_error(tmp_path) -> None:
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    with pytest.raises(FileNotFoundError, match=r"holds no image.*1 path\(s\) that could not be "
                       r"searched: a\.jpg \(broken link to .*b\.jpg\)"):  # fmt: skip
        find_images(tmp_path)


def test_five_broken_links_are_all_named_with_none_more(tmp_path, caplog) -> None:
    _write(tmp_path / "a.png")
    for i in range(5):
        (tmp_path / f"gone{i}.jpg").symlink_to(tmp_path / "moved" / f"{i}.jpg")
    with caplog.at_level(logging.WARNING, logger="detr_lightning.inference.image_search"):
        find_images(tmp_path)
    (line,) = _warnings(caplog)
    named = ", ".join(f"gone{i}.jpg (broken link to {tmp_path}/moved/{i}.jpg)" for i in range(5))
    assert f"left out 5 path(s) that could not be searched: {named}; fix" in line


def test_a_folder_of_a_hidden_folder_and_a_broken_link_names_both_in_its_error(tmp_path) -> None:
    _write(tmp_path / ".cache" / "e.png")
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    with pytest.raises(FileNotFoundError, match=r"holds no image.*; left out 1 hidden folder\(s\) "
                       r"\(name starting with '\.'\); 1 path\(s\) that could not be searched: "
                       r"a\.jpg \(broken link to "):  # fmt: skip
        find_images(tmp_path)


def test_an_input_folder_that_cannot_be_listed_is_named_itself(tmp_path, monkeypatch) -> None:
    """Not "holds no image; left out 1 path(s) that could not be searched: . (...)"."""
    _write(tmp_path / "a.png")
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == str(tmp_path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(MissingFileError) as error:
        find_images(tmp_path)
    assert str(error.value) == (f"input={tmp_path}: the folder cannot be listed (Permission "
                                "denied). Fix: its permissions (chmod u+rx), or another input=")  # fmt: skip
