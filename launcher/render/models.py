"""`launcher models` and `launcher estimate` for people; the same dicts go to `--json`."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from launcher.units import GiB, fmt_gib


def models_rows() -> list[dict[str, Any]]:
    from launcher.models.config import spec_from_config
    from launcher.models.profiles import all_profiles, profile_config

    rows: list[dict[str, Any]] = []
    for p in all_profiles():
        if p.local_dir:
            rows.append({"profile": p.key, "aliases": list(p.aliases), "repo_id": p.repo_id,
                         "name": p.name, "local_dir": p.local_dir})
            continue
        s = spec_from_config(profile_config(p), name=p.key, source=f"profile:{p.key}",
                             origin=str(p.path))
        rows.append({
            "profile": p.key, "aliases": list(p.aliases), "repo_id": p.repo_id, "name": p.name,
            "architecture": s.architecture, "params": p.params, "layers": s.num_layers,
            "hidden_size": s.hidden_size, "attention": "MLA" if s.mla else
            f"{s.num_attention_heads} heads / {s.num_kv_heads} KV",
            "moe": f"{s.moe.num_experts} experts, top-{s.moe.experts_per_token}" if s.moe else None,
            "max_context": s.max_position_embeddings, "dtype": s.dtype,
            "quantization": s.quantization.method if s.quantization else None,
            "variants": [v.name for v in p.variants],
        })
    return rows


def models_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Built-in model profiles (launcher models --json for every alias)")
    for col in ("profile", "params", "layers", "attention", "MoE", "context", "weights"):
        t.add_column(col, no_wrap=col == "profile")
    for r in rows:
        params = f"{r['params'] / 1e9:.1f}B" if r.get("params") else "-"
        t.add_row(r["profile"], params, str(r.get("layers", "-")), r.get("attention", "-"),
                  r.get("moe") or "-", str(r.get("max_context", "-")),
                  r.get("quantization") or r.get("dtype", "-"))
    return t


def _gib_figure(v: float | None) -> str:
    """The estimate's figures are GiB already (vLLM's own unit)."""
    return fmt_gib(None if v is None else v * GiB)


def estimate_panel(e: dict[str, Any]) -> Panel:
    head = (f"model {e['model']['name']} ({e['model']['source']}) on {e['gpu']}, "
            f"{_gib_figure(e['total_gib'])} CUDA-visible · vLLM {e['engine_version_source']}")
    if not e["starts"]:
        body = Group(head, f"[bold red]vLLM would not start:[/] {e['error']}")
        return Panel(body, title="estimate", border_style="red")
    t = Table(show_header=True, box=None)
    t.add_column("worst rank")
    t.add_column("memory", justify="right")
    for label, key in (("weights", "weights_gib"), ("activation peak", "activation_gib"),
                       ("non-torch", "non_torch_gib"), ("CUDA graphs", "cuda_graph_gib"),
                       ("KV cache", "kv_cache_gib"), ("peak used", "peak_used_gib")):
        t.add_row(label, _gib_figure(e[key]))
    r = e["resolved"]
    lines: list[RenderableType] = [
        head, t,
        f"KV cache: {e['kv_cache_tokens']:,} tokens · max concurrency at "
        f"{r['max_model_len']:,} tokens: {e['max_concurrency']:.2f}x",
        f"resolved: dtype {r['dtype']}, max_num_seqs {r['max_num_seqs']}, "
        f"max_num_batched_tokens {r['max_num_batched_tokens']} ({r['batch_defaults']}), "
        f"gpu_memory_utilization {r['gpu_memory_utilization']}",
    ]
    lines += [f"note: {n}" for n in e["notes"] + e["model"]["assumptions"]]
    return Panel(Group(*lines), title="estimate", border_style="green")
