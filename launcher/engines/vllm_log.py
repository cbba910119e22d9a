"""What vLLM's start-up log says: how far the engine got, what it measured, and why it died.

The supervisor feeds each line of the engine's output to a `LogParser` as it arrives; the parser
keeps the start-up `Phase` and the memory figures vLLM printed (`LogFigures`). When the engine
dies, `classify_failure` turns its last lines into a `Failure` whose `kind` decides the next step:
a memory failure (`retryable`) moves the plan one rung down, anything else stops with the
engine's own words. Pure text in, data out: no I/O, no torch or vllm import, so recorded logs
replay in tests exactly as a live pipe would.

Phrasings are those of vLLM 0.19 (the H100 logs in calibration/vllm-0.19-h100) and of 0.32 (read from
its source, GPU and CPU workers, and checked on lines 0.2x users posted in vLLM's issues): the
one-line summary "Actual usage is …", the CUDA-graph estimate and its actual-vs-estimated line, the
advice on `--gpu-memory-utilization` that comes with the estimate, a KV size given explicitly
("skipped memory profiling"), the persisted start-up plan, auto-fitted lengths and the KV memory
kept back for multimodal decoding. Lines are searched, never anchored, because a tqdm bar and a
log record often share one physical line, and a pipe may deliver `\\r`-separated progress
updates in one read.

With several ranks (TP/PP/DP) each rank prints its own copy of most lines. Rank 0's value wins
(a process tagged `_TP1`, `_PP1`, `_DP1` … is another rank; untagged ones count as rank 0), else
the first value seen. That is the figure the calibration CSV records, so parsed numbers and
calibrated constants mean the same thing, and one line's numbers (the memory summary) stay
together even when another pipeline stage printed its own first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum


class Phase(StrEnum):
    """Start-up phases in the order vLLM goes through them."""

    STARTING = "starting"
    LOADING = "loading weights"
    PROFILING = "profiling"
    KV_CACHE = "allocating KV cache"
    GRAPHS = "capturing CUDA graphs"
    READY = "ready"


_ORDER = {p: i for i, p in enumerate(Phase)}

# A line containing one of these has reached that phase. Checked from the last phase down, so a
# line that names two phases (0.32 prints KV size and concurrency together) lands in the later.
_PHASE_MARKERS: tuple[tuple[Phase, tuple[str, ...]], ...] = (
    (Phase.READY, ("Application startup complete",)),
    (Phase.GRAPHS, ("Capturing CUDA graphs", "Graph capturing finished", "CUDA graph pool memory")),
    (Phase.KV_CACHE, ("Available KV cache memory", "GiB for KV cache on node",
                      "memory for KV Cache as specified", "KV cache size:", "Maximum concurrency for",
                      "Auto-fit max_model_len",
                      "reserved for KV Cache is", "# GPU blocks:", "# cuda blocks:", "# CUDA blocks:")),
    (Phase.PROFILING, ("Model loading took", "Loading model weights took",
                       "Warming up model for the compilation", "Initial profiling/warmup run",
                       "Memory profiling takes", "Profiling CUDA graph memory",
                       "Estimated CUDA graph memory", "Applying persisted startup plan",
                       "Startup plan not applied")),
    (Phase.LOADING, ("Starting to load model", "Loading safetensors checkpoint shards",
                     "Loading weights took")),
)


@dataclass
class LogFigures:
    """Numbers vLLM printed during start-up, as printed (GiB as float); None when not seen."""

    engine_version: str | None = None
    model: str | None = None
    server_url: str | None = None
    # Worker's memory snapshot before anything was loaded (DEBUG in 0.19) and its budget U·T.
    init_free_gib: float | None = None
    init_total_gib: float | None = None
    init_device_used_gib: float | None = None
    init_non_torch_gib: float | None = None
    requested_gib: float | None = None
    gpu_memory_utilization: float | None = None
    # Loading.
    model_loading_gib: float | None = None
    model_loading_seconds: float | None = None
    # Profiling run ("Memory profiling takes …"; 0.19 prints non-torch increase, 0.32 total consumed).
    profile_seconds: float | None = None
    profile_non_kv_gib: float | None = None
    profile_torch_peak_increase_gib: float | None = None
    profile_non_torch_increase_gib: float | None = None
    profile_total_consumed_gib: float | None = None
    profile_weights_gib: float | None = None
    cuda_graph_estimate_gib: float | None = None
    cuda_graph_counts: dict[str, int] | None = None  # per mode: {"PIECEWISE": 51, "FULL": 51}
    cuda_graph_largest: dict[str, int] | None = None  # largest captured size per mode
    # What the engine advises with its CUDA-graph estimate (0.19 "… from U to S"; 0.2x+ "U is
    # equivalent to E without CUDA graph memory profiling … increase … to S").
    utilization_without_cuda_graph_estimate: float | None = None
    suggested_gpu_memory_utilization: float | None = None
    # Persisted start-up plan (VLLM_ENABLE_STARTUP_PLAN=1): "applied" or "not applied".
    startup_plan: str | None = None
    startup_plan_fingerprint: str | None = None
    startup_plan_kv_cache_bytes: int | None = None
    startup_plan_baseline_free_gib: float | None = None
    # KV cache.
    available_kv_cache_gib: float | None = None  # GPU profiled size, or CPU "Auto set"
    explicit_kv_cache_gib: float | None = None  # --kv-cache-memory-bytes / VLLM_CPU_KVCACHE_SPACE
    host_memory_total_gib: float | None = None  # CPU: the NUMA node's total
    host_non_kv_gib: float | None = None  # CPU auto: RSS the worker used before the KV cache
    kv_cache_device: str | None = None  # "GPU", "CPU"
    multimodal_reserved_gib: float | None = None  # kept back for frontend multimodal decoding
    kv_cache_after_multimodal_gib: float | None = None  # … and the KV cache that is left
    auto_fit_max_model_len: int | None = None  # --max-model-len -1/auto: the length chosen
    kv_cache_tokens: int | None = None
    kv_cache_blocks: int | None = None
    max_concurrency: float | None = None
    max_concurrency_len: int | None = None
    # Graph capture.
    graph_capture_seconds: float | None = None
    graph_capture_gib: float | None = None
    cuda_graph_pool_actual_gib: float | None = None
    cuda_graph_pool_estimated_gib: float | None = None
    init_engine_seconds: float | None = None
    # "Free memory on device (F/T GiB) on startup. Desired … Actual usage is …" summary.
    summary_free_gib: float | None = None
    summary_total_gib: float | None = None
    summary_utilization: float | None = None
    summary_requested_gib: float | None = None
    summary_weights_gib: float | None = None  # 0.19
    summary_non_torch_gib: float | None = None  # 0.19
    summary_consumed_gib: float | None = None  # 0.32: weights + non-torch as one number
    summary_activation_peak_gib: float | None = None
    summary_cuda_graph_gib: float | None = None
    summary_kv_cache_gib: float | None = None
    suggested_kv_cache_bytes: int | None = None  # vLLM's --kv-cache-memory to fit U·T
    suggested_kv_cache_bytes_full: int | None = None  # … to use all free memory

    @property
    def kv_cache_gib(self) -> float | None:
        """The KV cache the engine sized, however it was sized (explicit wins: vLLM then skips
        profiling and prints no "Available KV cache memory"; a multimodal reservation, printed
        after either, takes its share from both)."""
        if self.kv_cache_after_multimodal_gib is not None:
            return self.kv_cache_after_multimodal_gib
        return self.explicit_kv_cache_gib if self.explicit_kv_cache_gib is not None \
            else self.available_kv_cache_gib

    def to_json(self) -> dict:
        return {**asdict(self), "kv_cache_gib": self.kv_cache_gib}


_INT_FIELDS = {f.name for f in fields(LogFigures) if f.type == "int | None"}
_STR_FIELDS = {f.name for f in fields(LogFigures) if f.type == "str | None"}
_NUM = r"-?\d+(?:\.\d+)?"  # vLLM prints negative GiB when the budget is already exceeded


def _convert(name: str, text: str) -> float | int | str:
    if name in _STR_FIELDS:
        return text
    if name in _INT_FIELDS:
        return int(text.replace(",", ""))
    return float(text)


def _graph_groups(m: re.Match[str]) -> dict:
    groups = re.findall(r"(\w+)=(\d+) \(largest=(\d+)\)", m.group(0))
    return {"cuda_graph_counts": {mode: int(n) for mode, n, _ in groups},
            "cuda_graph_largest": {mode: int(size) for mode, _, size in groups}}


_Reader = Callable[[re.Match[str]], dict]


def _cpu_kv(m: re.Match[str]) -> dict:
    target = "explicit_kv_cache_gib" if m["how"] == "Explicitly" else "available_kv_cache_gib"
    pairs = ((target, m["kv"]), ("host_memory_total_gib", m["total"]),
             ("requested_gib", m["requested"]), ("host_non_kv_gib", m["consumed"]))
    return {name: float(value) for name, value in pairs if value is not None}


def _plain(m: re.Match[str]) -> dict:
    return {name: _convert(name, value) for name, value in m.groupdict().items() if value is not None}


def _plan(outcome: str) -> _Reader:
    return lambda m: {**_plain(m), "startup_plan": outcome}


# (substring that must be present, pattern, reader): named groups are LogFigures fields, read
# by `_plain` unless the line needs its own reader.
_FIGURE_RULES: tuple[tuple[str, re.Pattern[str], _Reader], ...] = tuple(
    (key, re.compile(pattern), reader or _plain) for key, pattern, reader in (
        ("version", r"(?:█\s+version|vLLM (?:API )?server version)\s+v?(?P<engine_version>\d+\.\d+[^\s,]*)",
         None),
        ("LLM engine (v", r"LLM engine \(v(?P<engine_version>\d+\.\d+[^\s,)]*)\)", None),
        ("█", r"█\s+model\s+(?P<model>\S+)", None),
        ("serving model", r"serving model (?P<model>\S+)", None),
        ("Starting to load model", r"Starting to load model (?P<model>\S+?)\.\.\.", None),
        ("init memory snapshot", rf"free_memory=(?P<init_free_gib>{_NUM})GiB, "
         rf"total_memory=(?P<init_total_gib>{_NUM})GiB, \w+_memory=(?P<init_device_used_gib>{_NUM})GiB, "
         rf"torch_memory={_NUM}GiB, non_torch_memory=(?P<init_non_torch_gib>{_NUM})GiB", None),
        ("worker requested memory", rf"worker requested memory: (?P<requested_gib>{_NUM}) ?GiB", None),
        ("Requested memory:", rf"Requested memory: (?P<gpu_memory_utilization>{_NUM}) \(util\), "
         rf"(?P<requested_gib>{_NUM}) GiB", None),
        ("Model loading took", rf"Model loading took (?P<model_loading_gib>{_NUM}) GiB(?: memory)? and "
         rf"(?P<model_loading_seconds>{_NUM}) s", None),
        ("Loading model weights took",  # V0 engines (≤ 0.7), GiB despite the "GB"
         rf"Loading model weights took (?P<model_loading_gib>{_NUM}) GB", None),
        ("Memory profiling takes", rf"Memory profiling takes (?P<profile_seconds>{_NUM}) seconds", None),
        ("Total non KV cache memory",
         rf"Total non KV cache memory: (?P<profile_non_kv_gib>{_NUM}) ?GiB", None),
        ("torch peak memory increase",
         rf"torch peak memory increase: (?P<profile_torch_peak_increase_gib>{_NUM}) ?GiB", None),
        ("non-torch forward increase memory",
         rf"non-torch forward increase memory: (?P<profile_non_torch_increase_gib>{_NUM}) ?GiB", None),
        ("total consumed (from mem_get_info)",
         rf"total consumed \(from mem_get_info\): (?P<profile_total_consumed_gib>{_NUM}) ?GiB", None),
        ("; weights memory:", rf"; weights memory: (?P<profile_weights_gib>{_NUM}) ?GiB", None),
        ("Profiling CUDA graph memory", r"Profiling CUDA graph memory: .*", _graph_groups),
        ("Estimated CUDA graph memory",
         rf"Estimated CUDA graph memory: (?P<cuda_graph_estimate_gib>{_NUM}) GiB total", None),
        ("without CUDA graph memory profiling",
         rf"The current --gpu-memory-utilization=(?P<gpu_memory_utilization>{_NUM}) is equivalent to "
         rf"--gpu-memory-utilization=(?P<utilization_without_cuda_graph_estimate>{_NUM}) without CUDA graph "
         rf"memory profiling\. To maintain the same effective KV cache size as before, increase "
         rf"--gpu-memory-utilization to (?P<suggested_gpu_memory_utilization>{_NUM})", None),
        ("--gpu-memory-utilization from",  # 0.19's note, and 0.2x+ with the estimate turned off
         rf"--gpu-memory-utilization from (?P<gpu_memory_utilization>{_NUM}) to "
         rf"(?P<suggested_gpu_memory_utilization>{_NUM})", None),
        ("Applying persisted startup plan",
         rf"Applying persisted startup plan \(fingerprint (?P<startup_plan_fingerprint>[^)\s]+)\): "
         rf"kv_cache_memory_bytes=(?P<startup_plan_kv_cache_bytes>\d+) \({_NUM} GiB\), recorded free-memory "
         rf"baseline (?P<startup_plan_baseline_free_gib>{_NUM}) GiB, current (?P<init_free_gib>{_NUM}) GiB",
         _plan("applied")),
        ("Startup plan not applied",
         rf"Startup plan not applied: current free memory \((?P<init_free_gib>{_NUM}) GiB\) is below the "
         rf"recorded baseline \((?P<startup_plan_baseline_free_gib>{_NUM}) GiB\)", _plan("not applied")),
        ("Available KV cache memory",
         rf"Available KV cache memory: (?P<available_kv_cache_gib>{_NUM}) GiB", None),
        ("GiB for KV cache on node",
         rf"(?P<how>Explicitly|Auto) set \((?P<kv>{_NUM})/(?P<total>{_NUM})\) GiB for KV cache on node \d+"
         rf"(?:, with (?P<requested>{_NUM}) GiB requested memory for the worker\. "
         rf"(?P<consumed>{_NUM}) GiB memory was consumed by non-kv usages)?", _cpu_kv),
        ("reserved for KV Cache is",  # V0 engines
         rf"the rest of the memory reserved for KV Cache is (?P<available_kv_cache_gib>{_NUM}) ?GiB", None),
        ("memory for KV Cache as specified",  # "… and skipped memory profiling"
         rf"(?:Initial free memory (?P<init_free_gib>{_NUM}) GiB, )?"
         rf"reserved (?P<explicit_kv_cache_gib>{_NUM}) GiB memory for KV Cache", None),
        ("for frontend multimodal decoding",
         rf"Reserving (?P<multimodal_reserved_gib>{_NUM}) GiB of GPU memory for frontend multimodal decoding "
         rf".*KV cache memory reduced to (?P<kv_cache_after_multimodal_gib>{_NUM}) GiB", None),
        ("Auto-fit max_model_len: reduced",
         r"Auto-fit max_model_len: reduced from \d+ to (?P<auto_fit_max_model_len>\d+)", None),
        ("Auto-fit max_model_len: full",
         r"Auto-fit max_model_len: full model context length (?P<auto_fit_max_model_len>\d+) fits", None),
        ("KV cache size:", r"(?P<kv_cache_device>[A-Z]+)(?: \+ host)? KV cache size: "
         r"(?P<kv_cache_tokens>[\d,]+) tokens", None),
        ("Maximum concurrency for", rf"Maximum concurrency for (?P<max_concurrency_len>[\d,]+) tokens per "
         rf"request: (?P<max_concurrency>{_NUM})x", None),
        ("num_gpu_blocks is", r"num_gpu_blocks is: (?P<kv_cache_blocks>\d+)", None),
        ("blocks: ", r"# (?:GPU|cuda|CUDA) blocks: (?P<kv_cache_blocks>\d+)", None),  # V0 engines
        ("Graph capturing finished", rf"Graph capturing finished in (?P<graph_capture_seconds>{_NUM}) secs?, "
         rf"took (?P<graph_capture_gib>{_NUM}) GiB", None),
        ("CUDA graph pool memory", rf"CUDA graph pool memory: (?P<cuda_graph_pool_actual_gib>{_NUM}) GiB "
         rf"\(actual\), (?P<cuda_graph_pool_estimated_gib>{_NUM}) GiB \(estimated\)", None),
        ("init engine", rf"init engine \(profile, create kv cache, warmup model\) took "
         rf"(?P<init_engine_seconds>{_NUM}) s", None),
        ("Desired GPU memory utilization is",
         rf"Free memory on device(?: \S+)? \((?P<summary_free_gib>{_NUM})/"
         rf"(?P<summary_total_gib>{_NUM}) GiB\) on startup\. Desired GPU memory utilization is "
         rf"\((?P<summary_utilization>{_NUM}), (?P<summary_requested_gib>{_NUM}) GiB\)", None),
        ("GiB for weight,", rf"(?P<summary_weights_gib>{_NUM}) GiB for weight,", None),
        ("GiB for consumed memory", rf"(?P<summary_consumed_gib>{_NUM}) GiB for consumed memory", None),
        ("GiB for peak activation",
         rf"(?P<summary_activation_peak_gib>{_NUM}) GiB for peak activation", None),
        ("GiB for non-torch memory", rf"(?P<summary_non_torch_gib>{_NUM}) GiB for non-torch memory", None),
        ("GiB for CUDAGraph memory", rf"(?P<summary_cuda_graph_gib>{_NUM}) GiB for CUDAGraph memory", None),
        ("to fit into requested memory", r"--kv-cache-memory=(?P<suggested_kv_cache_bytes>-?\d+)` "
         rf"\({_NUM} GiB\) to fit into requested memory", None),
        ("to fully utilize", r"--kv-cache-memory=(?P<suggested_kv_cache_bytes_full>-?\d+)` "
         rf"\({_NUM} GiB\) to fully utilize", None),
        ("Current kv cache memory in use",
         rf"Current kv cache memory in use is (?P<summary_kv_cache_gib>{_NUM}) GiB", None),
        ("Starting vLLM", r"Starting vLLM (?:API )?server(?: \d+)? on (?P<server_url>\S+)", None),
    )
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE_BREAK = re.compile(r"[\r\n]")


def _pieces(line: str) -> list[str]:
    """A pipe line split at carriage returns (tqdm redraws) and any newline inside it, colours
    removed."""
    return [p for p in _LINE_BREAK.split(_ANSI.sub("", line)) if p.strip()]


_RANKS = re.compile(r"^\((?P<proc>[^()]*?) pid=\d+\)")


def _secondary_rank(text: str) -> bool:
    """Whether the line comes from a process tagged with a non-zero rank (Worker_TP1,
    EngineCore_DP1, ApiServer_1); untagged processes count as rank 0."""
    m = _RANKS.match(text)
    return m is not None and any(int(n) for n in re.findall(r"_[A-Z]*(\d+)", m["proc"]))


class LogParser:
    """Feed it lines as they arrive (from a process pipe); it tracks the phase and figures."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self.figures = LogFigures()
        self._from_other_ranks: set[str] = set()

    def feed(self, line: str) -> Phase | None:
        """Returns the new phase when this line moved it, else None. Never moves backwards:
        ranks print the same milestones at different times, and a laggard's line is old news."""
        moved = None
        for piece in _pieces(line):
            phase = _phase_of(piece)
            if phase is not None and _ORDER[phase] > _ORDER[self.phase]:
                self.phase = moved = phase
            self._read_figures(piece)
        return moved

    def _read_figures(self, text: str) -> None:
        """Each figure keeps the first value printed, except that rank 0 replaces a value another
        rank printed first, so that one line's numbers (the summary, say) stay together."""
        secondary = _secondary_rank(text)
        for key, pattern, reader in _FIGURE_RULES:
            if key not in text or (m := pattern.search(text)) is None:
                continue
            for name, value in reader(m).items():
                if getattr(self.figures, name) is None:
                    setattr(self.figures, name, value)
                    if secondary:
                        self._from_other_ranks.add(name)
                elif not secondary and name in self._from_other_ranks:
                    setattr(self.figures, name, value)
                    self._from_other_ranks.discard(name)


