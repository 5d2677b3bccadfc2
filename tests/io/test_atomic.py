"""Tests of nucseg.io.atomic: a write that fails leaves what was there, and files get the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from nucseg.io.atomic import atomic_write


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_uses_umask_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "sub" / "out.txt") as tmp:
            assert tmp.suffix == ".txt"
            tmp.write_text("x")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "sub" / "out.txt").stat().st_mode) == 0o644
