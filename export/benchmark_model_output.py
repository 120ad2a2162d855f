"""Parse what TFLite's / LiteRT's `benchmark_model` prints into typed numbers, and fail loudly when it failed.

Every pattern below follows a format string in the tools' sources (read there, not remembered):
- `tensorflow/lite/tools/benchmark/benchmark_model.cc` (`BenchmarkLoggingListener::OnBenchmarkEnd`, `Run`):
  `Inference timings in us: Init: X, First inference: X, Warmup (avg): X, Inference (avg): X`, one statistics
  line per phase from `Stat::OutputToStream` (`count=N first=X curr=X min=X max=X avg=X std=X`, or
  `count=N curr=X(all same)`; builds whose `Run` keeps a `StatWithPercentiles` append ` p5=X median=X p95=X`),
  `Memory footprint delta from the start of the tool (MB): init=X overall=X`,
  `Overall peak memory footprint (MB) via periodic monitoring: X` (only with `--report_peak_memory_footprint`),
  `The input model file size (MB): X`; builds before TF 2.4 print `Peak memory footprint (MB): init=X overall=X`
  (max-RSS growth) instead of the footprint delta.
- `benchmark_tflite_model.cc`: `Failed to apply <name> delegate.`, `Disallowed CPU fallback detected.`,
  `Failed to mmap model <path>` (older) / `Failed to load model <path>` (newer); `benchmark_main.cc`:
  `Benchmarking failed.`; the model loader: `Could not open '<path>'.`
- `tensorflow/lite/core/subgraph.cc`, delegate coverage, in four generations:
  `Replacing %d node(s) with delegate (%s) node, yielding %zu partitions.`,
  `Replacing %d out of %d node(s) with delegate (%s) node, yielding %zu partitions for the whole graph.`,
  `... yielding %zu partitions for subgraph %d.` (TF 2.21) and `... for subgraph %d (%s).` (LiteRT 2.3).
- `tensorflow/core/util/stats_calculator.cc` + `lite/profiling/profile_summary_formatter.cc` (op profiling):
  `Operator-wise Profiling Info for Regular Benchmark Runs:`, tables titled `Run Order`, `Top by Computation
  Time` and `Summary by node type` between `==============================` rulers, tab-separated columns whose
  header names the column (`[node type]`, older builds also `[start]`, `[first]`, `[avg ms]`, `[%]`, ...), an
  optional `Delegate internal:` section. With per-operator profiling in XNNPACK (`xnnpack_delegate.cc`,
  `AddEventsToProfiler`) delegated ops appear under XNNPACK's own operator names, e.g.
  `Convolution (NHWC, F32) IGEMM`, `Convolution (NHWC, QS8) DWConv`, `Transpose (ND, X32)`.
- LiteRT's `litert/tools/benchmark_litert_model.h` (`BenchmarkLoggingListener`): a `========== BENCHMARK RESULTS
  ==========` block of `Model initialization: X ms`, `Warmup (first): X ms`, `Inference (avg): X ms (N runs)`,
  `Inference (min|max): X ms`, `Inference (std): X`, `Init footprint: X MB`, `Peak memory: X MB`, ...

Lines may carry the tools' severity prefix (`INFO: `, `WARN: `, `ERROR: `; LiteRT adds `[file.cc:123] `) and, in
the benchmark APK, a logcat prefix (`11-23 10:15:42.123  4321  4350 I tflite  : ...`); both are stripped first.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from export.device_errors import AdbError

# ------------------------------------------------------------------------------------------------ errors


class BenchmarkOutputError(AdbError):
    """benchmark_model did not produce a result; `excerpt` holds the lines that say why (after the first line)."""

    def __init__(self, message: str, excerpt: str = ""):
        super().__init__(message + (f"\n--- benchmark_model said ---\n{excerpt}" if excerpt else ""))
        self.excerpt = excerpt


class ModelFileNotFoundError(BenchmarkOutputError):
    """benchmark_model could not open the model file it was given."""


class DelegateFailedError(BenchmarkOutputError):
    """A delegate the run asked for could not be applied (or CPU fallback was disallowed)."""


class BinaryCrashedError(BenchmarkOutputError):
    """benchmark_model died from a signal (segmentation fault, abort) or a FATAL check."""


class TruncatedOutputError(BenchmarkOutputError):
    """The output ends before the timing results: the run was cut off (timeout, killed, lost connection)."""


class EmptyOutputError(TruncatedOutputError):
    """benchmark_model printed nothing at all."""


class DelegateCoverageError(BenchmarkOutputError):
    """A delegate the user asked for took fewer nodes, or split the graph into more partitions, than required."""


# ------------------------------------------------------------------------------------------------ results


@dataclasses.dataclass(frozen=True)
class RunStatistics:
    """One `count=... first=... min=...` line: the per-run times of one phase (warm-up or regular runs), in us."""

    count: int
    first_us: float | None = None
    newest_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None


@dataclasses.dataclass(frozen=True)
class DelegateCoverage:
    """One `Replacing X out of Y node(s) with delegate (NAME) node, yielding N partitions` line."""

    delegate: str
    replaced_nodes: int
    total_nodes: int | None  # builds before the "out of" wording do not print it
    partitions: int
    subgraph: int | None = None

    @property
    def complete(self) -> bool | None:
        """True when the delegate took every node in one partition; None when the build did not print the total."""
        if self.total_nodes is None:
            return None
        return self.replaced_nodes == self.total_nodes and self.partitions == 1


@dataclasses.dataclass(frozen=True)
class DelegateApplication:
    """`Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 5
    delegate kernels.` (and its older/negative wordings): what the tool says of a delegate it was asked to apply."""

    provider: str  # the tool's provider name: XNNPACK, GPU, NNAPI, ...
    extent: str  # "complete", "partial" or "none"
    delegate_kernels: int | None = None


@dataclasses.dataclass(frozen=True)
class ProfiledNode:
    """One row of the `Run Order` table: a node (or an XNNPACK-internal operator) and its average time."""

    node_type: str
    name: str
    avg_ms: float
    percent: float
    first_ms: float | None = None
    times_called: int | None = None


@dataclasses.dataclass(frozen=True)
class NodeTypeSummary:
    """One row of the `Summary by node type` table."""

    node_type: str
    count: int
    avg_ms: float
    percent: float
    times_called: int | None = None


@dataclasses.dataclass(frozen=True)
class OpProfile:
    """The regular-run op profile of the primary graph (and the `Delegate internal:` part where printed)."""

    run_order: tuple[ProfiledNode, ...]
    by_node_type: tuple[NodeTypeSummary, ...]
    delegate_internal_by_node_type: tuple[NodeTypeSummary, ...] = ()
    total_avg_us: float | None = None  # the profile's own `Timings (microseconds): ... avg=` for the graph


@dataclasses.dataclass(frozen=True)
class BenchmarkModelOutput:
    """Everything one benchmark_model run printed that the pipeline uses. Times in microseconds, sizes in MB."""

    tool: str  # "tflite" (classic benchmark_model) or "litert" (LiteRT's benchmark_model)
    init_us: float
    first_inference_us: float | None
    warmup_avg_us: float | None
    inference_avg_us: float
    warmup: RunStatistics | None
    inference: RunStatistics | None
    model_size_mb: float | None = None
    init_footprint_mb: float | None = None
    overall_footprint_mb: float | None = None
    peak_memory_mb: float | None = None
    delegations: tuple[DelegateCoverage, ...] = ()
    applications: tuple[DelegateApplication, ...] = ()
    op_profile: OpProfile | None = None
    warnings: tuple[str, ...] = ()

    def application_for(self, delegate: str) -> DelegateApplication | None:
        """The tool's own verdict on a delegate it applied, matched by provider name (any case)."""
        wanted = delegate.lower()
        return next((a for a in self.applications if wanted in a.provider.lower()), None)

    def coverage_for(self, delegate: str) -> DelegateCoverage | None:
        """The primary-graph coverage line of the first delegate whose name contains `delegate` (any case)."""
        wanted = delegate.lower()
        matches = [d for d in self.delegations if wanted in d.delegate.lower()]
        primary = [d for d in matches if d.subgraph in (None, 0)]
        return (primary or matches or [None])[0]


