"""The plan's JSON, documented beside the code that emits it.

`docs/plan-json.md` is generated from these tables (`python -m launcher.planner.schema >
docs/plan-json.md`), and `tests/test_plan_schema.py` checks both ways: every key a plan emits
is documented here, every key documented here is emitted, and the checked-in page is what
this module generates.
"""

from __future__ import annotations

import sys
from dataclasses import fields

from launcher.memory.components import COMPONENTS
from launcher.planner.plan import SCHEMA, Capacity, LaunchDecision, ModelInfo
from launcher.planner.request import PlanRequest

Section = dict[str, tuple[str, str]]  # key → (type, meaning)

TOP: Section = {
    "schema": ("string", f"`{SCHEMA}`"),
    "feasible": ("bool", "a configuration holds the model with the headroom on every GPU"),
    "reason": ("string \\| null", "why nothing fits (numbers of the closest candidate), or "
                                  "by how much the closest misses the service levels; null "
                                  "when feasible"),
    "model": ("object", "the model (below)"),
    "engine_version": ("string", "calibrated vLLM version planned for"),
    "engine_version_source": ("string", "the version and where it came from (`--engine-version`, "
                                        "installed package, newest calibrated)"),
    "inventory_source": ("string", "`nvml`, `simulated:<spec>`, `file:<path>` or "
                                   "`host:<reading>` (CPU backend)"),
    "request": ("object", "the options as the planner read them (below)"),
    "settings": ("object \\| null", "each option's `{value, source}` (`cli`, `env:LAUNCHER_…`, "
                                    "`profile:<key>`, `default`), secrets redacted"),
    "device": ("string", "`cuda`, or `cpu` for vLLM's CPU backend"),
    "headroom": ("number", "fraction of each GPU's total that stays free"),
    "decision": ("object \\| null", "the engine's arguments, under vLLM's own names (below)"),
    "nodes": ("array", "per node the plan uses: `{node, gpus, local_gpus, replicas, "
                       "pipeline_stages}` (global GPU indices, the node's own CUDA indices, "
                       "and what they run); one entry on one machine, empty when nothing "
                       "fits"),
    "weights": ("string \\| null", "the chosen precision in words, e.g. `fp8 W8A8 (online)`"),
    "gpus": ("array", "one entry per GPU used (below)"),
    "capacity": ("object \\| null", "what the KV cache holds (below)"),
    "cost": ("object \\| null", "with `--price-file` and a price for the GPU type: "
                               "`{usd_per_gpu_hour, gpus, usd_per_hour, "
                               "usd_per_million_tokens, price_date, price_source}` for the "
                               "GPUs the plan uses; null otherwise"),
    "predicted": ("object \\| null", "the speed model's figures for the chosen configuration "
                                    "and `request.workload` (below); null when nothing fits "
                                    "or the device has no speed figures"),
    "engine": ("object \\| null", "the exact command (below); null when nothing fits"),
    "decisions": ("array", "`{name, value, reason}` for every number of `decision`, plus "
                           "`weights` and `gpus`"),
    "candidates": ("array", "every configuration sized, with why it lost (below)"),
    "unavailable": ("array", "weight precisions not tried, each `{key, label, level, reason}`"),
    "suggestions": ("array of string", "when nothing fits, every way out with its numbers: "
                                       "the smallest GPU counts per precision on this and "
                                       "larger GPU types, the headroom at which it would fit "
                                       "here, a shorter context, fewer sequences, a lower "
                                       "precision; or the host memory the CPU backend needs; "
                                       "or, when only the service levels are missed, the "
                                       "fastest configuration's figures"),
    "notes": ("array of string", "assumptions (simulated GPUs, unverified configs), MLA, batch "
                                 "lowered, KV sized for the batch, \"calibrated from N boots "
                                 "on this host (+X GiB runtime per device)\", …"),
}

