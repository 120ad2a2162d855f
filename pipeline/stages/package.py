"""The package_app stage (--package_app): copy the run's app model and its labels into the Android app."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from export import layout
from pipeline.stage import RunContext, Stage, Summary
from pipeline.stages.convert import model_files

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PackageSummary(Summary):
    packaged: dict[str, Any]


class PackageStage(Stage):
    name = "package_app"
    sections = ()
    Result = PackageSummary
    when = "package_app"
    uses_data = False

    def reads(self, context: RunContext) -> list[str]:
        return [layout.META, *model_files(context.config).values()]

    def fingerprint_inputs(self, context: RunContext) -> dict[str, Any]:
        return {**super().fingerprint_inputs(context), "app_dir": str(Path(context.config.package_app).resolve())}

    def run(self, context: RunContext) -> PackageSummary:
        from export.android import package

        packaged = package(context.run_dir, Path(context.config.package_app))
        log.info("%s", packaged)
        return PackageSummary(packaged=packaged.to_dict())