# ------------------------------------------------------------------------------------------------ prefixes

# logcat -v threadtime: "11-23 10:15:42.123  4321  4350 I tflite  : message"
_LOGCAT_THREADTIME = re.compile(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEFS]\s+[^:]*?\s*: ?")
# logcat -v brief / -v time: "I/tflite  ( 4321): message", "11-23 10:15:42.123 I/tflite  ( 4321): message"
_LOGCAT_BRIEF = re.compile(r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+ )?[VDIWEFS]/[^(]*\(\s*\d+\): ?")
_SEVERITY = re.compile(r"^(?:INFO|WARN|WARNING|ERROR|FATAL|VERBOSE|DEBUG): ?")
_LITERT_SOURCE = re.compile(r"^\[[\w.+-]+:\d+\] ?")  # LITERT_LOG's "[file.cc:123] "
_ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.+-]+:\d+\] ")


def strip_prefixes(line: str) -> str:
    """The message part of one output line, without logcat, severity and source-location prefixes."""
    line = line.rstrip("\r\n")
    for pattern in (_LOGCAT_THREADTIME, _LOGCAT_BRIEF, _ABSL_PREFIX):
        line = pattern.sub("", line, count=1)
    line = _SEVERITY.sub("", line, count=1)
    return _LITERT_SOURCE.sub("", line, count=1)


