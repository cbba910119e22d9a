"""The estimator against every successful real vLLM 0.19 start-up in calibration/vllm-0.19-h100/.

Per run: KV cache within 5 % (or 0.3 GiB where the cache is only a few GiB), tokens likewise,
weights within 3 %; over the sweep, the medians the issue sets (weights ≤ 0.25 %, KV ≤ 2 %).
The KV-layout formulas are checked exactly against the block counts vLLM logged.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from conftest import CALIBRATION, CONFIGS

from launcher.calibration import accuracy
from launcher.engines.calibration import calibration_for
from launcher.memory import kv as kvm

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


def test_missing_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "quantized.yaml").write_text("{}\n")
    configs = accuracy.ModelConfigs.load(tmp_path)
    with pytest.raises(accuracy.MissingConfigError, match="no-such--model"):
        accuracy.load_spec("no-such/model", configs)
