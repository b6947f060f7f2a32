"""Confined file access (``sidecar/builtin/confined.py``), one swap at a time.

``SwapAfterCheck`` is a PathScope that lets "the attacker" strike exactly between the path check
and the walk: the moment the old code lost. tests/sidecar/test_confinement.py races the same
swaps against the real sidecar with a concurrent attacker.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from sidecar.builtin import PathScope
from sidecar.builtin.confined import Refused, open_dir, open_file, open_parent, stat_path
from taskmill_core import PermanentError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors")


class SwapAfterCheck(PathScope):
    """A scope that runs ``swap`` once, right after a path passed the check."""

    def __init__(self, root: Path, swap: Callable[[], None]) -> None:
        super().__init__([root])
        self.swap: Callable[[], None] | None = swap

    def locate(self, path: str, *, field: str = "path") -> tuple[Path, tuple[str, ...]]:
        found = super().locate(path, field=field)
        if self.swap is not None:
            self.swap()
            self.swap = None
        return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r.resolve()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret").write_bytes(b"secret")
    (o / "dir").mkdir()
    return o.resolve()


def swap_for_symlink(name: Path, target: Path) -> Callable[[], None]:
    def swap() -> None:
        os.rename(name, name.with_name(name.name + ".moved"))
        name.symlink_to(target)

    return swap


def forbidden(fn: Callable[[], object]) -> str:
    with pytest.raises(PermanentError) as info:
        fn()
    assert info.value.kind == "forbidden"
    return str(info.value)


def test_locate_names_the_root_and_the_resolved_components(root: Path) -> None:
    (root / "a").mkdir()
    (root / "a" / "f").write_bytes(b"x")
    (root / "link").symlink_to(root / "a")
    scope = PathScope([root, root / "a"])
    assert scope.locate(str(root / "link" / "f")) == (root / "a", ("f",))
    assert scope.locate(str(root / "new" / "g")) == (root, ("new", "g"))
    assert scope.locate(str(root)) == (root, ())


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_read(
    root: Path, outside: Path
) -> None:
    (root / "f").write_bytes(b"public")
    scope = SwapAfterCheck(root, swap_for_symlink(root / "f", outside / "secret"))
    message = forbidden(lambda: open_file(scope, str(root / "f")))
    assert str(root / "f") in message and "symbolic link" in message


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_entered(
    root: Path, outside: Path
) -> None:
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"public")
    (outside / "dir" / "f").write_bytes(b"secret")
    calls: list[Callable[[PathScope], object]] = [
        lambda scope: open_file(scope, str(root / "d" / "f")),
        lambda scope: open_dir(scope, str(root / "d")),
        lambda scope: stat_path(scope, str(root / "d" / "f")),
        lambda scope: open_parent(scope, str(root / "d" / "new"), create=True),
    ]
    for call in calls:
        scope = SwapAfterCheck(root, swap_for_symlink(root / "d", outside / "dir"))
        message = forbidden(partial(call, scope))
        assert str(root / "d") in message
        (root / "d").unlink()
        os.rename(root / "d.moved", root / "d")
    assert sorted(os.listdir(outside / "dir")) == ["f"]


def test_a_directory_to_be_made_that_appears_as_a_symlink_is_not_entered(
    root: Path, outside: Path
) -> None:
    def plant() -> None:
        (root / "new").symlink_to(outside / "dir")

    scope = SwapAfterCheck(root, plant)
    forbidden(lambda: open_parent(scope, str(root / "new" / "sub" / "f"), create=True))
    assert os.listdir(outside / "dir") == []


def test_symlinks_that_stay_inside_the_root_still_work(root: Path) -> None:
    (root / "a").mkdir()
    (root / "a" / "f").write_bytes(b"inside")
    (root / "alias").symlink_to("a")
    (root / "f-alias").symlink_to(root / "a" / "f")
    scope = PathScope([root])
    for path in (root / "alias" / "f", root / "f-alias"):
        with open_file(scope, str(path)) as f:
            assert f.read() == b"inside"


def test_a_fifo_is_not_a_file_and_does_not_block(root: Path) -> None:
    os.mkfifo(root / "fifo")
    started = time.monotonic()
    with pytest.raises(PermanentError) as info:
        open_file(PathScope([root]), str(root / "fifo"))
    assert info.value.kind == "notAFile" and time.monotonic() - started < 1


def test_a_new_part_file_replaces_whatever_was_under_its_name(root: Path, outside: Path) -> None:
    victim = outside / "secret"
    with open_dir(PathScope([root]), str(root)) as d:
        for offset in (0, 3):  # a fresh start, and a resume
            os.link(victim, root / "hard.part")
            (root / "soft.part").symlink_to(victim)
            for name in ("hard.part", "soft.part"):
                f, used = d.open_part(name, offset)
                with f:
                    f.write(b"written")
                assert used == 0
            assert victim.read_bytes() == b"secret" and victim.stat().st_nlink == 1
            assert (root / "hard.part").read_bytes() == b"written"
            assert (root / "soft.part").read_bytes() == b"written"
            (root / "hard.part").unlink()
            (root / "soft.part").unlink()


def test_a_part_file_of_our_own_is_resumed(root: Path) -> None:
    (root / "dst.part").write_bytes(b"0123456789")
    with open_dir(PathScope([root]), str(root)) as d:
        f, used = d.open_part("dst.part", 4)
        with f:
            f.write(b"abc")
        assert used == 4
        f, used = d.open_part("dst.part", 100)  # more than it holds: from the start
        f.close()
        assert used == 0
    assert (root / "dst.part").read_bytes() == b""


def test_publish_never_links_through_a_part_swapped_for_a_symlink(
    root: Path, outside: Path
) -> None:
    with open_dir(PathScope([root]), str(root)) as d:
        f, _ = d.open_part("dst.part", 0)
        f.close()
        (root / "dst.part").unlink()
        (root / "dst.part").symlink_to(outside / "secret")
        d.publish("dst.part", "dst", overwrite=False)
    assert (root / "dst").is_symlink()  # the symlink itself, which nothing follows
    assert (outside / "secret").stat().st_nlink == 1
    with open_dir(PathScope([root]), str(root)) as d, pytest.raises(Refused):
        d.open_file("dst")
