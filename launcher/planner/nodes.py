"""Planning on several nodes: which shapes vLLM can run across them, and what crosses the link.

vLLM's own guidance (docs/serving/parallelism_scaling.md; shared/notes/vllm-multinode-on-cpu.md
§1): tensor parallel inside a node, pipeline parallel across nodes (Llama-3.1-405B on two
8-GPU nodes: `-tp 8 -pp 2`). A tensor-parallel group all-reduces twice per layer, so it stays
on the node's NVLink; a pipeline stage boundary sends one activation per token, the only
traffic that may cross the (much slower) link between nodes. The engine side
(`launcher.engines.multinode`) runs every device of every node, so the shapes here are:

* a replica inside one node: TP × PP divides the GPUs per node; DP = all GPUs / (TP × PP),
  spread evenly over the nodes;
* a replica across all nodes: TP divides the GPUs per node, TP × PP = all GPUs, DP = 1; its
  stages fill the nodes in order, so `nodes − 1` stage boundaries cross the link.

Nodes must hold the same number of GPUs (vLLM starts world_size / nnodes ranks on each).
Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from launcher.errors import InputError
from launcher.hardware.inventory import GpuInfo

# The link assumed between nodes (no snapshot can measure it): 200 Gb/s, HDR InfiniBand or
# 200 GbE RoCE, a conservative floor. DGX H100/H200 nodes have eight single-port ConnectX-7
# "up to 400 Gb/s InfiniBand/Ethernet" (NVIDIA DGX BasePOD reference architecture, "Core
# Components": docs.nvidia.com/dgx-basepod/reference-architecture-infrastructure-foundation-
# enterprise-ai/latest/core-components.html); one pipeline hand-off uses one of them.
INTERNODE_GBITS = 200.0
INTERNODE_BYTES_PER_S = INTERNODE_GBITS / 8 * 1e9
# One point-to-point send over the fabric, NCCL's send/recv path included: an ASSUMED round
# figure (no measurement in the repository), small against a decode step's milliseconds.
INTERNODE_LATENCY_S = 20e-6
LINK_NOTE = (f"InfiniBand/RoCE ≥ {INTERNODE_GBITS:.0f} Gb/s assumed between nodes; pipeline "
             "stages cross it because a stage boundary sends one activation per token, while "
             "tensor parallelism would all-reduce twice per layer, so TP stays on each node's "
             "NVLink/PCIe")
# vLLM 0.32 `model_executor/layers/fused_moe/config.py` (FusedMoEParallelConfig.make):
# with DP > 1 the MoE layers shard over DP × TP ranks (whole experts per rank with
# --enable-expert-parallel), attention stays per DP rank. The memory model sizes every DP
# replica with all experts at 1/TP, so it cannot plan that layout yet.
EP_UNAVAILABLE = (
    "data + expert parallel across nodes (vLLM -dp with --enable-expert-parallel: attention "
    "per DP rank, experts split over DP×TP ranks, as vLLM's expert-parallel deployment guide "
    "recommends for DeepSeek-V3/R1) is not sized by the memory model yet (experts per rank "
    "under DP and the all-to-all buffers are not modelled): the plan uses TP inside a node × "
    "PP across nodes")
MOE_DP_NOTE = (
    "MoE with data parallel across nodes: vLLM shards the MoE layers over all DP×TP ranks "
    "(fused_moe/config.py), so every MoE layer exchanges tokens between the nodes and the "
    "replicas step together; the memory plan (every replica holds all experts at 1/TP) is "
    "conservative, the speed prediction (independent replicas) optimistic")


@dataclass(frozen=True)
class Nodes:
    """How many nodes the GPUs are on, and how many each holds."""

    count: int
    gpus_per_node: int

    @property
    def multi(self) -> bool:
        return self.count > 1


def nodes_of(gpus: Sequence[GpuInfo]) -> Nodes:
    """The nodes of an inventory; InputError when they hold different numbers of GPUs."""
    per = Counter(g.node for g in gpus)
    if len(per) <= 1:
        return Nodes(1, len(gpus))
    sizes = sorted(set(per.values()))
    if len(sizes) > 1:
        listing = ", ".join(f"node {k}: {per[k]}" for k in sorted(per))
        raise InputError(
            f"The nodes hold different numbers of GPUs ({listing}); vLLM starts the same "
            "number of ranks on every node.",
            fix="Plan on nodes with equal GPU counts (leave the extra GPUs out of the "
                "snapshot or the spec).",
            hint="launcher plan MODEL --gpus 2x8xH100-80GB")
    return Nodes(len(per), sizes[0])


def shape_fits_nodes(tp: int, pp: int, nodes: Nodes) -> bool:
    """Whether vLLM runs TP × PP (× the DP that fills every GPU) on these nodes with TP groups
    inside a node."""
    if not nodes.multi:
        return True
    g, total = nodes.gpus_per_node, nodes.count * nodes.gpus_per_node
    if g % tp:
        return False  # a TP group would straddle two nodes
    return g % (tp * pp) == 0 or tp * pp == total


def why_not(tp: int, pp: int, nodes: Nodes) -> str:
    """Why a forced --tp/--pp cannot run on these nodes ('' when it can)."""
    if shape_fits_nodes(tp, pp, nodes):
        return ""
    g, total = nodes.gpus_per_node, nodes.count * nodes.gpus_per_node
    if g % tp:
        return (f"TP{tp} does not divide the {g} GPUs of a node: a tensor-parallel group "
                "would straddle nodes")
    return (f"TP{tp}×PP{pp} = {tp * pp} GPUs neither divides a node's {g} nor uses all "
            f"{total} GPUs of the {nodes.count} nodes")


def replica_nodes(gpus: Sequence[GpuInfo], gpus_per_replica: int) -> int:
    """Nodes one replica spans (1 when its TP × PP group fits on a node)."""
    return len({g.node for g in gpus[:gpus_per_replica]}) or 1


def crossing_hops(gpus: Sequence[GpuInfo], tp: int, pp: int) -> int:
    """Pipeline stage boundaries of one replica that cross from one node to the next."""
    first = gpus[:tp * pp]
    stage_node = [first[s * tp].node for s in range(pp) if s * tp < len(first)]
    return sum(1 for a, b in pairwise(stage_node) if a != b)


def layout_lines(gpus: Sequence[GpuInfo], tp: int, pp: int) -> list[str]:
    """Per node: which replicas and stages its GPUs run (`node 1: GPUs 8-15 · replica 0
    stage 1 (TP8)`)."""
    n = tp * pp
    by_node: dict[int, list[tuple[int, int, int]]] = {}
    for i, g in enumerate(gpus):
        by_node.setdefault(g.node, []).append((g.index, i // n, (i % n) // tp))
    out = []
    for node, rows in sorted(by_node.items()):
        parts: dict[tuple[int, int], list[int]] = {}
        for index, rep, stage in rows:
            parts.setdefault((rep, stage), []).append(index)
        desc = "; ".join(
            f"replica {rep}" + (f" stage {stage}" if pp > 1 else "")
            + f" on GPU{'s' if len(ix) > 1 else ''} {_span(ix)} (TP{tp})"
            for (rep, stage), ix in sorted(parts.items()))
        out.append(f"node {node}: {desc}")
    return out


def _span(ix: list[int]) -> str:
    ix = sorted(ix)
    if len(ix) > 1 and ix == list(range(ix[0], ix[-1] + 1)):
        return f"{ix[0]}-{ix[-1]}"
    return ",".join(str(i) for i in ix)
