"""Plan → the exact vLLM command line and environment (DESIGN §5).

The server is started as `python -m vllm.entrypoints.openai.api_server` with the engine's own
interpreter (the `vllm` console script breaks under the CPU package), with every planned number
explicit so vLLM's own defaults never decide anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from launcher.memory.calibration import Device
from launcher.planner.plan import EngineCommand, Plan

ENTRYPOINT = "vllm.entrypoints.openai.api_server"


def command(plan: Plan, *, python: str, host: str = "127.0.0.1", port: int = 8000,
            served_model_name: str | None = None) -> EngineCommand:
    """The command that runs `plan`; raises ValueError for an infeasible plan."""
    d, c = plan.decision, plan.chosen
    if d is None or c is None:
        raise ValueError("an infeasible plan has no engine command")
    argv = [python, "-m", ENTRYPOINT, "--model", str(d.model), "--host", host,
            "--port", str(port)]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    argv += ["--dtype", d.dtype]
    if c.option.quantization_flag:
        argv += ["--quantization", c.option.quantization_flag]
    argv += ["--kv-cache-dtype", d.kv_cache_dtype,
             "--tensor-parallel-size", str(d.tensor_parallel_size),
             "--pipeline-parallel-size", str(d.pipeline_parallel_size),
             "--data-parallel-size", str(d.data_parallel_size),
             "--max-model-len", str(d.max_model_len),
             "--max-num-seqs", str(d.max_num_seqs),
             "--max-num-batched-tokens", str(d.max_num_batched_tokens),
             "--kv-cache-memory-bytes", str(d.kv_cache_memory_bytes)]
    env: dict[str, str] = {}
    if plan.device == Device.CUDA:
        argv += ["--gpu-memory-utilization", f"{d.gpu_memory_utilization:.2f}"]
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(plan)
    if d.enforce_eager:
        argv.append("--enforce-eager")
    return EngineCommand(tuple(argv), env)


def visible_devices(plan: Plan) -> str:
    """CUDA_VISIBLE_DEVICES for the planned GPUs: UUIDs where NVML gave them, because a UUID
    names the same GPU whatever CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER the launcher itself
    ran under; plain indices for simulated GPUs."""
    gpus = plan.chosen.gpus if plan.chosen else ()
    if gpus and all(g.uuid for g in gpus):
        return ",".join(str(g.uuid) for g in gpus)
    return ",".join(str(g.index) for g in gpus)


# Flags whose value the plan decides; a passthrough may repeat them but not change them.
PLANNED = ("--model", "--host", "--port", "--served-model-name", "--dtype", "--quantization",
           "--kv-cache-dtype", "--tensor-parallel-size", "--pipeline-parallel-size",
           "--data-parallel-size", "--max-model-len", "--max-num-seqs",
           "--max-num-batched-tokens", "--kv-cache-memory-bytes", "--gpu-memory-utilization")
BOOLEAN_PLANNED = ("--enforce-eager",)
SHORT = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size",
         "-dp": "--data-parallel-size", "-q": "--quantization",
         "--device-memory-utilization": "--gpu-memory-utilization"}
# Flags that move memory the plan does not model: refused rather than silently breaking it.
UNMODELLED = ("--block-size", "--num-gpu-blocks-override", "--cpu-offload-gb", "--swap-space",
              "--kv-offloading-size", "--speculative-config", "--max-cudagraph-capture-size",
              "--config", "--compilation-config", "-O", "--enable-lora", "--hf-overrides",
              "--max-lora-rank", "--max-loras", "--mm-processor-kwargs")


def _canonical(flag: str) -> str:
    """vLLM's parser accepts unique prefixes of long flags (argparse allow_abbrev) and a few
    aliases: map a flag to the planned or refused flag it abbreviates, if any."""
    name = SHORT.get(flag, flag).replace("_", "-")
    if name.startswith("-O") and name != "-O" and not name.startswith("--"):
        return "-O"  # -O3, -O.level=…
    known = (*PLANNED, *BOOLEAN_PLANNED, *UNMODELLED)
    if name in known or not name.startswith("--"):
        return name
    hits = [k for k in known if k.startswith(name) and len(name) >= 5]
    return hits[0] if len(hits) == 1 else name


def _pairs(args: list[str]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("-"):
            raise ValueError(f"{a!r} is not a flag (values follow their flag)")
        if "=" in a:
            flag, value = a.split("=", 1)
            out.append((flag, value))
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((a, args[i + 1]))
            i += 1
        else:
            out.append((a, None))
        i += 1
    return out


# A flag vLLM's argparse could accept: -x, -O3, --name, --name.sub (no `--`, no bare `-`).
_FLAG = re.compile(r"-[A-Za-z0-9][A-Za-z0-9._-]*|--[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_VALUE = 100_000  # a JSON value (--override-generation-config) is a few KB


def merge_engine_args(cmd: EngineCommand, extra: Sequence[str]) -> EngineCommand:
    """`cmd` plus the passthrough flags, refusing any that contradict the plan.

    Raises ValueError with the reason; the caller turns it into a user-facing error."""
    argv = list(cmd.argv)
    result = list(argv)
    for flag, value in _pairs(list(extra)):
        if not _FLAG.fullmatch(flag):
            raise ValueError(f"{flag[:40]!r} is not a flag (--name or -x)")
        if value is not None and ("\0" in value or len(value) > _MAX_VALUE):
            raise ValueError(f"the value of {flag} holds a NUL byte or is over "
                             f"{_MAX_VALUE:,} characters")
        name = _canonical(flag)
        if name == "--served-model-name" and name not in argv and value:
            result += [name, value]  # the plan left the name to vLLM: the user may choose it
            continue
        if name in PLANNED:
            planned = argv[argv.index(name) + 1] if name in argv else None
            if value is None or planned is None or value != planned:
                raise ValueError(f"{flag} {value or ''}".strip() + " contradicts the plan ("
                                 + (f"{name} {planned}" if planned else f"{name} not set")
                                 + ")")
            continue  # the same value: nothing to add
        if name in BOOLEAN_PLANNED or name == "--no-enforce-eager":
            planned_on = "--enforce-eager" in argv
            wants_on = name == "--enforce-eager"
            if planned_on != wants_on:
                raise ValueError(f"{flag} contradicts the plan (enforce_eager {planned_on})")
            continue
        if name in UNMODELLED:
            raise ValueError(f"{flag} changes memory the plan does not model")
        result.append(flag)
        if value is not None:
            result.append(value)
    return replace(cmd, argv=tuple(result))
