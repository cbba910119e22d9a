"""The parts a GPU's memory is budgeted in, in the order they are stacked.

One list for the planner, verification, metrics and every renderer, so a new component (a
hybrid model's state cache, say) is added once.
"""

from __future__ import annotations

from enum import StrEnum


class Component(StrEnum):
    OTHER = "other"  # held by other processes before launch
    RUNTIME = "runtime"  # CUDA context, NCCL, non-torch memory, learned reserve
    WEIGHTS = "weights"
    ACTIVATION = "activation"  # peak of vLLM's profiling forward pass
    CUDA_GRAPHS = "cuda_graphs"
    KV_CACHE = "kv_cache"


COMPONENTS: tuple[Component, ...] = tuple(Component)

# What people read, long (status page, tables) and short (bar legends).
LABELS: dict[Component, str] = {
    Component.OTHER: "other processes", Component.RUNTIME: "runtime",
    Component.WEIGHTS: "weights", Component.ACTIVATION: "activation",
    Component.CUDA_GRAPHS: "CUDA graphs", Component.KV_CACHE: "KV cache",
}
SHORT_LABELS: dict[Component, str] = {
    Component.OTHER: "other", Component.RUNTIME: "runtime", Component.WEIGHTS: "weights",
    Component.ACTIVATION: "activation", Component.CUDA_GRAPHS: "graphs",
    Component.KV_CACHE: "KV",
}
