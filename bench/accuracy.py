"""Accuracy of `launcher estimate` against real vLLM start-ups.

Runs the estimator (the same code path as `launcher estimate`) with each successful run's own
flags from calibration/vllm-0.19-h100/runs.csv and prints, per run and in summary,
the relative error of weights, KV-cache GiB and KV-cache tokens, next to a plain baseline
(KV = U·T − weights, tokens = KV / naive bytes-per-token, as most calculators compute).
Then the same for the rows of calibration/vllm-memory-reports.csv whose version is calibrated.

    python bench/accuracy.py [--calibration DIR] [--json]

KV GiB is compared with rank 0 (what the logs report); tokens with the pipeline minimum.
The logic lives in launcher.calibration.accuracy; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from launcher.calibration.accuracy import (
    MissingConfigError,
    ModelConfigs,
    evaluate_all,
    format_summary,
    format_table,
    read_reports,
    read_runs,
    summarize,
)
from launcher.engines.calibration import calibration_for

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "vllm-0.19-h100"  # calibration/<SWEEP>/: runs.csv, logs/, models/


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--calibration", type=Path, default=ROOT / "calibration",
                    help="calibration directory (default: the checkout's calibration/)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args()
    cal = calibration_for("0.19")
    sweep = args.calibration / SWEEP
    configs = ModelConfigs.load(sweep / "models", [ROOT / "tests" / "data" / "configs"])
    try:
        results = evaluate_all(read_runs(sweep / "runs.csv"), cal, configs)
        reports = evaluate_all(read_reports(args.calibration / "vllm-memory-reports.csv"),
                               cal, configs)
    except MissingConfigError as e:
        raise SystemExit(str(e)) from None
    summary = summarize(results)
    rsummary = summarize(reports) if reports else None
    if args.json:
        print(json.dumps({"runs": summary, "memory_reports_0.19": rsummary}, indent=2))
        return 0
    print(format_table(results, "vLLM 0.19.0 on H100-80GB: every successful run of the calibration "
                                "sweep ((r) = reconstructed config)"))
    print(format_summary(summary))
    if rsummary is not None:
        print(format_table(reports, "vllm-memory-reports.csv rows of calibrated versions (0.19)"))
        print(format_summary(rsummary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