MODEL: Section = {
    "name": ("string", "profile key, directory name or repo id"),
    "source": ("string", "`profile:…`, `local:…` or `hub:…`"),
    "model_ref": ("string \\| null", "what `--model` gets: local directory or repo id"),
    "architecture": ("string", "`architectures[0]` of config.json"),
    "max_position_embeddings": ("int", "the model's maximum context"),
    "dtype": ("string", "checkpoint dtype (`bfloat16`, `float16`)"),
    "params": ("int \\| null", "parameter count"),
    "layers": ("int", "decoder layers"),
    "attention_heads": ("int", "query heads"),
    "kv_heads": ("int", "key/value heads"),
    "vocab_size": ("int", "vocabulary (before vLLM pads it to 64)"),
    "mla": ("bool", "multi-head latent attention (one compressed latent per token)"),
    "moe": ("bool", "mixture of experts"),
}

REQUEST: Section = {
    "headroom": ("number", "`--headroom`"),
    "max_model_len": ("int \\| null", "`--max-model-len` cap; null = the model's maximum"),
    "min_context": ("int \\| null", "`--min-context` floor; null = 4096 or the model maximum"),
    "min_concurrency": ("int", "`--min-concurrency`: full-length sequences per replica"),
    "quantization": ("string", "`--quantization` (`auto` walks the ladder)"),
    "kv_cache_dtype": ("string", "`--kv-cache-dtype` (`auto`: the planner may use fp8)"),
    "tp": ("int \\| null", "`--tp`; null = auto"),
    "pp": ("int \\| null", "`--pp`; null = auto"),
    "objective": ("string", "`--objective`: `throughput`, `latency` or `cost`"),
    "max_ttft_ms": ("number \\| null", "`--max-ttft-ms` service level; null = none"),
    "max_itl_ms": ("number \\| null", "`--max-itl-ms` service level; null = none"),
    "workload": ("object", "what speed is predicted for: `{input_len, output_len, "
                           "concurrency, request_rate, num_prompts}` (`request_rate` `\"inf\"`: "
                           "all at once; null: not given); chat defaults unless given"),
    "enforce_eager": ("bool", "`--enforce-eager`"),
    "device": ("string", "`cuda` or `cpu`"),
    "reserve_bytes": ("int", "extra bytes per device in the runtime budget: what a failed "
                             "launch taught plus `learned_bytes` (0 at first)"),
    "learned_bytes": ("int", "the part of `reserve_bytes` earlier verified boots on this host "
                             "taught (`launcher calibration show`; the note says from how many "
                             "and how); 0 without a matching boot"),
}

DECISION: Section = {
    "model": ("`--model`", "repo id, local directory, or the pre-quantized variant's repo id"),
    "dtype": ("`--dtype`", "`bfloat16` / `float16` (bf16 is cast to fp16 below compute "
                           "capability 8.0)"),
    "quantization": ("`--quantization`", "null when none; `fp8`/`bitsandbytes` are online "
                                         "(passed), `awq`/`gptq`/`mxfp4`/… come from the "
                                         "checkpoint (vLLM reads them)"),
    "kv_cache_dtype": ("`--kv-cache-dtype`", "`auto` (model dtype) or `fp8`"),
    "tensor_parallel_size": ("`--tensor-parallel-size`", ""),
    "pipeline_parallel_size": ("`--pipeline-parallel-size`", ""),
    "data_parallel_size": ("`--data-parallel-size`", ""),
    "max_model_len": ("`--max-model-len`", "always explicit"),
    "max_num_seqs": ("`--max-num-seqs`", "always explicit"),
    "max_num_batched_tokens": ("`--max-num-batched-tokens`", "always explicit"),
    "kv_cache_memory_bytes": ("`--kv-cache-memory-bytes`", "KV cache per GPU, exact: vLLM "
                                                           "skips its own sizing"),
    "gpu_memory_utilization": ("`--gpu-memory-utilization`", "only vLLM's start-up gate "
                                                             "`free ≥ U·T`; ≤ 1 − headroom; "
                                                             "null on the CPU backend"),
    "enforce_eager": ("`--enforce-eager`", ""),
    "nnodes": ("`--nnodes`", "nodes the engine runs on (1: one machine); TP stays inside a "
                             "node, PP stages cross nodes (`nodes`)"),
    "gpus_per_node": ("", "devices the engine uses on each node (TP × PP × DP on one "
                          "machine): what `launcher.engines.multinode.node_command` needs"),
}