_MARKERS = tuple((marker, phase) for phase, markers in _PHASE_MARKERS for marker in markers)


def _phase_of(text: str) -> Phase | None:
    for marker, phase in _MARKERS:
        if marker in text:
            return phase
    return None


# ---------------------------------------------------------------------------------------------
# Failures

class FailureKind(StrEnum):
    """Why a start-up failed. The memory kinds are `retryable`: a smaller plan can fix them."""

    OOM_LOADING = "oom_loading"
    OOM_PROFILING = "oom_profiling"
    OOM_GRAPH_CAPTURE = "oom_graph_capture"
    KV_TOO_SMALL_FOR_CONTEXT = "kv_too_small_for_context"
    NO_KV_MEMORY = "no_kv_memory"
    STARTUP_FREE_MEMORY = "startup_free_memory"
    HOST_MEMORY_SHORT = "host_memory_short"
    KILLED = "killed"
    CONFIG_ERROR = "config_error"
    UNKNOWN = "unknown"
    # The launcher's own verdict, never read from a log: /health did not answer in time.
    READY_TIMEOUT = "ready_timeout"


@dataclass
class Failure:
    """Why the engine did not start, in the engine's own words plus the numbers a retry needs."""

    kind: FailureKind
    message: str  # the engine's own line(s) that say it, trimmed
    details: dict = field(default_factory=dict)  # numbers pulled from the message
    retryable: bool = False  # True when a smaller plan can fix it (memory)

    def to_json(self) -> dict:
        return asdict(self)


