"""Atomic file writes: a reader (or a resumed run) sees the old file or the whole new one, never half of one.

The data goes to a temporary file in the destination's own directory (so the final `os.replace` is a rename
on one file system, which POSIX makes atomic), is flushed and fsync'ed, and only then replaces the target.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

PathLike = str | os.PathLike


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically, creating the parent directory if needed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Write `obj` as JSON (sorted keys are not forced: callers choose their key order) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def new_file_mode() -> int:
    """The mode `open()` gives a new file under the process's umask (mkstemp's own 0600 ignores the umask)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports the umask in /proc; elsewhere it can only be read by setting it, which is racy across threads.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_directory(directory: str) -> None:
    # The rename itself lives in the directory entry; without this a power cut can lose it on some file systems.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