def _severity(raw_line: str) -> str:
    """INFO/WARN/ERROR/FATAL from the tool prefix or the logcat level letter; '' when unmarked."""
    match = re.search(r"(?:^|\s|: )(INFO|WARN|WARNING|ERROR|FATAL):", raw_line)
    if match:
        return match.group(1)
    match = re.match(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+([VDIWEFS])\s", raw_line) or re.match(
        r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+ )?([VDIWEFS])/", raw_line
    )
    if match:
        return {"E": "ERROR", "F": "FATAL", "W": "WARN"}.get(match.group(1), "INFO")
    return ""


# ------------------------------------------------------------------------------------------------ patterns

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-nan|inf"
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER}), Inference \(avg\): (?P<inference>{_NUMBER})"
)
# The benchmark APK's own listener (android/jni/benchmark_model_jni.cc), printed at ERROR level.
_APK_TIMINGS = re.compile(
    rf"Average inference timings in us: Warmup: (?P<warmup>{_NUMBER}), Init: (?P<init>{_NUMBER}), "
    rf"Inference: (?P<inference>{_NUMBER})"
)
_STATS = re.compile(r"^count=(?P<count>\d+)(?P<rest>.*)$")
_STAT_FIELD = re.compile(rf"(first|curr|min|max|avg|std|p5|median|p95)=({_NUMBER})")
_FOOTPRINT = re.compile(
    rf"(?P<wording>Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=(?P<init>{_NUMBER}) overall=(?P<overall>{_NUMBER})"
)
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{_NUMBER})")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\): (?P<size>{_NUMBER})")
_REPLACING = re.compile(
    r"Replacing (?P<replaced>\d+)(?: out of (?P<total>\d+))? node\(s\) with delegate \((?P<delegate>[^)]*)\) node, "
    r"yielding (?P<partitions>\d+) partitions(?: for (?:the whole graph|subgraph (?P<subgraph>\d+)(?: \([^)]*\))?))?"
)
_APPLIED = re.compile(
    r"(?:Explicitly applied|Applied) (?P<provider>\S+) delegate, and the model graph will be (?P<extent>completely|"
    r"partially) executed (?:by|w/) the delegate(?: w/ (?P<kernels>\d+) delegate kernels)?"
)
_NOT_APPLIED = re.compile(r"Though (?P<provider>\S+) delegate is explicitly applied, the model graph will not be")
_LITERT_FIELD = re.compile(rf"^(?P<key>[A-Za-z][A-Za-z ()]*?):\s+(?P<value>{_NUMBER})(?:\s*(?P<unit>ms|MB|MB/s))?")