# "(Worker_TP1 pid=450) ERROR 04-22 19:54:39 [v1/executor/multiproc_executor.py:949] text"; V0
# engines wrote "ERROR 03-05 07:15:39 engine.py:387] text", uvicorn "INFO:     text".
_RECORD = re.compile(r"^(?:\((?P<proc>[^()]*?pid=\d+)\) ?)?"
                     r"(?:(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)(?: \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?"
                     r" \[?[^\]]*\] ?|:\s+))?(?P<body>.*)$")
_QUIET_LEVELS = ("DEBUG", "INFO", "WARNING")
_EXCEPTION = re.compile(r"^(?P<type>(?:[A-Za-z_]\w*\.)*[A-Za-z_]?\w*(?:Error|Exception|Exit|Interrupt))"
                        r"(?::\s?(?P<text>.*))?$")
# Exceptions that only report that something else failed first.
_CONSEQUENCES = ("WorkerProc initialization failed", "Engine core initialization failed",
                 "EngineCore failed to start", "Worker failed with error", "died unexpectedly",
                 "BrokenPipeError", "ConnectionResetError", "EOFError", "SystemExit", "KeyboardInterrupt",
                 "CancelledError")
_CONFIG_EXCEPTIONS = re.compile(
    r"(?:^|\.)(?:ValueError|TypeError|AssertionError|NotImplementedError|ValidationError|KeyError|"
    r"HTTPError|HfHubHTTPError|RepositoryNotFoundError|GatedRepoError|RevisionNotFoundError|"
    r"EntryNotFoundError|LocalEntryNotFoundError|OSError|FileNotFoundError|ImportError|"
    r"ModuleNotFoundError)$")
