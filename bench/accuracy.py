"""Accuracy of `launcher estimate` against real vLLM start-ups.

Runs the estimator (the same code path as `launcher estimate`) with each successful run's own
flags from calibration/vllm-0.19-h100/runs.csv and prints, per run and in summary,
the relative error of weights, KV-cache GiB and KV-cache tokens, next to a plain baseline
(KV = U·T − weights, tokens = KV / naive bytes-per-token, as most calculators compute).
Then the same for the rows of calibration/vllm-memory-reports.csv whose version is calibrated.
Before all that (nothing may follow the 0.19 summaries: CI greps them), per newer vLLM
version (calibration/vllm-newer-logs.csv and the post-0.19 rows of vllm-memory-reports.csv):
the errors of KV GiB and of the non-KV total, each run estimated with its own version's rules
("not modelled" where profiles/engines/vllm.yaml has no entry), and the overhead constants
those rows would give if fitted (launcher.calibration.per_version).

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
from launcher.calibration.per_version import (
    evaluate_versions,
    fit_versions,
    format_fits,
    format_runs,
    format_versions,
    read_newer_logs,
    reports_as_newer,
    runs_json,
    summarize_versions,
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
    newer = read_newer_logs(args.calibration / "vllm-newer-logs.csv") + reports_as_newer(
        read_runs(args.calibration / "vllm-memory-reports.csv", status=None))
    version_runs = evaluate_versions(newer, configs, calibration_for)
    versions = summarize_versions(version_runs, calibration_for)
    fits = fit_versions(newer, configs, calibration_for, cal)
    if args.json:
        print(json.dumps({"runs": summary, "memory_reports_0.19": rsummary,
                          "per_version": versions, "per_version_runs": runs_json(version_runs),
                          "per_version_fits": fits}, indent=2))
        return 0
    # Newer versions first: CI greps `^runs` with 8 lines of context, so nothing may follow the
    # 0.19 summaries.
    print(format_versions(versions, "Newer vLLM versions: public start-ups (vllm-newer-logs.csv, "
                                    "post-0.19 rows of vllm-memory-reports.csv), each estimated "
                                    "with its own version's rules").lstrip("\n"))
    print(format_runs(version_runs))
    print(format_fits(fits))
    print(format_table(results, "vLLM 0.19.0 on H100-80GB: every successful run of the calibration "
                                "sweep ((r) = reconstructed config)"))
    print(format_summary(summary))
    if rsummary is not None:
        print(format_table(reports, "vllm-memory-reports.csv rows of calibrated versions (0.19)"))
        print(format_summary(rsummary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
