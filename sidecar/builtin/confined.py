"""Confined file access: the file executors reach every file through a descriptor of its root.

A path that is checked and then opened again by name can change in between: anyone who can write
inside an ``--allow-path`` root can swap a file for a symlink to a secret, or a directory for a
symlink to a directory elsewhere, and the open lands outside the root. So a path is checked once
(:meth:`PathScope.locate`: the lexical rules, symlinks resolved, inside a root?), which yields a
root and the components below it as they were then; those components are opened one at a time
from a descriptor of the root with ``O_NOFOLLOW`` (and ``O_DIRECTORY`` on the way down). A
component that has become a symlink since is refused (:class:`Refused`, kind ``forbidden``),
never followed. Symlinks inside a root that point inside it keep working: the check resolved
them, and the components opened are those of their target.

After that, names are used only within the directories opened: a file is read and stat'ed
through its own descriptor; a part file is created with ``O_CREAT | O_EXCL`` after any old one
was removed (a leftover could be a symlink, or a hard link to a file elsewhere), and an old one
is kept for a resume only when it is a regular file with no other link; a part file is renamed
into place within its directory's descriptor; directories are made with ``mkdir`` in their
parent's. ``http.upload`` (reading a file) and any future file executor use the same calls.

Not covered: a directory the walk already holds can be moved out of the root by someone who may
also write where it lands; what is written then follows the directory (the kernel's
``RESOLVE_BENEATH`` has the same limit). A hard link to a file elsewhere cannot be told from a
file, so it can be read (Linux lets only those who may write a file link it:
``fs.protected_hardlinks``); it is never written into.

Windows has no ``dir_fd``: there each file is opened by its full path and then the handle's
final path (``GetFinalPathNameByHandleW``) must lie inside a root; directories are checked by
path and renames go by path. That branch is written for Windows but not tested here, and kept
small on purpose.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
from pathlib import Path
from types import TracebackType

from sidecar.builtin.scope import PathScope
from taskmill_core.errors import PermanentError

__all__ = ["Directory", "Refused", "open_dir", "open_file", "open_parent", "stat_path"]

_AT = os.name == "posix"
"""Whether names are opened relative to directory descriptors (``openat`` and friends)."""

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO planted under the name must not hang the worker thread.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC | _BINARY
_PART_FLAGS = os.O_RDWR | _NOFOLLOW | _CLOEXEC | _BINARY
_PART_TRIES = 3
"""Attempts to create a part file when something keeps reappearing under its name."""


class Refused(OSError):
    """A name that would lead out of the allowed paths: a symlink where a file or directory was
    expected (never followed), or on Windows a file whose final path lies outside the roots."""

    def __init__(self, path: str, why: str = "is a symbolic link (not followed)") -> None:
        super().__init__(errno.ELOOP, why, path)


class Directory:
    """An open directory inside the scope. Names given to its methods are single components.

    ``path`` is where the directory was when it was opened, for messages and for the paths of
    what is found inside; it is never used to reach anything on POSIX.
    """

    def __init__(self, scope: PathScope, path: Path, fd: int | None) -> None:
        self.scope = scope
        self.path = path
        self._fd = fd

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        return f"Directory({str(self.path)!r}, fd={self._fd})"

    def _name(self, name: str) -> str:
        """What to hand the OS for ``name``: the name itself with ``dir_fd``, else a full path."""
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"not a single path component: {name!r}")
        return name if _AT else os.path.join(self.path, name)

    def _full(self, name: str) -> str:
        return str(self.path / name)

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry ``name`` itself (a symlink is not followed); None when there is none."""
        try:
            return os.stat(self._name(name), dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_dir(self, name: str, *, create: bool = False) -> Directory:
        """The subdirectory ``name`` (made first when ``create``); a symlink is :class:`Refused`."""
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self._name(name), 0o777, dir_fd=self._fd)
        if not _AT:
            return self._open_dir_by_path(name)
        try:
            fd = os.open(self._name(name), _DIR_FLAGS, dir_fd=self._fd)
        except NotADirectoryError:
            # O_NOFOLLOW | O_DIRECTORY fails with ENOTDIR for a symlink too (Linux), so which
            # was it? Without O_DIRECTORY a symlink surely gives ELOOP.
            fd = self._open_dir_again(name)
        except OSError as exc:
            raise self._refusal(name, exc) from None
        return Directory(self.scope, self.path / name, fd)

    def _open_dir_again(self, name: str) -> int:
        """Open ``name`` without ``O_DIRECTORY`` (never following a symlink, never blocking)
        and keep it if it is a directory by now."""
        try:
            fd = os.open(self._name(name), _READ_FLAGS, dir_fd=self._fd)
        except OSError as exc:
            raise self._refusal(name, exc) from None
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", self._full(name))
        return fd

    def open_file(self, name: str) -> io.FileIO:
        """The regular file ``name``, open for reading. Anything else fails: a symlink is
        :class:`Refused`, a directory or device raises :class:`IsADirectoryError` or
        ``OSError(EINVAL)``."""
        try:
            fd = os.open(self._name(name), _READ_FLAGS, dir_fd=self._fd)
        except OSError as exc:
            raise self._refusal(name, exc) from None
        return self._regular(fd, name, "rb")

    def open_part(self, name: str, offset: int) -> tuple[io.FileIO, int]:
        """The part file ``name`` open for writing at ``offset``, or at 0 when the old one
        holds fewer bytes or cannot be trusted. Returns the unbuffered file and the offset.

        An old part file is kept only for a resume (``offset > 0``) and only when it is a
        regular file with one link; anything else under the name is removed and the part file
        is created anew with ``O_EXCL`` (which never follows or reuses what it finds).
        """
        if offset > 0:
            kept = self._reuse_part(name, offset)
            if kept is not None:
                return kept, offset
        for _ in range(_PART_TRIES):
            self.unlink(name)
            try:
                fd = os.open(
                    self._name(name), _PART_FLAGS | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=self._fd
                )
            except FileExistsError:
                continue  # something appeared between the unlink and the create: again
            return self._checked(fd, name, "r+b"), 0
        raise FileExistsError(errno.EEXIST, "keeps reappearing", self._full(name))

    def _reuse_part(self, name: str, offset: int) -> io.FileIO | None:
        try:
            fd = os.open(self._name(name), _PART_FLAGS, dir_fd=self._fd)
        except OSError:
            return None  # gone, a symlink, a directory...: start afresh
        f = self._checked(fd, name, "r+b")
        try:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size >= offset:
                f.truncate(offset)
                f.seek(offset)
                return f
        except BaseException:
            f.close()
            raise
        f.close()
        return None

    def publish(self, part: str, name: str, *, overwrite: bool) -> None:
        """Rename the finished part file ``part`` to ``name`` atomically, then make the rename
        durable. Without ``overwrite`` an existing ``name`` raises :class:`FileExistsError`; a
        hard link makes that check atomic where the file system has them."""
        src, dst, fd = self._name(part), self._name(name), self._fd
        if overwrite:
            os.replace(src, dst, src_dir_fd=fd, dst_dir_fd=fd)
        else:
            try:
                # follow_symlinks=False: were ``part`` swapped for a symlink, link the symlink
                # itself, never the file it points to.
                if _AT:
                    os.link(src, dst, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
                else:
                    os.link(src, dst)
            except FileExistsError:
                raise
            except OSError:  # no hard links here (FAT, some network shares): check, then rename
                if self.lstat(name) is not None:
                    raise FileExistsError(errno.EEXIST, "file exists", self._full(name)) from None
                os.replace(src, dst, src_dir_fd=fd, dst_dir_fd=fd)
            else:
                os.unlink(src, dir_fd=fd)
        self.sync()

    def unlink(self, name: str) -> None:
        """Remove the entry ``name`` (a symlink itself, never its target); gone already is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._name(name), dir_fd=self._fd)

    def entries(self) -> list[os.DirEntry[str]]:
        """The directory's entries, sorted by name. Their ``stat(follow_symlinks=False)`` and
        ``is_dir(follow_symlinks=False)`` ask this directory, not a path."""
        if self._fd is None:
            with os.scandir(self.path) as it:
                return sorted(it, key=lambda e: e.name)
        with os.scandir(self._fd) as fd_it:
            return sorted(fd_it, key=lambda e: e.name)

    def sync(self) -> None:
        """Make renames in this directory durable (where directories can be fsynced)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)

    # --- checks on what was opened -----------------------------------------------------------

    def _refusal(self, name: str, exc: OSError) -> OSError:
        """:class:`Refused` when ``O_NOFOLLOW`` met a symlink (ELOOP; EMLINK on FreeBSD), else
        ``exc`` naming the full path."""
        if exc.errno == errno.ELOOP or (exc.errno == errno.EMLINK and sys.platform != "linux"):
            return Refused(self._full(name))
        exc.filename = self._full(name)
        return exc

    def _checked(self, fd: int, name: str, mode: str) -> io.FileIO:
        """The file for ``fd`` — after, on Windows, its final path was found inside a root."""
        if not _AT:
            try:
                final = Path(_final_path(fd))
            except BaseException:
                os.close(fd)
                raise
            if not self.scope.contains(final):
                os.close(fd)
                raise Refused(self._full(name), f"leads outside the allowed paths ({final})")
        return io.FileIO(fd, mode)

    def _regular(self, fd: int, name: str, mode: str) -> io.FileIO:
        f = self._checked(fd, name, mode)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", self._full(name))
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "is not a regular file", self._full(name))
            if _AT:
                os.set_blocking(fd, True)
        except BaseException:
            f.close()
            raise
        return f

    def _open_dir_by_path(self, name: str) -> Directory:
        # Windows (see the module docstring): a directory is only a path here; what matters is
        # that every file opened below it is checked by its handle's final path.
        path = self.path / name
        if path.is_symlink():
            raise Refused(str(path))
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
        if not self.scope.is_inside(path):  # a junction
            raise Refused(str(path), "leads outside the allowed paths")
        return Directory(self.scope, path, None)