_ARGPARSE = re.compile(r"\berror: (?:argument |unrecognized arguments|the following arguments are required)")


@dataclass(frozen=True)
class _Entry:
    index: int  # position in the pieces, for "what had happened before this line"
    proc: str | None
    level: str | None
    body: str

    @property
    def loud(self) -> bool:
        return self.level not in _QUIET_LEVELS


def _entries(lines: Iterable[str]) -> list[_Entry]:
    out: list[_Entry] = []
    for piece in (p for line in lines for p in _pieces(line)):
        m = _RECORD.match(piece)
        assert m is not None  # the body group matches anything
        out.append(_Entry(len(out), m["proc"], m["level"], m["body"].rstrip()))
    return out


def _gib(value: str, unit: str) -> float:
    scale = {"B": 1 / 2**30, "KiB": 1 / 2**20, "KB": 1 / 2**20, "MiB": 1 / 1024, "MB": 1 / 1024,
             "GiB": 1.0, "GB": 1.0, "TiB": 1024.0, "TB": 1024.0}[unit]
    return round(float(value) * scale, 4)


def _trim(text: str, limit: int = 400) -> str:
    text = text.split(" [type=", 1)[0].strip()  # pydantic appends the whole input
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Memory failures vLLM names itself, most specific first. Group names become `details`.
_MEMORY_FAILURES: tuple[tuple[FailureKind, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern)) for kind, pattern in (
        (FailureKind.KV_TOO_SMALL_FOR_CONTEXT,
         rf"To serve at least one request with the models?'s max seq len \((?P<max_model_len>\d+)\), "
         rf"\(?(?P<needed_gib>{_NUM}) GiB KV cache is needed, which is larger than the available KV cache "
         rf"memory \((?P<available_gib>{_NUM}) GiB\)\.(?: Based on the available memory, the estimated "
         rf"maximum model length is (?P<estimated_max_model_len>\d+)\.)?"),
        (FailureKind.KV_TOO_SMALL_FOR_CONTEXT,  # V0 engines
         r"The model's max seq len \((?P<max_model_len>\d+)\) is larger than the maximum number of tokens "
         r"that can be stored in KV cache \((?P<kv_cache_tokens>\d+)\)"),
        (FailureKind.NO_KV_MEMORY,
         r"No available memory for the cache blocks|Cannot auto-fit max_model_len: not enough GPU memory"),
        (FailureKind.STARTUP_FREE_MEMORY,
         rf"Free memory on device(?: (?P<device>\S+))? \((?P<free_gib>{_NUM})/(?P<total_gib>{_NUM}) GiB\) "
         rf"on startup is less than (?:desired GPU memory utilization |the engine's budget[^(]*)"
         rf"\((?P<utilization>{_NUM}), (?P<requested_gib>{_NUM}) GiB\)"),
        (FailureKind.STARTUP_FREE_MEMORY,  # CPU backend: the same check against the NUMA node's memory
         rf"Available memory on node (?P<node>\d+) \((?P<free_gib>{_NUM})/(?P<total_gib>{_NUM}) GiB\) "
         rf"on startup is less than desired CPU memory utilization \((?P<utilization>{_NUM}), "
         rf"(?P<requested_gib>{_NUM}) GiB\)"),
        (FailureKind.HOST_MEMORY_SHORT,
         rf"Available memory on node (?P<node>\d+) \((?P<available_gib>{_NUM})/(?P<total_gib>{_NUM}) GiB\) "
         rf"on kv cache ?allocation is less than requested memory for kv \((?P<requested_gib>{_NUM})"
         rf"(?:/(?P<requested_total_gib>{_NUM}))? GiB\)"),
    )
)
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|DefaultCPUAllocator: can't allocate memory|"
                  r"Failed to load model - not enough GPU memory|CUDA error: out of memory")
