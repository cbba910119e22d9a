"""The estimator against every successful real vLLM 0.19 start-up in shared/calibration.

Per run: KV cache within 5 % (or 0.3 GiB where the cache is only a few GiB), tokens likewise,
weights within 3 %; over the sweep, the medians the issue sets (weights ≤ 0.25 %, KV ≤ 2 %).
The KV-layout formulas are checked exactly against the block counts vLLM logged.
"""

from __future__ import annotations

import csv
import statistics
import sys

import pytest
from conftest import CALIBRATION, ROOT

sys.path.insert(0, str(ROOT / "bench"))
import accuracy

from launcher.memory import kv as kvm
from launcher.memory.overheads import calibration_for

RUNS = [r for r in csv.DictReader((CALIBRATION / "vllm-0.19-h100-runs.csv").read_text().splitlines())
        if r["status"] == "ok"]
CAL = calibration_for("0.19")


def _id(r: dict) -> str:
    return r["log_file"].removesuffix(".log")


@pytest.mark.parametrize("row", RUNS, ids=_id)
def test_run_within_bounds(row: dict) -> None:
    r = accuracy.evaluate(row, CAL)
    assert "error" not in r, r.get("error")
    _kv_est, _kv_true, kv_rel, kv_abs = r["kv_gib"]
    assert kv_rel <= 5 or kv_abs <= 0.3, r
    assert r["kv_tokens"][2] <= 5 or kv_abs <= 0.3, r
    assert r["weights"][2] <= 3, r
    # Always better than the plain U·T − weights calculator, which ignores overheads.
    assert kv_rel < r["baseline_kv_gib"] or kv_rel < 0.1


def test_sweep_medians_meet_the_targets() -> None:
    results = [accuracy.evaluate(r, CAL) for r in RUNS]
    assert statistics.median(r["weights"][2] for r in results) <= 0.25
    assert statistics.median(r["kv_gib"][2] for r in results) <= 2
    assert statistics.median(r["kv_tokens"][2] for r in results) <= 2


@pytest.mark.parametrize("row", [r for r in RUNS if r["kv_cache_blocks"]], ids=_id)
def test_kv_layout_reproduces_logged_tokens_and_concurrency(row: dict) -> None:
    """Given vLLM's own block count, our groups give exactly its logged tokens and concurrency."""
    spec, _ = accuracy.load_spec(row["model"])
    tp, pp = int(row["tp"]), int(row["pp"])
    kv_bytes = 1 if row["kv_cache_dtype"].startswith("fp8") else 2
    geo = kvm.geometry(spec, tp=tp, pp=pp, kv_bytes=kv_bytes,
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
    r = accuracy.evaluate(bad, CAL)
    assert "error" in r and "less than desired GPU memory utilization" in r["error"]