if sys.platform == "win32":  # pragma: no cover - Windows only, see the module docstring
    import ctypes
    import msvcrt
    from ctypes import wintypes

    def _final_path(fd: int) -> str:
        """The path an open file really has (symlinks and junctions resolved)."""
        get = ctypes.windll.kernel32.GetFinalPathNameByHandleW
        get.argtypes = [wintypes.HANDLE, wintypes.LPWSTR, wintypes.DWORD, wintypes.DWORD]
        get.restype = wintypes.DWORD
        buf = ctypes.create_unicode_buffer(32768)
        n = get(msvcrt.get_osfhandle(fd), buf, len(buf), 0)
        if n == 0 or n >= len(buf):
            raise ctypes.WinError()
        path = buf.value
        if path.startswith("\\\\?\\UNC\\"):
            return "\\\\" + path[8:]
        return path.removeprefix("\\\\?\\")

else:

    def _final_path(fd: int) -> str:
        raise NotImplementedError("only needed where there is no dir_fd (Windows)")


# --- from a path: check it, then walk down from its root --------------------------------------


def _root(scope: PathScope, root: Path) -> Directory:
    if not _AT:
        return Directory(scope, root, None)
    return Directory(scope, root, os.open(root, _DIR_FLAGS & ~_NOFOLLOW))


