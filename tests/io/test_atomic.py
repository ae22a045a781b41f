from __future__ import annotations

import os
import stat

import pytest

from mae3d.io.atomic import atomic_dir, atomic_path, read_json, write_json


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "a.json"
    write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert read_json(dest) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_no_silent_overwrite(tmp_path):
    dest = tmp_path / "a.json"
    write_json(dest, {"v": 1})
    with pytest.raises(FileExistsError, match=r"a\.json"):
        write_json(dest, {"v": 2}, overwrite=False)
    assert read_json(dest) == {"v": 1}


def test_atomic_dir(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "f").write_text("x")
        raise RuntimeError
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(dest) as tmp:
        (tmp / "f").write_text("x")
    assert (dest / "f").read_text() == "x"
    with pytest.raises(FileExistsError), atomic_dir(dest):
        pass


def test_read_json_names_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_json(bad)


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        f = write_json(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
