"""The estimator against every successful real vLLM 0.19 start-up in calibration/vllm-0.19-h100/.

Per run: KV cache within 5 % (or 0.3 GiB where the cache is only a few GiB), tokens likewise,
weights within 3 %; over the sweep, the medians the issue sets (weights ≤ 0.25 %, KV ≤ 2 %).
The KV-layout formulas are checked exactly against the block counts vLLM logged.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest
from conftest import CALIBRATION, CONFIGS

from launcher.calibration import accuracy, per_version
from launcher.engines.calibration import calibration_for
from launcher.engines.vllm_log import LogParser, classify_failure
from launcher.errors import InputError
from launcher.memory import kv as kvm
from launcher.memory.calibration import EngineCalibration

SWEEP = CALIBRATION / "vllm-0.19-h100"
RUNS = accuracy.read_runs(SWEEP / "runs.csv")
CONFIG_SOURCES = accuracy.ModelConfigs.load(SWEEP / "models", [CONFIGS])
CAL = calibration_for("0.19")


def _id(r: dict) -> str:
    return r["log_file"].removesuffix(".log")


@pytest.mark.parametrize("row", RUNS, ids=_id)
def test_run_within_bounds(row: dict) -> None:
    r = accuracy.evaluate(row, CAL, CONFIG_SOURCES)
    assert isinstance(r, accuracy.Compared), r
    kv_rel, kv_abs = r.kv_gib_pct, r.kv_gib_abs
    assert kv_rel <= 5 or kv_abs <= 0.3, r
    assert r.kv_within_target, r
    assert r.kv_tokens_pct <= 5 or kv_abs <= 0.3, r
    assert r.weights_pct <= 3, r
    # Always better than the plain U·T − weights calculator, which ignores overheads.
    assert kv_rel < r.baseline_kv_gib_pct or kv_rel < 0.1


def test_sweep_medians_meet_the_targets() -> None:
    results = accuracy.evaluate_all(RUNS, CAL, CONFIG_SOURCES)
    ok = [r for r in results if isinstance(r, accuracy.Compared)]
    assert len(ok) == len(results) == len(RUNS)
    assert statistics.median(r.weights_pct for r in ok) <= 0.25
    assert statistics.median(r.kv_gib_pct for r in ok) <= 2
    assert statistics.median(r.kv_tokens_pct for r in ok) <= 2
    summary = accuracy.summarize(results)
    assert summary["runs"] == summary["estimated"] == summary["kv_within_target"] == len(RUNS)


@pytest.mark.parametrize("row", [r for r in RUNS if r["kv_cache_blocks"]], ids=_id)
def test_kv_layout_reproduces_logged_tokens_and_concurrency(row: dict) -> None:
    """Given vLLM's own block count, our groups give exactly its logged tokens and concurrency."""
    spec, _ = accuracy.load_spec(row["model"], CONFIG_SOURCES)
    tp, pp = int(row["tp"]), int(row["pp"])
    kv_bytes = 1 if row["kv_cache_dtype"].startswith("fp8") else 2
    geo = kvm.geometry(spec, tp=tp, pp=pp, kv_bytes=kv_bytes, block_size=CAL.block_size,
                       stage_layers=spec.num_layers // pp)
    blocks = int(row["kv_cache_blocks"])
    assert (blocks // geo.num_groups) * geo.block_size == int(row["kv_cache_tokens"])
    need = kvm.blocks_per_request(geo, int(row["max_model_len"]), 8192)
    assert round(blocks / need, 2) == pytest.approx(float(row["max_concurrency"]), abs=0.011)


def test_failed_start_of_oversized_memory_is_predicted() -> None:
    """gpt-oss-20b TP1 at U=0.95 started but its sibling run failed: both use the same model;
    the estimator must at least reproduce the successful TP2 run at U=0.9 (checked above)
    and refuse a utilization the GPU cannot give."""
    row = next(r for r in RUNS if r["model"] == "openai/gpt-oss-20b")
    bad = dict(row, gpu_memory_utilization="0.999")
    r = accuracy.evaluate(bad, CAL, CONFIG_SOURCES)
    assert isinstance(r, accuracy.Refused)
    assert "less than desired GPU memory utilization" in r.error


def test_memory_reports_of_the_calibrated_version_within_target() -> None:
    """The 0.19 H100 rows of vllm-memory-reports.csv (public reports, not the sweep) too."""
    rows = accuracy.read_reports(CALIBRATION / "vllm-memory-reports.csv", version="0.19")
    assert len(rows) >= 20
    summary = accuracy.summarize(accuracy.evaluate_all(rows, CAL, CONFIG_SOURCES))
    assert summary["estimated"] == summary["kv_within_target"] == len(rows)


def test_summary_text_is_what_ci_greps() -> None:
    """CI runs `python bench/accuracy.py | grep -A8 "^runs"`: the summary opens with `runs N`."""
    results = accuracy.evaluate_all(RUNS[:3], CAL, CONFIG_SOURCES)
    text = accuracy.format_summary(accuracy.summarize(results))
    lines = text.splitlines()
    assert lines[1].startswith("runs 3, estimated 3; KV within target (≤5 % or ≤0.3 GiB): 3/3")
    assert [ln.split()[0] for ln in lines[3:]] == ["weights", "KV", "KV", "baseline", "baseline"]
    table = accuracy.format_table(results, "title").splitlines()
    assert table[1] == "title" and len(table) == 4 + 3


# ---- newer vLLM versions: calibration/vllm-newer-logs.csv and per-version accuracy ----------

NEWER = per_version.read_newer_logs(CALIBRATION / "vllm-newer-logs.csv")
ISSUE_LOGS = CALIBRATION / "vllm-issues"


def _not_calibrated(version: str) -> EngineCalibration:
    raise InputError(f"vLLM {version} is not calibrated (calibrated: 0.19)")


def test_newer_logs_load_and_every_row_parses() -> None:
    """Header as documented; every figure a number; every row cites its thread; versions
    parse (or the row says none was found)."""
    assert len(NEWER) >= 10
    for row in NEWER:
        per_version.check_row(row)
        assert re.match(r"vllm-project/vllm#\d+ \(", row["source"]), row["source"]
        assert row["verbatim_log"], row["source"]
        version = per_version.minor_version(row["vllm_version"])
        assert version is not None or "version not found" in row["notes"], row["source"]
        assert version is None or tuple(map(int, version.split("."))) >= (0, 20), version
    assert len(per_version.versions_in(NEWER)) >= 4


def test_newer_logs_reject_a_malformed_figure(tmp_path: Path) -> None:
    text = (CALIBRATION / "vllm-newer-logs.csv").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(text.replace(",2.97,", ",2.97 GiB,", 1))
    with pytest.raises(ValueError, match="kv_cache_gib"):
        per_version.read_newer_logs(bad)


@pytest.mark.parametrize("row", [r for r in NEWER if r["log_file"]], ids=lambda r: r["log_file"])
def test_issue_log_excerpt_gives_the_rows_figures(row: dict) -> None:
    """The excerpt kept in calibration/vllm-issues/ is what the row's figures were read from:
    the log parser (or the failure classifier) reads the same numbers out of it."""
    lines = (ISSUE_LOGS / row["log_file"]).read_text().splitlines()
    parser = LogParser()
    for line in lines:
        parser.feed(line)
    got = parser.figures
    kv = got.kv_cache_gib
    if kv is None and row["status"] == "failed":
        kv = classify_failure(lines).details.get("available_gib")
    checked = 0
    for value, expected in ((kv, row["kv_cache_gib"]), (got.kv_cache_tokens, row["kv_cache_tokens"]),
                            (got.max_concurrency, row["max_concurrency"])):
        if expected:
            assert value == pytest.approx(float(expected)), (row["log_file"], value, expected)
            checked += 1
    assert checked, row["log_file"]


def test_every_issue_log_belongs_to_a_row() -> None:
    named = {r["log_file"] for r in NEWER if r["log_file"]}
    on_disk = {p.name for p in ISSUE_LOGS.glob("*.log")}
    assert on_disk == named
    for name in on_disk:  # named after the thread the row cites
        assert any(f"#{name.removesuffix('.log')} " in r["source"] for r in NEWER), name


def _newer_rows() -> list[dict[str, str]]:
    reports = accuracy.read_runs(CALIBRATION / "vllm-memory-reports.csv", status=None)
    return NEWER + per_version.reports_as_newer(reports)


def test_per_version_report_lists_every_harvested_version() -> None:
    rows = _newer_rows()
    runs = per_version.evaluate_versions(rows, CONFIG_SOURCES, calibration_for)
    summaries = per_version.summarize_versions(runs, calibration_for)
    assert {s["version"] for s in summaries} - {""} == per_version.versions_in(rows)
    assert sum(s["rows"] for s in summaries) == len(rows)
    text = per_version.format_versions(summaries, "title")
    for s in summaries:
        assert any(line.startswith(f"{s['version'] or 'unknown'} ") for line in text.splitlines())
    # CI greps `^runs` in bench/accuracy.py's output: the per-version text must not match.
    for block in (text, per_version.format_runs(runs),
                  per_version.format_fits(per_version.fit_versions(rows, CONFIG_SOURCES,
                                                                   calibration_for, CAL))):
        assert not any(line.startswith("runs") for line in block.splitlines())


def test_unmodelled_versions_are_reported_not_estimated() -> None:
    runs = per_version.evaluate_versions(_newer_rows(), CONFIG_SOURCES, _not_calibrated)
    assert {r.status for r in runs} <= {"not modelled", "unknown version"}
    assert all(r.kv_gib is None and r.non_kv_gib is None for r in runs)
    summaries = per_version.summarize_versions(runs, _not_calibrated)
    assert all(s["modelled"] is False for s in summaries if s["version"])


def test_a_run_is_estimated_with_its_own_versions_rules() -> None:
    """gpt-oss-120b TP8 on vLLM 0.28 (vllm#51590): with rules for 0.28 the run is compared; its
    non-KV total is U·T − KV as printed (29.81 − 19.0 GiB), and the rules' CUDA-graph switch
    decides whether the estimate counts the graph pool."""
    row = next(r for r in NEWER if "#51590" in r["source"])
    seen: list[str] = []

    def rules(version: str, subtract: bool) -> EngineCalibration:
        seen.append(version)
        return CAL.with_graph_estimate_subtracted(subtract).model_copy(update={"version": version})

    without = per_version.evaluate_row(row, CONFIG_SOURCES, lambda v: rules(v, False))
    with_graphs = per_version.evaluate_row(row, CONFIG_SOURCES, lambda v: rules(v, True))
    assert seen == ["0.28", "0.28"]
    for r in (without, with_graphs):
        assert r.status == "compared", r
        assert r.non_kv_gib is not None and r.non_kv_derived
        assert r.non_kv_gib[1] == pytest.approx(29.81 - 19.0)
        assert r.kv_gib is not None and r.kv_gib[1] == 19.0
    assert with_graphs.non_kv_gib is not None and without.non_kv_gib is not None
    assert with_graphs.non_kv_gib[0] > without.non_kv_gib[0]


def test_measured_non_kv_prefers_printed_components() -> None:
    row = dict.fromkeys(per_version.NEWER_COLUMNS, "")
    row.update(weights_gib="10", activation_peak_gib="1.5", non_torch_gib="0.5",
               cuda_graph_estimated_gib="0.25", kv_cache_gib="50", gpu_total_gib="79.19",
               gpu_memory_utilization="0.9")
    m = per_version.measured(row, subtracts_cuda_graphs=True)
    assert (m.non_kv_gib, m.non_kv_derived) == (12.25, False)
    row["non_torch_gib"] = ""
    m = per_version.measured(row, subtracts_cuda_graphs=True)
    assert m.non_kv_derived and m.non_kv_gib == pytest.approx(79.19 * 0.9 - 50)


def test_missing_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "quantized.yaml").write_text("{}\n")
    configs = accuracy.ModelConfigs.load(tmp_path)
    with pytest.raises(accuracy.MissingConfigError, match="no-such--model"):
        accuracy.load_spec("no-such/model", configs)
