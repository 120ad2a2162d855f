"""The stage ledger: `stages.json` in the run directory records each finished stage, so a rerun resumes.

A stage is skipped when it finished before with the same fingerprint and every output it wrote is still there with
the same content (its digest is recorded); otherwise it runs again, and says why in one line. Every write of
`stages.json` is atomic (temp file, then rename): a kill leaves the previous record or the new one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from export import layout
from export.files import write_json_atomic

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StageOutcome:
    """What a stage reported (`summary`, JSON-ready), how long it took when it ran, and whether it was skipped."""

    name: str
    summary: dict[str, Any]
    seconds: float
    skipped: bool
    fingerprint: str


def file_digest(path: Path) -> str:
    """Content hash of a file (or of every file under a directory), for fingerprints and output records."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def fingerprint(inputs: dict[str, Any]) -> str:
    """A short hash of a stage's JSON-ready inputs."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageLedger:
    """The run directory's record of finished stages."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / layout.LEDGER
        self.records: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text()).get("stages", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            log.warning("%s is unreadable; every stage will run again", self.path)
            return {}

    def stale_output(self, name: str) -> str | None:
        """Why a recorded stage's outputs cannot be trusted (one missing or changed file), or None."""
        record = self.records.get(name) or {}
        for output, digest in (record.get("outputs") or {}).items():
            path = self.run_dir / output
            if not path.exists():
                return f"{output} is missing"
            if file_digest(path) != digest:
                return f"{output} changed since the stage wrote it"
        return None

    def run(self, name: str, inputs: dict[str, Any], outputs: list[str],
            action: Callable[[], dict[str, Any]]) -> StageOutcome:
        """Run `action` (returning a JSON-ready summary) unless this stage already finished with these inputs."""
        stage_fingerprint = fingerprint(inputs)
        record = self.records.get(name)
        if record is not None and record.get("fingerprint") == stage_fingerprint:
            stale = self.stale_output(name) if isinstance(record.get("outputs"), dict) else "it has no output digests"
            if stale is None:
                log.info("stage %-14s skipped: finished earlier with the same inputs (took %.1f s then)",
                         name, record["seconds"])
                return StageOutcome(name, record["summary"], record["seconds"], True, stage_fingerprint)
            log.warning("stage %-14s runs again: %s", name, stale)
        log.info("stage %-14s started", name)
        start = time.monotonic()
        summary = action()
        seconds = time.monotonic() - start
        missing = [output for output in outputs if not (self.run_dir / output).exists()]
        if missing:
            raise RuntimeError(f"stage {name} finished without writing {', '.join(missing)}")
        self.records[name] = {
            "fingerprint": stage_fingerprint,
            "outputs": {output: file_digest(self.run_dir / output) for output in outputs},
            "seconds": round(seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "summary": summary,
        }
        write_json_atomic(self.path, {"stages": self.records})
        log.info("stage %-14s done in %.1f s", name, seconds)
        return StageOutcome(name, summary, seconds, False, stage_fingerprint)

    def finished(self, name: str) -> bool:
        """True when `name` has a record whose outputs are all still there, unchanged."""
        return name in self.records and self.stale_output(name) is None