_OOM_KIND = {Phase.STARTING: FailureKind.OOM_LOADING, Phase.LOADING: FailureKind.OOM_LOADING,
             Phase.PROFILING: FailureKind.OOM_PROFILING, Phase.KV_CACHE: FailureKind.OOM_GRAPH_CAPTURE,
             Phase.GRAPHS: FailureKind.OOM_GRAPH_CAPTURE, Phase.READY: FailureKind.OOM_GRAPH_CAPTURE}
_TORCH_OOM = re.compile(
    r"Tried to allocate (?P<tried>[\d.]+) (?P<tried_unit>[KMGT]i?B)\. GPU (?P<gpu>\d+) has a total "
    r"capacity of (?P<total>[\d.]+) (?P<total_unit>[KMGT]i?B) of which (?P<free>[\d.]+) "
    r"(?P<free_unit>[KMGT]i?B) is free\.(?: Including non-PyTorch memory, this process has "
    r"(?P<used>[\d.]+) (?P<used_unit>[KMGT]i?B) memory in use\.)?")
_CPU_OOM = re.compile(r"you tried to allocate (?P<bytes>\d+) bytes")
_WARMUP = re.compile(r"warming up (?P<stage>sampler|pooler) with (?P<requests>\d+) dummy requests")
# Numbers worth passing on from common configuration errors.
_CONFIG_DETAILS = (
    re.compile(r"User-specified max_model_len \((?P<max_model_len>\d+)\) is greater than the derived "
               r"max_model_len \((?P<derived_from>\w+)=(?P<derived_max_model_len>[\d.]+)"),
    re.compile(r"(?P<http_status>\d{3}) Client Error: [\w ]+ for url: (?P<url>\S+)"),
    re.compile(r"model type `(?P<model_type>[^`]+)` but Transformers does not recognize"),
    re.compile(r"DP adjusted local rank (?P<local_rank>\d+) is out of bounds"),
)


