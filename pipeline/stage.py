"""What a stage is: one object that declares its config sections, the run-directory files it reads and writes,
and how it runs, what it adds to `metrics.json` and which section it writes into `report.md`.

The workflow (pipeline.workflow) walks an ordered list of stages. A stage's resume fingerprint is derived here,
from the reproducible settings of the sections it declares, the content hashes of the files it reads, and the
data's fingerprint: nothing is listed by hand, so what a stage reads and what its fingerprint covers cannot drift
(docs/design.md, "Stages").
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar

from export.layout import RunLayout
from pipeline.config import RunConfig, from_known_fields
from pipeline.ledger import StageOutcome, file_digest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Summary:
    """A stage's typed result; stored JSON-ready in the ledger and read back when the stage is skipped."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Summary":
        return from_known_fields(cls, values)


@dataclasses.dataclass
class RunContext:
    """What every stage may use: the configuration, the run directory, the data, the distribution strategy, and
    the summaries of the stages before it. `model_file` is the model the next stage reads (the chain's head)."""

    config: RunConfig
    layout: RunLayout
    data: Any  # pipeline.data.DataSplits
    strategy: Any  # tf.distribute.Strategy
    bn_momentum: float
    verbose: int | None = None
    model_file: str | None = None
    outcomes: dict[str, StageOutcome] = dataclasses.field(default_factory=dict)
    summaries: dict[str, Summary] = dataclasses.field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.layout.path(name)

    @property
    def run_dir(self) -> Path:
        return Path(self.layout.root)

    def scoped(self, action: Callable[[], Any]) -> Callable[[], Any]:
        """`action` run inside the strategy's scope: the models, optimizers and metrics it creates are distributed."""
        def run_in_scope():
            with self.strategy.scope():
                return action()

        return run_in_scope


class Stage:
    """One step of the run. Subclasses set `name`, `sections` and `Result`, and override what they need."""

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]] = ()
    Result: ClassVar[type[Summary]] = Summary
    uses_data: ClassVar[bool] = True
    trains: ClassVar[bool] = False  # runs on every worker of a cluster (the rest run on the chief only)
    distributed: ClassVar[bool] = False  # creates models under the strategy's scope
    extends_chain: ClassVar[bool] = False  # its first output is the model the next stage reads
    when: ClassVar[str | None] = None  # the RunConfig setting or property that turns the stage on (None: always)
    output: ClassVar[str | None] = None  # the one file it writes, where that is all it writes

    def enabled(self, config: RunConfig) -> bool:
        return self.when is None or bool(getattr(config, self.when))

    def reads(self, context: RunContext) -> list[str]:
        """Run-directory files (export.layout names) this stage reads; default: the model chain's head."""
        return [context.model_file] if context.model_file else []

    def writes(self, context: RunContext) -> list[str]:
        """Run-directory files this stage writes (the first is the chain's new head where `extends_chain`)."""
        return [self.output] if self.output else []

    def run(self, context: RunContext) -> Summary:
        raise NotImplementedError

    def log_result(self, result: Summary, context: RunContext) -> None:
        """One log line with what the stage measured (also when it was skipped)."""

    def metrics(self, result: Summary, context: RunContext) -> dict[str, Any]:
        """This stage's part of metrics.json (merged into the report's keys, later stages winning)."""
        return {}

    def report(self, result: Summary, context: RunContext) -> list[str]:
        """This stage's section of report.md (Markdown lines), or [] for none."""
        return []

    def fingerprint_inputs(self, context: RunContext) -> dict[str, Any]:
        """Everything this stage's result depends on: its sections' settings, its input files, the data."""
        inputs: dict[str, Any] = {
            "sections": {section: context.config.section(section) for section in self.sections},
            "files": {name: file_digest(context.path(name)) for name in self.reads(context)},
        }
        if self.uses_data:
            inputs["data"] = context.data.fingerprint()
            inputs["bn_momentum"] = context.bn_momentum  # derived from the data's size and the train section
        return inputs
