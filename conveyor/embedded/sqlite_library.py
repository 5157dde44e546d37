"""The one SQLite library every module of conveyor uses: pysqlite3's bundled SQLite.

Python's own `sqlite3` links whatever the system ships (Debian 12: 3.40.1), and SQLite
3.7.0 through 3.51.2 has the WAL-reset race: two connections writing or checkpointing one
WAL file at once can corrupt the database or lose committed writes (fixed in 3.51.3 and
3.53.0, backported to 3.44.6 and 3.50.7). Several processes sharing one file is exactly
the set-up the embedded default recommends, so conveyor links pysqlite3, the standard
library's module packaged with its own, fixed SQLite (a drop-in: same API, same errors).

Import `sqlite3` from here, never the standard library's: two SQLite libraries in one
process on one file break each other's POSIX locks (closing a descriptor in one drops the
locks the other holds), and their exception classes differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3  # the same API: pysqlite3 is the standard module, repackaged
else:
    import pysqlite3 as sqlite3

__all__ = ["AFFECTED_VERSIONS", "has_wal_reset_bug", "linked_version", "sqlite3"]

AFFECTED_VERSIONS = "3.7.0 to 3.51.2 (fixed in 3.44.6+ of 3.44, 3.50.7+ of 3.50, and 3.51.3+)"


def linked_version() -> str:
    """The version of the SQLite library actually linked (not the module's own)."""
    return sqlite3.sqlite_version


def has_wal_reset_bug(version: str) -> bool:
    """True for a SQLite release with the WAL-reset race."""
    parts = tuple(int(part) for part in version.split(".")[:3])
    release = parts + (0,) * (3 - len(parts))
    if release < (3, 7, 0) or release >= (3, 51, 3):
        return False
    return not ((3, 44, 6) <= release < (3, 45, 0) or (3, 50, 7) <= release < (3, 51, 0))