def _number(text: str) -> int | float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def classify_failure(lines: Sequence[str], returncode: int | None = None,
                     phase: Phase | None = None) -> Failure:
    """Why a start-up failed. `phase` is where the parser stood when the engine died (the OOM
    kind depends on it); without it, the phase is replayed from `lines` up to the first OOM."""
    entries = _entries(lines)
    loud = [e for e in entries if e.loud]
    for kind, pattern in _MEMORY_FAILURES:
        for e in loud:
            if m := pattern.search(e.body):
                details = {k: _number(v) for k, v in m.groupdict().items() if v is not None}
                if "kv_cache_tokens" in details:  # V0 says how many tokens fit: that is the longest context
                    details["estimated_max_model_len"] = details["kv_cache_tokens"]
                if kind == FailureKind.NO_KV_MEMORY:
                    details.update(_available_kv(entries))
                return Failure(kind, _trim(e.body), details, retryable=True)
    oom = next((e for e in loud if _OOM.search(e.body)), None)
    if oom is not None:
        return _oom_failure(entries, loud, oom, phase)
    if (kv := _available_kv(entries)) and kv["available_gib"] <= 0:
        # The profile left nothing for the KV cache; the error that says so was not captured.
        line = next(e for e in entries if "Available KV cache memory" in e.body
                    or "reserved for KV Cache is" in e.body)
        return Failure(FailureKind.NO_KV_MEMORY, _trim(line.body), kv, retryable=True)
    root = _root_exception(loud)
    if root is not None and _is_config_error(root):
        return Failure(FailureKind.CONFIG_ERROR, _message(loud, root), _config_details(loud, root))
    argparse = next((e for e in loud if _ARGPARSE.search(e.body)), None)
    if argparse is not None:
        return Failure(FailureKind.CONFIG_ERROR, _trim(argparse.body), {})
    # A process that vanished without a Python error of its own was killed, most likely by the
    # kernel's OOM killer; what the survivors raise afterwards ("cancelled") is a consequence.
    died = next((e for e in loud if "died unexpectedly" in e.body or e.body.strip() == "Killed"), None)
    if (died is not None and (root is None or died.index < root.index)) or (
            root is None and returncode in (-9, 137)):
        info: dict = {"returncode": returncode}
        if died is not None and (m := re.search(r"exit code: (-?\d+)", died.body)):
            info["process_exit_code"] = int(m[1])
        message = _trim(died.body) if died else f"the engine was killed (exit status {returncode})"
        return Failure(FailureKind.KILLED, message, info, retryable=True)
    if root is not None:
        return Failure(FailureKind.UNKNOWN, _message(loud, root), {"exception": _exception_type(root)})
    tail = important_lines(lines, 3)
    return Failure(FailureKind.UNKNOWN, "\n".join(tail) or f"the engine exited with status {returncode}",
                   {"returncode": returncode} if returncode is not None else {})


