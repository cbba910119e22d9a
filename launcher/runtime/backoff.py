"""What to change after a failed attempt, so the next plan is one rung down. Pure.

The correction goes into the *request*, and the planner re-plans from it, so a relaunch walks
the same ladder as the first plan (fp8 KV → shorter context → fp8 weights → 4-bit) with what
the failure taught:

* the engine says its KV cache holds at most N tokens per request → cap the context at N;
* CUDA-graph capture ran out of memory → `--enforce-eager` (graphs are the cheapest to drop);
* out of memory while loading or profiling, no memory left for the KV cache, or verification
  measured more than the limit → reserve the shortfall on every device and re-plan;
* the host had less memory than the plan assumed (CPU) → re-plan on the memory the engine
  reported.

Configuration errors and unknown failures are not retried: a smaller plan cannot fix them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from launcher.engines.vllm_log import Failure, FailureKind
from launcher.planner.plan import Plan
from launcher.planner.request import PlanRequest
from launcher.policy import MIN_RESERVE_STEP, OVERSHOOT_MARGIN, RESERVE_GUESS_FRACTION
from launcher.runtime.verify import CAPACITY_CHECKS, Verification
from launcher.units import GiB, fmt_gib

# Failures that more reserved memory per device can fix.
_RESERVE_MORE = frozenset({
    FailureKind.OOM_LOADING, FailureKind.OOM_PROFILING, FailureKind.OOM_GRAPH_CAPTURE,
    FailureKind.NO_KV_MEMORY, FailureKind.STARTUP_FREE_MEMORY, FailureKind.KILLED,
    FailureKind.HOST_MEMORY_SHORT})


@dataclass(frozen=True)
class Step:
    request: PlanRequest
    reason: str
    device_memory: tuple[int, int] | None = None  # (total, available) the engine reported


def _reserve_step(plan: Plan, shortfall: int | None) -> int:
    total = max((b.total_bytes for b in plan.budgets), default=0)
    guess = int(RESERVE_GUESS_FRACTION * total)
    return max(MIN_RESERVE_STEP, shortfall or 0, guess if shortfall is None else 0)


def next_step(req: PlanRequest, plan: Plan, failure: Failure | None,
              verification: Verification | None) -> Step | None:
    c = plan.chosen
    if c is None:
        return None
    if failure is not None:
        d = failure.details
        if failure.kind == FailureKind.KV_TOO_SMALL_FOR_CONTEXT:
            fit = int(d.get("estimated_max_model_len") or 0)
            if fit <= 0:
                fit = c.max_model_len // 2
            cap = min(fit // 256 * 256 if fit >= 512 else fit, c.max_model_len - 1)
            if cap < 1:
                return None
            floor = req.context_floor(plan.model.max_position_embeddings or c.max_model_len)
            if cap < floor:
                return None  # below the shortest context the user accepts: stop here
            return Step(replace(req, max_model_len=cap),
                        f"the engine's KV cache holds at most {fit:,} tokens per request: "
                        f"context capped at {cap:,} (was {c.max_model_len:,})")
        if failure.kind == FailureKind.OOM_GRAPH_CAPTURE and not req.enforce_eager:
            return Step(replace(req, enforce_eager=True),
                        "out of memory while capturing CUDA graphs: relaunch with "
                        "--enforce-eager (no graphs)")
        if failure.kind == FailureKind.HOST_MEMORY_SHORT and d.get("available_gib"):
            total = int(float(d.get("total_gib") or d["available_gib"]) * GiB)
            avail = int(float(d["available_gib"]) * GiB)
            return Step(req, f"the engine found {fmt_gib(avail)} available of "
                             f"{fmt_gib(total)}, less than planned: re-plan on that",
                        device_memory=(total, avail))
        if failure.kind in _RESERVE_MORE:
            short = None
            for key in ("needed_gib", "requested_gib", "tried_to_allocate_gib"):
                if d.get(key):
                    short = int(float(d[key]) * GiB)
                    break
            extra = _reserve_step(plan, short)
            return Step(replace(req, reserve_bytes=req.reserve_bytes + extra),
                        f"{failure.kind.value.replace('_', ' ')}: the memory model was short; "
                        f"reserve {fmt_gib(extra)} more per device and re-plan")
        return None
    if verification is not None and not verification.ok:
        names = ", ".join(f.name for f in verification.failures)
        if any(f.what in CAPACITY_CHECKS for f in verification.failures):
            return None  # not a memory problem: say so instead of retrying
        over = verification.overshoot_bytes
        if over > 0:
            extra = max(MIN_RESERVE_STEP // 2, int(over * OVERSHOOT_MARGIN))
            return Step(replace(req, reserve_bytes=req.reserve_bytes + extra),
                        f"measured {fmt_gib(over)} above the limit: reserve "
                        f"{fmt_gib(extra)} more per device and re-plan")
        return Step(replace(req, reserve_bytes=req.reserve_bytes + MIN_RESERVE_STEP),
                    f"verification failed ({names}): re-plan with more reserve")
    return None