_MODEL_NOT_FOUND = re.compile(
    r"Could not open '|Failed to mmap model|Failed to load model|Failed to initialize model loader|"
    r"Failed to load model from"
)
_DELEGATE_FAILED = re.compile(r"Failed to apply .*delegate|Disallowed CPU fallback detected|"
                              r"Requesting full delegation and CPU acceleration are incompatible")
_CRASH = re.compile(
    r"Segmentation fault|SIGSEGV|SIGABRT|SIGBUS|SIGILL|Aborted|Fatal signal \d+|Illegal instruction|Bus error|"
    r"CANNOT LINK EXECUTABLE|^Killed$"
)
_CRASH_EXIT_CODES = {132: "SIGILL", 134: "SIGABRT", 135: "SIGBUS", 136: "SIGFPE", 137: "SIGKILL", 139: "SIGSEGV"}

_PROFILE_START = "Operator-wise Profiling Info for Regular Benchmark Runs:"
_PROFILE_INIT = "Profiling Info for Benchmark Initialization:"
_TABLE_TITLE = re.compile(r"^=+ (?P<title>.+?) =+$")


# ------------------------------------------------------------------------------------------------ parsing


def parse_benchmark_model_output(text: str, exit_code: int | None = None) -> BenchmarkModelOutput:
    """Parse one run's combined stdout+stderr (or logcat); raise a `BenchmarkOutputError` subclass on failure."""
    raw_lines = text.splitlines()
    lines = [strip_prefixes(line) for line in raw_lines]
    _raise_for_failure(raw_lines, lines, exit_code)
    if not text.strip():
        status = f" (exit status {exit_code})" if exit_code is not None else ""
        raise EmptyOutputError(
            f"benchmark_model printed nothing{status}: the binary did not run, or is not benchmark_model. Run it "
            "by hand on the device with the same arguments to see why."
        )

    values: dict[str, float] = {}
    statistics: list[RunStatistics] = []
    delegations: list[DelegateCoverage] = []
    applications: list[DelegateApplication] = []
    warnings: list[str] = []
    litert: dict[str, float] = {}
    in_litert_block = False
    profile_index: int | None = None
    for index, (raw, line) in enumerate(zip(raw_lines, lines)):
        stripped = line.strip()
        if _severity(raw) in ("WARN", "WARNING"):
            warnings.append(stripped)
        if match := _TIMINGS.search(line) or _APK_TIMINGS.search(line):
            for key, value in match.groupdict().items():
                values.setdefault(key, float(value))
        elif match := _STATS.match(stripped):
            statistics.append(_run_statistics(match))
        elif match := _FOOTPRINT.search(line):
            values["init_footprint"] = float(match["init"])
            values["overall_footprint"] = float(match["overall"])
            if match["wording"] == "Peak memory footprint":  # builds before 2.4 printed max-RSS growth: a peak
                values.setdefault("peak", float(match["overall"]))
        elif match := _PEAK.search(line):
            values["peak"] = float(match["peak"])
        elif match := _MODEL_SIZE.search(line):
            values["model_size"] = float(match["size"])
        elif match := _REPLACING.search(line):
            delegations.append(_coverage(match))
        elif match := _APPLIED.search(line):
            extent = "complete" if match["extent"] == "completely" else "partial"
            kernels = int(match["kernels"]) if match["kernels"] else None
            applications.append(DelegateApplication(match["provider"], extent, kernels))
        elif match := _NOT_APPLIED.search(line):
            applications.append(DelegateApplication(match["provider"], "none", 0))
        elif "BENCHMARK RESULTS" in stripped:
            in_litert_block = True
        elif in_litert_block and (match := _LITERT_FIELD.match(stripped)):
            litert[match["key"].strip()] = float(match["value"])
        elif stripped.startswith("=====") and in_litert_block and litert:
            in_litert_block = False
        elif stripped == _PROFILE_START and profile_index is None:
            profile_index = index + 1

    tool = "tflite" if "inference" in values else "litert" if "Inference (avg)" in litert else ""
    if not tool:
        status = f" (exit status {exit_code})" if exit_code is not None else ""
        raise TruncatedOutputError(
            f"benchmark_model's output ends before its timing results{status}: no 'Inference timings in us' "
            "line, no 'BENCHMARK RESULTS' block. The run was cut off (timeout, lost connection, killed) or did "
            "not start. Check the device connection; run the binary by hand with the same arguments to see the "
            "whole log.",
            _tail(raw_lines),
        )
    warmup, inference = _phase_statistics(statistics)
    op_profile = _parse_op_profile(lines[profile_index:]) if profile_index is not None else None
    if tool == "litert":
        return BenchmarkModelOutput(
            tool=tool,
            init_us=litert["Model initialization"] * 1000.0,
            first_inference_us=_ms_to_us(litert.get("Warmup (first)")),
            warmup_avg_us=_ms_to_us(litert.get("Warmup (avg)")),
            inference_avg_us=litert["Inference (avg)"] * 1000.0,
            warmup=warmup,
            inference=inference or _litert_inference_statistics(litert, lines),
            model_size_mb=values.get("model_size"),
            init_footprint_mb=litert.get("Init footprint"),
            overall_footprint_mb=litert.get("Overall footprint"),
            peak_memory_mb=litert.get("Peak memory", values.get("peak")),
            delegations=tuple(delegations),
            applications=tuple(applications),
            op_profile=op_profile,
            warnings=tuple(warnings),
        )
    return BenchmarkModelOutput(
        tool=tool,
        init_us=values["init"],
        first_inference_us=values.get("first"),
        warmup_avg_us=values.get("warmup"),
        inference_avg_us=values["inference"],
        warmup=warmup,
        inference=inference,
        model_size_mb=values.get("model_size"),
        init_footprint_mb=values.get("init_footprint"),
        overall_footprint_mb=values.get("overall_footprint"),
        peak_memory_mb=values.get("peak"),
        delegations=tuple(delegations),
        applications=tuple(applications),
        op_profile=op_profile,
        warnings=tuple(warnings),
    )