def _available_kv(entries: list[_Entry]) -> dict:
    parser = LogParser()
    for e in entries:
        parser._read_figures(e.body)
    kv = parser.figures.available_kv_cache_gib
    return {} if kv is None else {"available_gib": kv}


def _oom_failure(entries: list[_Entry], loud: list[_Entry], oom: _Entry, phase: Phase | None) -> Failure:
    details: dict = {}
    lines = [oom]
    if "Failed to load model" in oom.body:
        phase = Phase.LOADING
    warmup = next((e for e in loud if _WARMUP.search(e.body)), None)
    if warmup is not None:
        m = _WARMUP.search(warmup.body)
        assert m is not None
        details.update(stage=f"{m['stage']} warm-up", dummy_requests=int(m["requests"]))
        phase = Phase.GRAPHS  # sampler/pooler warm-up runs after graph capture, beside it in memory
        if warmup is not oom:
            lines.append(warmup)
    if phase is None:
        parser = LogParser()
        for e in entries[: oom.index]:
            parser.feed(e.body)
        phase = parser.phase
    details["phase"] = phase.value
    for e in loud:
        if m := _TORCH_OOM.search(e.body):
            details.update(tried_to_allocate_gib=_gib(m["tried"], m["tried_unit"]), gpu=int(m["gpu"]),
                           total_gib=_gib(m["total"], m["total_unit"]),
                           free_gib=_gib(m["free"], m["free_unit"]))
            if m["used"]:
                details["process_used_gib"] = _gib(m["used"], m["used_unit"])
            break
        if m := _CPU_OOM.search(e.body):
            details["tried_to_allocate_gib"] = _gib(m["bytes"], "B")
            break
    return Failure(_OOM_KIND[phase], "\n".join(_trim(e.body) for e in lines), details, retryable=True)


