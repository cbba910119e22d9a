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

from launcher.engines.vllm_log import Failure
from launcher.planner.plan import Plan
from launcher.planner.request import PlanRequest
from launcher.runtime.verify import Verification
from launcher.units import GiB

MIN_RESERVE_STEP = int(0.5 * GiB)


@dataclass(frozen=True)
class Step:
    request: PlanRequest
    reason: str
    device_memory: tuple[int, int] | None = None  # (total, available) the engine reported


def _reserve_step(plan: Plan, shortfall: int | None) -> int:
    total = max((b.total_bytes for b in plan.budgets), default=0)
    guess = int(0.05 * total)
    return max(MIN_RESERVE_STEP, shortfall or 0, guess if shortfall is None else 0)


def next_step(req: PlanRequest, plan: Plan, failure: Failure | None,
              verification: Verification | None) -> Step | None:
    c = plan.chosen
    if c is None:
        return None
    if failure is not None:
        d = failure.details
        if failure.kind == "kv_too_small_for_context":
            fit = int(d.get("estimated_max_model_len") or 0)
            if fit <= 0:
                fit = c.max_model_len // 2
            cap = min(fit // 256 * 256 if fit >= 512 else fit, c.max_model_len - 1)
            if cap < 1:
                return None
            floor = req.context_floor(plan.model.get("max_position_embeddings")
                                      or c.max_model_len)
            if cap < floor:
                return None  # below the shortest context the user accepts: stop here
            return Step(replace(req, max_model_len=cap),
                        f"the engine's KV cache holds at most {fit:,} tokens per request: "
                        f"context capped at {cap:,} (was {c.max_model_len:,})")
        if failure.kind == "oom_graph_capture" and not req.enforce_eager:
            return Step(replace(req, enforce_eager=True),
                        "out of memory while capturing CUDA graphs: relaunch with "
                        "--enforce-eager (no graphs)")
        if failure.kind == "host_memory_short" and d.get("available_gib"):
            total = int(float(d.get("total_gib") or d["available_gib"]) * GiB)
            avail = int(float(d["available_gib"]) * GiB)
            return Step(req, f"the engine found {avail / GiB:.2f} GiB available of "
                             f"{total / GiB:.2f} GiB, less than planned: re-plan on that",
                        device_memory=(total, avail))
        if failure.kind in ("oom_loading", "oom_profiling", "oom_graph_capture", "no_kv_memory",
                            "startup_free_memory", "killed", "host_memory_short"):
            short = None
            for key in ("needed_gib", "requested_gib", "tried_to_allocate_gib"):
                if d.get(key):
                    short = int(float(d[key]) * GiB)
                    break
            extra = _reserve_step(plan, short)
            return Step(replace(req, reserve_bytes=req.reserve_bytes + extra),
                        f"{failure.kind.replace('_', ' ')}: the memory model was short; "
                        f"reserve {extra / GiB:.2f} GiB more per device and re-plan")
        return None
    if verification is not None and not verification.ok:
        names = ", ".join(f.name for f in verification.failures)
        if any(f.name in ("kv_cache_tokens", "num_blocks", "max_model_len")
               for f in verification.failures):
            # The engine did not take the plan's numbers (another version, a flag it
            # ignored): more reserve would not make it, so say so instead of retrying.
            return None
        over = verification.overshoot_bytes
        if over > 0:
            extra = max(MIN_RESERVE_STEP // 2, int(over * 1.1))
            return Step(replace(req, reserve_bytes=req.reserve_bytes + extra),
                        f"measured {over / GiB:.2f} GiB above the limit: reserve "
                        f"{extra / GiB:.2f} GiB more per device and re-plan")
        return Step(replace(req, reserve_bytes=req.reserve_bytes + MIN_RESERVE_STEP),
                    f"verification failed ({names}): re-plan with more reserve")
    return None