def _walk(
    scope: PathScope, path: str, field: str, parts: int, *, create: bool = False
) -> tuple[Directory, tuple[str, ...]]:
    """The directory reached through all but the last ``parts`` components of ``path``'s
    resolved form (made when ``create``), and those remaining components."""
    root, below = scope.locate(path, field=field)
    if len(below) < parts:
        raise PermanentError(
            f"{field} {path!r} is an allowed root itself, not a file inside one", kind="forbidden"
        )
    d = _root(scope, root)
    try:
        for name in below[: len(below) - parts]:
            nd = d.open_dir(name, create=create)
            d.close()
            d = nd
    except Refused as exc:
        d.close()
        raise _forbidden(field, path, exc) from None
    except BaseException:
        d.close()
        raise
    return d, below[len(below) - parts :]


def _forbidden(field: str, path: str, exc: Refused) -> PermanentError:
    return PermanentError(
        f"{field} {path!r} is outside the allowed paths: {exc.filename!r} {exc.strerror}",
        kind="forbidden",
    )


def open_dir(scope: PathScope, path: str, *, field: str = "path") -> Directory:
    """The directory ``path``, confined. Raises :class:`PermanentError` (``forbidden``,
    ``notADirectory``) or the :class:`OSError` of a failed open (missing, no permission)."""
    d, _ = _walk(scope, path, field, 0)
    return d


def open_parent(
    scope: PathScope, path: str, *, field: str = "path", create: bool = False
) -> tuple[Directory, str]:
    """The directory that holds ``path`` (its missing ancestors made when ``create``) and the
    name of ``path`` in it: where a file is about to be written."""
    d, (name,) = _walk(scope, path, field, 1, create=create)
    return d, name


def open_file(scope: PathScope, path: str, *, field: str = "path") -> io.FileIO:
    """The regular file ``path``, confined, open for reading (unbuffered). Raises
    :class:`PermanentError` (``forbidden``, ``notAFile``) or the :class:`OSError` of a failed
    open."""
    d, name = open_parent(scope, path, field=field)
    with d:
        try:
            return d.open_file(name)
        except Refused as exc:
            raise _forbidden(field, path, exc) from None
        except (IsADirectoryError, OSError) as exc:
            if isinstance(exc, IsADirectoryError) or exc.errno == errno.EINVAL:
                raise PermanentError(
                    f"{field} {path!r} is not a regular file", kind="notAFile"
                ) from None
            raise


def stat_path(scope: PathScope, path: str, *, field: str = "path") -> os.stat_result:
    """What ``path`` resolves to, confined (its last component is not followed either)."""
    d, name = open_parent(scope, path, field=field)
    with d:
        st = d.lstat(name)
    if st is None:
        raise FileNotFoundError(errno.ENOENT, "no such file", path)
    if stat.S_ISLNK(st.st_mode):
        raise _forbidden(field, path, Refused(path))
    return st