def check_delegate_coverage(
    output: BenchmarkModelOutput, delegate: str, require_full_delegation: bool = False
) -> DelegateCoverage | DelegateApplication:
    """The coverage of a delegate the user asked for; raise `DelegateCoverageError` when it is less than required.

    Always required: the delegate took at least one node. With `require_full_delegation`: every node, in one
    partition (the numbers are in the message, e.g. "took 41 of 66 nodes in 5 partitions"). Builds that print no
    `Replacing ...` line are judged by their `... applied X delegate, and the model graph will be ...` line.
    """
    coverage = output.coverage_for(delegate)
    application = output.application_for(delegate)
    if coverage is None and application is None:
        raise DelegateCoverageError(
            f"The {delegate} delegate was requested but benchmark_model printed no 'Replacing ... node(s) with "
            f"delegate' line for it: it took no node (ops it does not support, or a build without it). "
            f"Delegations seen: {_describe(output.delegations) or 'none'}."
        )
    if coverage is None:
        if application.extent == "none":
            raise DelegateCoverageError(f"benchmark_model says the {delegate} delegate took no node of the graph.")
        if require_full_delegation and application.extent != "complete":
            raise DelegateCoverageError(
                f"--require_full_delegation: the {delegate} delegate runs the graph only partially, in "
                f"{application.delegate_kernels} delegate kernels (partitions); the rest runs on the CPU."
            )
        return application
    if coverage.replaced_nodes == 0:
        raise DelegateCoverageError(f"The {delegate} delegate took no node: {_describe([coverage])}.")
    if require_full_delegation and not coverage.complete:
        total = "an unknown number of" if coverage.total_nodes is None else str(coverage.total_nodes)
        raise DelegateCoverageError(
            f"--require_full_delegation: the {delegate} delegate ({coverage.delegate}) took "
            f"{coverage.replaced_nodes} of {total} nodes in {coverage.partitions} partition(s); full delegation "
            f"means all nodes in 1 partition. The rest run on the CPU's built-in kernels. Run with "
            f"--enable_op_profiling to see which ops stayed out, or drop --require_full_delegation."
        )
    return coverage


