"""Script outputs: numbered folders under a default root, and nothing written over an earlier call's files."""

import pytest

from lit_align.outputs import next_free, output_directory, output_file


def test_numbered_folders_fill_the_first_gap(tmp_path):
    root = tmp_path / "plots"
    assert next_free(root) == root / "0"  # the root need not exist yet
    for name in ("0", "1", "3", "notes"):
        (root / name).mkdir(parents=True)
    assert next_free(root) == root / "2"


def test_a_default_directory_is_new_each_call(tmp_path):
    first = output_directory(None, tmp_path / "plots")
    (first / "loss.png").write_bytes(b"png")
    second = output_directory(None, tmp_path / "plots")
    assert (first.name, second.name) == ("0", "1") and second.is_dir() and (first / "loss.png").is_file()


def test_a_given_directory_with_files_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "merged"
    assert output_directory(target, tmp_path) == target and target.is_dir()  # new: created
    assert output_directory(target, tmp_path) == target  # empty: fine
    (target / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(SystemExit, match="--overwrite"):
        output_directory(target, tmp_path)
    assert output_directory(target, tmp_path, overwrite=True) == target
    with pytest.raises(SystemExit, match="not an empty directory"):
        output_directory(target / "model.safetensors", tmp_path, overwrite=True)  # a file is never a directory


def test_a_given_file_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "sub" / "soft_prompt.pt"
    assert output_file(path) == path and path.parent.is_dir()
    path.write_bytes(b"tensor")
    with pytest.raises(SystemExit, match="already exists"):
        output_file(path)
    assert output_file(path, overwrite=True) == path
