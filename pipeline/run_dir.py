"""The run directory as a whole: which one a command uses, whether it may (configuration, layout version, lock),
and `config.json`, the record of the configuration it belongs to.

A run directory belongs to exactly one configuration; a later command pointed at it must resolve to the same
settings, or it is refused before anything in it is touched. One process at a time works in it: an OS file lock
on `.lock`, held for the run's life, released by the OS on any exit (so a killed run leaves no stale lock).
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable

from export import layout
from export.files import write_json_atomic
from pipeline.config import NON_REPRODUCIBILITY_FIELDS, ConfigError, RunConfig

DEFAULT_ROOT = Path("runs")


def default_output_dir(model: str, root: Path = DEFAULT_ROOT, now: datetime.datetime | None = None) -> Path:
    """`runs/<model>-<timestamp>/`, a new directory per run."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return root / f"{model}-{stamp}"


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The configuration recorded in `run_dir/config.json`, or None where the directory has none."""
    path = Path(run_dir) / layout.CONFIG
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"{path} is unreadable ({error}); this run directory is damaged: choose another --output_dir."
        ) from error


def write_config(run_dir: Path, config: RunConfig) -> None:
    """Record the configuration, its fingerprint and the layout version in `run_dir/config.json`, atomically."""
    payload = {"fingerprint": config.fingerprint(), "layout_version": layout.VERSION, "config": config.to_dict()}
    write_json_atomic(Path(run_dir) / layout.CONFIG, payload)


def check_writable(run_dir: Path) -> None:
    """Refuse, before any work, a run directory that cannot be written (read-only or not ours)."""
    existing = Path(run_dir).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--output_dir={run_dir} cannot be written ({existing} is not a writable directory); "
                          f"choose a directory you can write to.")


def check_run_dir(run_dir: Path, config: RunConfig) -> bool:
    """Refuse a run directory that holds another configuration's run; True where it holds this one's.

    Reads only: a refused directory is left exactly as it was.
    """
    run_dir = Path(run_dir)
    recorded = read_config(run_dir)
    if recorded is None:
        # A worker may create workers/ (and a lock) before the chief writes config.json: still an empty run.
        if run_dir.is_dir() and any(path.name not in (layout.WORKERS, layout.LOCK) for path in run_dir.iterdir()):
            raise ConfigError(
                f"--output_dir={run_dir} is not empty and holds no {layout.CONFIG}, so it is not a run directory; "
                f"choose a new or empty directory."
            )
        return False
    if recorded.get("layout_version") != layout.VERSION:
        raise ConfigError(
            f"--output_dir={run_dir} was written by an older version of the pipeline (run directory layout "
            f"{recorded.get('layout_version', 1)}, this version writes {layout.VERSION}) and cannot be resumed; "
            f"choose a new --output_dir."
        )
    mine = config.reproducibility_dict()
    # A setting added after that run was recorded has its default there: a new field's default keeps the old behaviour.
    added = {field.name: field.default for field in dataclasses.fields(RunConfig)
             if field.default is not dataclasses.MISSING and field.name not in recorded.get("config", {})}
    theirs = {key: value for key, value in {**added, **recorded.get("config", {})}.items()
              if key not in NON_REPRODUCIBILITY_FIELDS}
    differences = sorted(key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key))
    if differences:
        shown = ", ".join(f"{key}: {theirs.get(key)!r} there vs {mine.get(key)!r} now" for key in differences[:3])
        more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
        raise ConfigError(
            f"--output_dir={run_dir} belongs to a run with a different configuration ({shown}{more}); "
            f"rerun with the same flags to resume it, or choose a new --output_dir."
        )
    return True


class RunLock:
    """An exclusive OS lock on `run_dir/.lock`; `acquire()` refuses a directory another process is running in."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.handle: int | None = None

    def acquire(self) -> "RunLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.run_dir / layout.LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise ConfigError(f"--output_dir={self.run_dir} cannot be written ({error.strerror}); choose a directory "
                              f"you can write to.") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ConfigError(f"--output_dir={self.run_dir} is in use by another pipeline.run that is still running; "
                              f"wait for it to finish, or choose another --output_dir.") from None
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            os.close(self.handle)  # closing the descriptor releases the lock
            self.handle = None


def is_locked(run_dir: Path) -> bool:
    """True while another process holds `run_dir`'s lock."""
    try:
        RunLock(run_dir).acquire().release()
    except (ConfigError, OSError):
        return True
    return False


def find_unfinished_run(root: Path, config: RunConfig, is_finished: Callable[[Path], bool]) -> Path | None:
    """The newest run directory under `root` with this configuration whose run did not finish and that no other
    process is running in, if any."""
    if not root.is_dir():
        return None
    candidates = sorted(
        (path for path in root.iterdir() if path.is_dir() and path.name.startswith(f"{config.model}-")),
        reverse=True,
    )
    for path in candidates:
        recorded = read_config_quietly(path)
        if (recorded and recorded.get("fingerprint") == config.fingerprint()
                and recorded.get("layout_version") == layout.VERSION and not is_finished(path)
                and not is_locked(path)):
            return path
    return None


def read_config_quietly(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_config(run_dir)
    except ConfigError:
        return None