def _raise_for_failure(raw_lines: list[str], lines: list[str], exit_code: int | None) -> None:
    """Raise the most specific error the output shows, before looking for numbers."""
    errors = [line.strip() for raw, line in zip(raw_lines, lines) if _severity(raw) in ("ERROR", "FATAL")]
    error_text = "\n".join(errors)
    has_result = any(_TIMINGS.search(line) or _APK_TIMINGS.search(line) for line in lines) or any(
        "BENCHMARK RESULTS" in line for line in lines
    )
    crash_lines = [line.strip() for line in lines if _CRASH.search(line.strip())]
    crash_lines += [line.strip() for raw, line in zip(raw_lines, lines) if _severity(raw) == "FATAL"]
    if crash_lines or (exit_code in _CRASH_EXIT_CODES and not has_result):
        signal = _CRASH_EXIT_CODES.get(exit_code or 0, "")
        cause = f"exit status {exit_code} ({signal})" if signal else f"'{crash_lines[0]}'"
        raise BinaryCrashedError(
            f"benchmark_model crashed: {cause}. Check the binary matches the device ABI (arm64-v8a vs "
            "armeabi-v7a) and the model's ops are in the build; a crash right after 'Loaded model' often means "
            "an op or delegate the binary lacks.",
            _tail(raw_lines),
        )
    if _MODEL_NOT_FOUND.search(error_text) and not has_result:
        raise ModelFileNotFoundError(
            "benchmark_model could not open the model file: check the --graph path exists on the device "
            "and is readable (the push may have failed).",
            error_text,
        )
    if _DELEGATE_FAILED.search(error_text):
        raise DelegateFailedError(
            "A delegate could not be applied: the model has ops the delegate rejects, or the device lacks the "
            "delegate's driver (GPU/NNAPI). The lines below name the delegate and, where printed, the ops.",
            error_text,
        )
    if not has_result and errors:
        raise BenchmarkOutputError(
            f"benchmark_model failed (exit status {exit_code}) before printing timings.", error_text
        )


def _run_statistics(match: re.Match) -> RunStatistics:
    fields = {key: float(value) for key, value in _STAT_FIELD.findall(match["rest"])}
    if "curr" in fields and "avg" not in fields:  # "count=N curr=X(all same)": every run took X
        value = fields["curr"]
        fields.update(first=value, min=value, max=value, avg=value, std=0.0)
    return RunStatistics(
        count=int(match["count"]),
        first_us=fields.get("first"),
        newest_us=fields.get("curr"),
        min_us=fields.get("min"),
        max_us=fields.get("max"),
        avg_us=fields.get("avg"),
        std_us=fields.get("std"),
        p5_us=fields.get("p5"),
        median_us=fields.get("median"),
        p95_us=fields.get("p95"),
    )


def _phase_statistics(statistics: list[RunStatistics]) -> tuple[RunStatistics | None, RunStatistics | None]:
    """Warm-up and regular-run statistics: one line per `Running benchmark for ...` phase, warm-up first."""
    if len(statistics) >= 2:
        return statistics[0], statistics[1]
    return None, (statistics[0] if statistics else None)


def _litert_inference_statistics(litert: dict[str, float], lines: list[str]) -> RunStatistics | None:
    runs = next((re.search(r"Inference \(avg\):.*\((\d+) runs\)", line) for line in lines if "Inference (avg):" in line), None)
    if runs is None:
        return None
    return RunStatistics(
        count=int(runs.group(1)),
        min_us=_ms_to_us(litert.get("Inference (min)")),
        max_us=_ms_to_us(litert.get("Inference (max)")),
        avg_us=_ms_to_us(litert.get("Inference (avg)")),
        std_us=_ms_to_us(litert.get("Inference (std)")),
    )


def _coverage(match: re.Match) -> DelegateCoverage:
    return DelegateCoverage(
        delegate=match["delegate"],
        replaced_nodes=int(match["replaced"]),
        total_nodes=int(match["total"]) if match["total"] else None,
        partitions=int(match["partitions"]),
        subgraph=int(match["subgraph"]) if match["subgraph"] else None,
    )