GPU: Section = {
    "index": ("int", "CUDA index (or NUMA node on the CPU backend)"),
    "name": ("string", "device name"),
    "total_bytes": ("int", "CUDA-visible total"),
    "limit_bytes": ("int", "⌊(1 − headroom) · total⌋"),
    "planned": ("object", "bytes per component: " + ", ".join(f"`{c}`" for c in COMPONENTS)
                + " (`other`: held by other processes; `runtime`: CUDA context + NCCL/cuBLAS, "
                  "vLLM's non-torch memory, and any reserve a failed launch or earlier boots "
                  "taught)"),
    "planned_total_bytes": ("int", "sum of `planned`; ≤ `limit_bytes` on every GPU"),
    "headroom_bytes": ("int", "total − planned total: what stays free"),
    "headroom_fraction": ("number", "the same as a fraction of total"),
    "pipeline_stage": ("int", "the stage whose layers this GPU holds"),
    "replica": ("int", "the data-parallel replica it belongs to"),
}

CAPACITY: Section = {
    "kv_tokens_per_replica": ("int", "what vLLM logs as \"GPU KV cache size: N tokens\""),
    "kv_tokens_total": ("int", "over all replicas"),
    "num_blocks": ("int", "KV blocks per GPU"),
    "block_size": ("int \\| null", "tokens per block"),
    "max_model_len": ("int", "the context each sequence may use"),
    "full_length_sequences_per_replica": ("int", "full-length sequences held at once"),
    "full_length_sequences_total": ("int", "over all replicas"),
    "concurrency_per_replica": ("number", "vLLM's \"Maximum concurrency\" figure"),
    "replicas": ("int", "data-parallel replicas"),
    "state_bytes_per_sequence": ("int \\| null", "hybrid models (Mamba / Gated DeltaNet): one "
                                 "sequence's recurrent state per GPU; null otherwise"),
    "concurrent_sequences_per_replica": ("int \\| null", "hybrid models: sequences of "
                                         "max_model_len held at once (their capacity)"),
}

ENGINE: Section = {
    "argv": ("array of string", "the command line"),
    "env": ("object", "variables set on top of the launcher's environment "
                      "(`CUDA_VISIBLE_DEVICES` by UUID)"),
    "unset": ("array of string", "variables removed from it (they would override the plan)"),
    "shell": ("string", "one copy-pasteable line"),
}

CANDIDATE: Section = {
    "rung": ("string", "precision · KV dtype · full or shorter context"),
    "weights": ("string", "precision in words"),
    "quantization": ("string \\| null", "as in `decision`"),
    "kv_cache_dtype": ("string", "as in `decision`"),
    "tensor_parallel_size": ("int", ""),
    "pipeline_parallel_size": ("int", ""),
    "data_parallel_size": ("int", ""),
    "max_model_len": ("int", ""),
    "max_num_seqs": ("int", ""),
    "max_num_batched_tokens": ("int", ""),
    "kv_cache_memory_bytes": ("int \\| null", "null when it did not fit"),
    "kv_tokens": ("int \\| null", "null when it did not fit"),
    "concurrency": ("number \\| null", "full-length sequences held; null when it did not fit"),
    "status": ("string", "`chosen`, `fits` or `rejected` (memory, or the service levels)"),
    "reason": ("string", "why, in numbers (rendered from `rejection`)"),
    "rejection": ("object \\| null", "`{kind, gpu, component, short_bytes}`: `kind` is "
                                     "`no_room`, `engine_refuses`, `over_limit`, `kv_short`, "
                                     "`slo_miss` (fits, predicted above `--max-ttft-ms` / "
                                     "`--max-itl-ms`) or `lost` (fits, the objective chose "
                                     "another; `reason` says by how much); `gpu` the GPU "
                                     "that decided it; `component` "
                                     "its largest memory component (`kv_cache` when the "
                                     "cache is short); `short_bytes` by how much it missed"),
    "predicted": ("object \\| null", "the speed model's figures (below); null when it did "
                                    "not fit memory or the device has no speed figures"),
}

