"""Wall time of dry estimates and dry-run plans, as a user runs them (a fresh process each).

    python bench/speed.py [--runs 7]

Prints median / min / max seconds for:
  * `launcher estimate deepseek-67b --gpus 2xH100-80GB --tp 2 --json` (target ≤ 0.5 s)
  * the same on a local checkpoint of 100 safetensors shards (target ≤ 1 s)
  * `serve deepseek-67b --dry-run --gpus 8xH100-80GB --json` (target ≤ 0.5 s)
  * `launcher speed llama-3.1-70b --gpus 4xH100-80GB --json`: plan + speed (target ≤ 0.5 s)
  * `serve deepseek-67b --dry-run --gpus 1xRTX4090 --json`: nothing fits, so it also works
    out what would (no target; reported)
  * `launcher plan llama-3.1-405b|deepseek-v3 --gpus 2x8xH100-80GB --json`: two nodes of 8
    (TP inside a node, PP across; target ≤ 0.5 s)
  * `launcher fit llama-3.1-70b --price-file profiles/prices.example.yaml --json`: one plan
    per catalog GPU type × 1/2/4/8 GPUs, each predicted and priced (target ≤ 2 s)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str], runs: int, entry: str = "main") -> list[float]:
    cmd = [sys.executable, "-c", f"from launcher.cli import {entry}; {entry}()", *args]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        out.append(time.perf_counter() - t)
        if p.returncode not in (0, 3):
            raise SystemExit(f"failed: {' '.join(args)}\n{p.stderr}")
    return out


def hundred_shards(d: Path) -> Path:
    """A Llama-70B-shaped config with its 80 layers' tensor names spread over 100 shards."""
    cfg = json.loads((ROOT / "tests/data/configs/meta-llama--llama-3-1-70b-instruct.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg))
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{n}" for i in range(80) for n in (
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
            "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight")]
    weight_map = {}
    for s in range(100):
        shard = f"model-{s + 1:05d}-of-00100.safetensors"
        part = names[s::100]
        save_file({n: np.zeros((4, 4), np.float16) for n in part}, d / shard)
        weight_map.update({n: shard for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {},
                                                               "weight_map": weight_map}))
    return d


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    n = ap.parse_args().runs
    rows = []
    rows.append(("estimate deepseek-67b 2xH100-80GB tp2 --json (profile)",
                 timed(["estimate", "deepseek-67b", "--gpus", "2xH100-80GB", "--tp", "2",
                        "--json"], n), 0.5))
    with tempfile.TemporaryDirectory() as tmp:
        d = hundred_shards(Path(tmp))
        rows.append(("estimate <local dir, 100 shards> 2xH100-80GB tp2 --json",
                     timed(["estimate", str(d), "--gpus", "2xH100-80GB", "--tp", "2", "--json"],
                           n), 1.0))
    rows.append(("speed llama-3.1-70b 4xH100-80GB --json",
                 timed(["speed", "llama-3.1-70b", "--gpus", "4xH100-80GB", "--json"], n), 0.5))
    rows.append(("serve deepseek-67b --dry-run 8xH100-80GB --json",
                 timed(["deepseek-67b", "--dry-run", "--gpus", "8xH100-80GB", "--json"], n,
                       "serve_main"), 0.5))
    rows.append(("serve deepseek-67b --dry-run 1xRTX4090 --json (does not fit)",
                 timed(["deepseek-67b", "--dry-run", "--gpus", "1xRTX4090", "--json"], n,
                       "serve_main"), None))
    for model in ("llama-3.1-405b", "deepseek-v3"):  # two nodes: TP inside, PP across
        rows.append((f"plan {model} 2x8xH100-80GB --json (2 nodes)",
                     timed(["plan", model, "--gpus", "2x8xH100-80GB", "--json"], n), 0.5))
    rows.append(("fit llama-3.1-70b --price-file (whole catalog) --json",
                 timed(["fit", "llama-3.1-70b", "--price-file", "profiles/prices.example.yaml",
                        "--json"], n), 2.0))
    print(f"{'command':<58} {'median s':>9} {'min':>7} {'max':>7} {'target':>7}")
    for name, times, target in rows:
        med = statistics.median(times)
        verdict = "" if target is None else ("  ok" if med <= target else "  SLOW")
        print(f"{name:<58} {med:>9.3f} {min(times):>7.3f} {max(times):>7.3f} "
              f"{'–' if target is None else f'{target:.1f}':>7}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