def _parse_op_profile(lines: list[str]) -> OpProfile | None:
    """The tables after `Operator-wise Profiling Info for Regular Benchmark Runs:` (primary graph first)."""
    run_order: list[ProfiledNode] = []
    by_type: list[NodeTypeSummary] = []
    delegate_by_type: list[NodeTypeSummary] = []
    total_avg_us = None
    section = "primary"
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if stripped.startswith("Subgraph (index:") and stripped.endswith(":") and section == "primary" and by_type:
            section = "other subgraph"
        elif stripped.startswith("Delegate internal:"):
            section = "delegate"
        elif stripped == _PROFILE_INIT or stripped.startswith("Inference timings in us"):
            break
        elif (match := re.match(rf"Timings \(microseconds\): count=\d+.*?avg=({_NUMBER})", stripped)) and (
            section == "primary" and total_avg_us is None
        ):
            total_avg_us = float(match.group(1))
        elif (title := _TABLE_TITLE.match(stripped)) and index + 1 < len(lines):
            rows, index = _table(lines, index + 1)
            if section == "primary" and title["title"] == "Run Order":
                run_order = [_profiled_node(row) for row in rows]
            elif title["title"] == "Summary by node type" and section in ("primary", "delegate"):
                summaries = [_node_type_summary(row) for row in rows]
                (by_type if section == "primary" else delegate_by_type).extend(summaries)
            continue
        index += 1
    if not run_order and not by_type:
        return None
    return OpProfile(tuple(run_order), tuple(by_type), tuple(delegate_by_type), total_avg_us)


def _table(lines: list[str], start: int) -> tuple[list[dict[str, str]], int]:
    """Rows of one tab-separated table (header line first), keyed by the header's `[column]` names."""
    header = [cell.strip().strip("[]").lower() for cell in lines[start].split("\t") if cell.strip()]
    rows = []
    index = start + 1
    while index < len(lines):
        line = lines[index]
        if not line.strip() or _TABLE_TITLE.match(line.strip()):
            break
        cells = [cell.strip() for cell in line.split("\t")]
        cells = cells[1:] if cells and cells[0] == "" else cells  # each field starts with its own tab
        if len(cells) >= len(header) - 1:  # the name column may be empty
            rows.append(dict(zip(header, cells + [""] * (len(header) - len(cells)))))
        index += 1
    return rows, index


def _profiled_node(row: dict[str, str]) -> ProfiledNode:
    return ProfiledNode(
        node_type=row["node type"],
        name=row.get("name", ""),
        avg_ms=float(row["avg ms"]),
        percent=_percent(row.get("%", "0")),
        first_ms=float(row["first"]) if row.get("first") else None,
        times_called=int(row["times called"]) if row.get("times called") else None,
    )


def _node_type_summary(row: dict[str, str]) -> NodeTypeSummary:
    return NodeTypeSummary(
        node_type=row["node type"],
        count=int(row["count"]),
        avg_ms=float(row["avg ms"]),
        percent=_percent(row.get("avg %", "0")),
        times_called=int(row["times called"]) if row.get("times called") else None,
    )


def _percent(cell: str) -> float:
    return float(cell.rstrip("%") or 0.0)