PREDICTED: Section = {
    "ttft_ms": ("number", "mean time to first token under `request.workload`, queueing "
                          "included"),
    "itl_ms": ("number", "mean time between tokens of one answer under the workload"),
    "output_tokens_per_s": ("number", "output tokens per second, all replicas together"),
    "output_tokens_per_s_per_user": ("number", "decode speed one client sees (1000 / ITL)"),
    "requests_per_s": ("number", "requests finished per second, all replicas"),
    "request_latency_ms": ("number", "TTFT + (output_len − 1) × ITL on `latency_basis`: what "
                                     "`--objective latency` ranks by"),
    "latency_basis": ("string", "`the workload`, or `one request at a time` when the workload "
                                "sends all prompts at once (a queue measures throughput)"),
    "basis_ttft_ms": ("number", "TTFT on `latency_basis`: what `--max-ttft-ms` is judged by"),
    "basis_itl_ms": ("number", "ITL on `latency_basis`: what `--max-itl-ms` is judged by"),
    "gpu_hours_per_million_tokens": ("number", "GPUs used × hours per million output tokens: "
                                               "what `--objective cost` ranks by (× the "
                                               "price per GPU-hour = USD)"),
    "gpus": ("int", "GPUs the configuration occupies (TP × PP × DP)"),
    "bound": ("string", "what limits it: `memory_bandwidth`, `compute`, `interconnect`, "
                        "`kv_capacity` or `scheduler`"),
}

SECTIONS: tuple[tuple[str, str, Section], ...] = (
    ("Top level", "", TOP),
    ("`model`", "", MODEL),
    ("`request`", "", REQUEST),
    ("`decision`", "Each key maps to the vLLM flag in the second column.", DECISION),
    ("`gpus[]`", "", GPU),
    ("`capacity`", "", CAPACITY),
    ("`engine`", "", ENGINE),
    ("`candidates[]`", "", CANDIDATE),
    ("`predicted` (top level and `candidates[].predicted`)",
     "From `launcher.speed` (the fitted speed model) for the candidate's own numbers.",
     PREDICTED),
)

# The typed objects and their documented sections must name the same keys.
TYPED: tuple[tuple[type, Section], ...] = (
    (ModelInfo, MODEL), (PlanRequest, REQUEST), (LaunchDecision, DECISION),
    (Capacity, CAPACITY),
)


def typed_drift() -> list[str]:
    out = []
    for cls, section in TYPED:
        names = {f.name for f in fields(cls)}
        for missing in sorted(names - set(section)):
            out.append(f"{cls.__name__}.{missing} is not documented")
        for extra in sorted(set(section) - names):
            out.append(f"documented {cls.__name__}.{extra} does not exist")
    return out


def markdown() -> str:
    lines = [
        "# Plan JSON (`launcher plan --json`, `serve --dry-run --json`)",
        "",
        "<!-- generated by `python -m launcher.planner.schema > docs/plan-json.md`; "
        "edit launcher/planner/schema.py -->",
        "",
        f"Schema id: `\"schema\": \"{SCHEMA}\"`. Bytes are integers; fractions are 0–1.",
        "Exit code: 0 when `feasible`, 3 when not, 2 on bad input (then nothing is printed on "
        "stdout). The same object is served at the control API's `/plan` and stored in the "
        "launch report.",
    ]
    for title, intro, section in SECTIONS:
        lines += ["", f"## {title}", ""]
        if intro:
            lines += [intro, ""]
        head = ("key", "vLLM flag", "notes") if section is DECISION else ("key", "type",
                                                                            "meaning")
        lines += [f"| {' | '.join(head)} |", "|---|---|---|"]
        lines += [f"| `{k}` | {t} | {m} |" for k, (t, m) in section.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
