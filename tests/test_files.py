"""xmodlm.files: atomic writes leave the old file or the new one, never part of one or a temporary."""

from __future__ import annotations

import os
import stat

import pytest

from xmodlm.files import atomic_write, atomic_write_bytes, atomic_write_text, current_umask, fsync_dir


def test_writes_text_bytes_and_through_a_writer(tmp_path):
    assert atomic_write_text(tmp_path / "a.txt", "héllo\n") == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_text(tmp_path / "chunks.txt", (f"{i}\n" for i in range(3)), newline="\n")
    assert (tmp_path / "chunks.txt").read_bytes() == b"0\n1\n2\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    atomic_write(tmp_path / "c.bin", lambda tmp: tmp.write_bytes(b"by name"))
    assert (tmp_path / "c.bin").read_bytes() == b"by name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin", "chunks.txt"]


def test_a_replaced_file_keeps_no_stale_content(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "a long first version\n" * 100)
    atomic_write_text(path, "short\n")
    assert path.read_text() == "short\n"


@pytest.mark.parametrize("when", ["writer", "replace"])
def test_a_failure_leaves_the_target_untouched_and_no_temporary(tmp_path, monkeypatch, when):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old\n")

    def failing_writer(tmp):
        tmp.write_text("half of the ne")
        raise OSError("disk full")

    def failing_replace(*args):
        raise OSError("disk full")

    if when == "replace":
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing_writer if when == "writer" else lambda tmp: tmp.write_text("new\n"))
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_an_interrupt_removes_the_temporary_and_a_new_target_is_not_created(tmp_path):
    def interrupted(tmp):
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", interrupted)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        for name, write in [("t", lambda p: atomic_write_text(p, "x")), ("b", lambda p: atomic_write_bytes(p, b"x")),
                            ("w", lambda p: atomic_write(p, lambda tmp: tmp.write_text("x")))]:
            write(tmp_path / name)
            with open(tmp_path / f"plain-{name}", "w"):
                pass
            mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
            assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / f"plain-{name}").stat().st_mode), oct(mode)
    finally:
        os.umask(old)


def test_fsync_dir_of_a_missing_directory_does_nothing(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")