def _ms_to_us(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def _describe(delegations: Iterable[DelegateCoverage]) -> str:
    return "; ".join(
        f"{d.delegate} took {d.replaced_nodes}"
        + (f" of {d.total_nodes}" if d.total_nodes is not None else "")
        + f" nodes in {d.partitions} partition(s)"
        for d in delegations
    )


def _tail(lines: list[str], count: int = 15) -> str:
    return "\n".join(line.rstrip() for line in lines[-count:])


# ------------------------------------------------------------------------------------------------ decomposition

RUNTIME_CATEGORIES = ("convolution", "depthwise_convolution", "data_movement", "elementwise", "other")

# TFLite builtin op names (the profile's node type is "OP_NAME" or "OP_NAME/<description>").
_BUILTIN_CATEGORY = {
    "CONV_2D": "convolution",
    "FULLY_CONNECTED": "convolution",  # a 1x1 convolution on a 1x1 map: the same GEMM
    "TRANSPOSE_CONV": "convolution",
    "DEPTHWISE_CONV_2D": "depthwise_convolution",
    **dict.fromkeys(
        ("TRANSPOSE", "CONCATENATION", "SPLIT", "SPLIT_V", "RESHAPE", "SLICE", "STRIDED_SLICE", "PAD", "PADV2",
         "MIRROR_PAD", "GATHER", "PACK", "UNPACK", "SHAPE", "SQUEEZE", "EXPAND_DIMS", "DEPTH_TO_SPACE",
         "SPACE_TO_DEPTH", "TILE", "BROADCAST_TO"),
        "data_movement",
    ),
    **dict.fromkeys(
        ("ADD", "SUB", "MUL", "DIV", "HARD_SWISH", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU",
         "PRELU", "LOGISTIC", "TANH", "ELU", "GELU", "MAXIMUM", "MINIMUM", "QUANTIZE", "DEQUANTIZE", "CAST",
         "SQUARED_DIFFERENCE", "RSQRT", "SQRT", "ABS", "NEG", "EXP", "POW"),
        "elementwise",
    ),
}
# XNNPACK operator names (`xnn_operator_type_to_string`, optionally followed by the micro-kernel type).
_XNNPACK_CATEGORY = (
    (re.compile(r"\bDWConv\b|^Depthwise"), "depthwise_convolution"),
    (re.compile(r"^(Convolution|Deconvolution|Fully Connected|Dynamic Fully Connected|Batch Matrix Multiply)\b"),
     "convolution"),
    (re.compile(r"^(Transpose|Copy|Constant Pad|Slice|Concatenate|Even Split|Split|Static Reshape|Static Expand|"
                r"Depth To Space|Space To Depth|Fuse Dims|Split Dims)\b"), "data_movement"),
    (re.compile(r"^(Add|Subtract|Multiply|Divide|Maximum|Minimum|Binary Elementwise|Unary Elementwise|Clamp|"
                r"HardSwish|Sigmoid|Tanh|ELU|GELU|ApproxGELU|LeakyReLU|PReLU|Convert|Abs|Negate|Square|"
                r"Square Root|Reciprocal Square Root|Squared Difference|Exp|Log|Copy Sign)\b"), "elementwise"),
)


def op_category(node_type: str) -> str:
    """Which runtime category (ShuffleNetV2 Figure 2) a profiled node type belongs to."""
    builtin = node_type.split("/", 1)[0].strip()
    if builtin in _BUILTIN_CATEGORY:
        return _BUILTIN_CATEGORY[builtin]
    for pattern, category in _XNNPACK_CATEGORY:
        if pattern.search(node_type):
            return category
    return "other"


def runtime_decomposition(profile: OpProfile) -> dict[str, float]:
    """Share of profiled time (percent, summing to 100) per `RUNTIME_CATEGORIES` entry.

    Uses the primary graph's `Summary by node type` (falling back to the `Run Order` rows). A delegate that does
    not profile its own operators shows up as one opaque node type (e.g. `TfLiteXNNPackDelegate` from older
    builds, `TfLiteGpuDelegateV2`); its time is put under "other" and named in the result's `opaque` entry.
    Note: XNNPACK builds that name operators without the micro-kernel suffix report a depthwise convolution as
    plain `Convolution (...)`, so it lands under "convolution".
    """
    rows = [(row.node_type, row.avg_ms) for row in profile.by_node_type] or [
        (row.node_type, row.avg_ms) for row in profile.run_order
    ]
    totals = dict.fromkeys(RUNTIME_CATEGORIES, 0.0)
    for node_type, avg_ms in rows:
        totals[op_category(node_type)] += avg_ms
    grand_total = sum(totals.values())
    if grand_total <= 0:
        return {category: 0.0 for category in RUNTIME_CATEGORIES}
    return {category: 100.0 * value / grand_total for category, value in totals.items()}


def opaque_delegate_nodes(profile: OpProfile) -> list[str]:
    """Node types in the profile that are whole delegate partitions, not broken down into operators."""
    rows = [row.node_type for row in profile.by_node_type] or [row.node_type for row in profile.run_order]
    return sorted({t for t in rows if re.search(r"Delegate|DELEGATE", t) and op_category(t) == "other"})