def _exception_type(e: _Entry) -> str:
    m = _EXCEPTION.match(e.body)
    return m["type"] if m else ""


def _is_consequence(e: _Entry) -> bool:
    return any(c in e.body for c in _CONSEQUENCES)


def _root_exception(loud: list[_Entry]) -> _Entry | None:
    """The first exception that is not just a report of an earlier one: with several processes,
    the worker that failed first says why, the others only that it failed."""
    return next((e for e in loud if _EXCEPTION.match(e.body) and not _is_consequence(e)), None)


def _is_config_error(root: _Entry) -> bool:
    return bool(_CONFIG_EXCEPTIONS.search(_exception_type(root)))


def _message(loud: list[_Entry], root: _Entry) -> str:
    """The exception line and the explanation lines that follow it from the same process
    (pydantic puts the actual reason on the next line)."""
    out = [_trim(root.body)]
    following = (e for e in loud if e.index > root.index and e.proc == root.proc)
    for e in following:
        text = e.body
        if (not text.strip() or text.startswith(("  File ", "    ", "Traceback", "The above exception",
                                                 "During handling")) or _EXCEPTION.match(text)
                or len(out) == 3):
            break
        out.append(_trim(text))
    return "\n".join(out)


def _config_details(loud: list[_Entry], root: _Entry) -> dict:
    details: dict = {"exception": _exception_type(root)}
    text = "\n".join(e.body for e in loud)
    for pattern in _CONFIG_DETAILS:
        if m := pattern.search(text):
            details.update({k: int(float(v)) if k.endswith("max_model_len") else _number(v)
                            for k, v in m.groupdict().items()})
    return details


_NOISE = re.compile(r"^(?:\s*$|  File |    |\s*\^+\s*$|Traceback \(most recent call last\)|"
                    r"The above exception|During handling of the above)")


def important_lines(lines: Sequence[str], n: int = 20) -> list[str]:
    """The last lines that matter (errors, tracebacks' last lines), for error messages: what the
    engine said at ERROR level or on bare stderr, without frames, log prefixes or repeats from
    other ranks."""
    seen: dict[str, None] = {}
    for e in _entries(lines):
        if not e.loud or _NOISE.match(e.body):
            continue
        if e.level is None and not (_EXCEPTION.match(e.body) or _ARGPARSE.search(e.body)
                                    or e.body.startswith("  Value error") or e.body.strip() == "Killed"):
            continue  # bare stderr is mostly warnings, tqdm and C++ frames
        seen.setdefault(_trim(e.body.strip()), None)
    return list(seen)[-n:]


def _shows_failure(entries: list[_Entry]) -> bool:
    return any(e.level in ("ERROR", "CRITICAL") or (e.level is None and _EXCEPTION.match(e.body))
               or e.body.strip() == "Killed" or _ARGPARSE.search(e.body) for e in entries)


def parse_log(text: str) -> tuple[LogParser, Failure | None]:
    """A whole recorded log: the parser after every line, and the failure when the log shows one
    (an engine that reached READY, or a log that merely stops, has none)."""
    lines = text.splitlines()
    parser = LogParser()
    for line in lines:
        parser.feed(line)
    if parser.phase is Phase.READY or not _shows_failure(_entries(lines)):
        return parser, None
    return parser, classify_failure(lines)
