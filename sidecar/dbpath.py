"""Which database a sidecar (or the admin command line) works on: ``--db`` or ``--app-id``.

There is no shared default: two apps on one machine must never open the same file (the
second one's sidecar would find it locked and exit 3). A path is either given (``--db``) or
derived from an app id (``--app-id com.example.photos``) in that app's own data directory:
``platformdirs.user_data_dir(app_id, roaming=True)/tasks.db``, the directory Tauri's
``app_data_dir()`` returns for an app with that identifier (``~/.local/share/<id>``,
``~/Library/Application Support/<id>``, ``%APPDATA%\\<id>``), so a Rust side that passes
``--db <app data dir>/tasks.db`` and a person who passes ``--app-id <id>`` reach one file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Final

__all__ = [
    "DB_FILE_NAME",
    "MISSING_SENTENCE",
    "add_db_arguments",
    "app_id",
    "db_for_app",
    "resolve_db",
]

DB_FILE_NAME: Final = "tasks.db"

# Reverse-DNS-like: at least two dot-separated labels of letters, digits, '-' and '_', each
# starting with a letter or digit. No path separator, no '..', nothing a file system reads
# as anything but one directory name.
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)+")
_APP_ID_MAX = 255

MISSING_SENTENCE: Final = (
    "no database given: pass --db PATH, or --app-id ID (your app's identifier, "
    "e.g. --app-id com.example.photos) to use tasks.db in that app's data directory"
)


def app_id(text: str) -> str:
    """``text`` if it is a valid app id (an argparse ``type``), else ArgumentTypeError."""
    if len(text) > _APP_ID_MAX or not _APP_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an app id: use a reverse-DNS name such as com.example.photos "
            "(letters, digits, '-', '_', at least one dot, no path separators)"
        )
    return text


def db_for_app(app: str) -> Path:
    """The database of the app with identifier ``app``, in its own user data directory."""
    import platformdirs  # (only when an app id is given)

    return Path(platformdirs.user_data_dir(app, appauthor=False, roaming=True)) / DB_FILE_NAME


def add_db_arguments(p: argparse.ArgumentParser) -> None:
    """``--db PATH`` or ``--app-id ID`` (one of them is required; :func:`resolve_db`)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--db", type=Path, default=None, metavar="PATH",
                       help="the database file")  # fmt: skip
    group.add_argument("--app-id", type=app_id, default=None, metavar="ID",
                       help="use tasks.db in the data directory of the app with this "
                       "identifier (e.g. com.example.photos)")  # fmt: skip


def resolve_db(args: argparse.Namespace) -> Path | None:
    """The absolute database path the parsed ``--db``/``--app-id`` name, or None if neither."""
    if args.db is not None:
        return Path(args.db).expanduser().absolute()
    if args.app_id is not None:
        return db_for_app(args.app_id).absolute()
    return None
