"""One node's part of a multi-node vLLM engine, from the single-node command the plan holds.

vLLM runs across nodes natively, with its multiprocessing executor and no Ray (vLLM 0.32,
`engine/arg_utils.py` and `entrypoints/cli/serve.py`; facts measured in
shared/notes/vllm-multinode-on-cpu.md). Every node runs the same engine flags; two layouts:

    TP×PP across nodes   --nnodes N --node-rank R --master-addr A --master-port P
                         --distributed-executor-backend mp
    DP across nodes      --data-parallel-size D --data-parallel-size-local D/N
                         --data-parallel-address A [--data-parallel-rpc-port P]
                         [--enable-expert-parallel], and on node R > 0
                         --data-parallel-start-rank R·D/N (on node 0 it would switch vLLM
                         to hybrid load balancing: arg_utils.py, 0.32)

Node 0 serves the OpenAI API (its command keeps the plan's entry point); every other node
runs `vllm serve … --headless` through `launcher.engines.vllm_entry` (only `vllm serve` acts
on --headless, and the CPU package's `vllm` script cannot start).

`master_addr` is kept as text, never checked as an address: manifests are rendered with
placeholders such as "$(LWS_LEADER_ADDRESS)". The plan's CUDA_VISIBLE_DEVICES names every
node's GPUs, so it is dropped here: each node sets its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from launcher.planner.plan import EngineCommand

ENTRY = "launcher.engines.vllm_entry"
DEFAULT_MASTER_PORT = 29501  # vLLM's ParallelConfig.master_port

# Flags this module sets; any value the single-node command had for them is replaced.
PARALLEL_FLAGS = ("--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size",
                  "--data-parallel-size-local", "--data-parallel-start-rank",
                  "--data-parallel-address", "--data-parallel-rpc-port", "--nnodes",
                  "--node-rank", "--master-addr", "--master-port",
                  "--distributed-executor-backend")
SWITCHES = ("--headless", "--enable-expert-parallel")
# vLLM's short spellings of those flags (vLLM 0.32 engine/arg_utils.py, `add_argument` calls:
# -pp 1140, -n 1145, -r 1146, -tp 1177, -dp 1209, -dpr 1222, -dpl 1228, -dpa 1234,
# -dpp 1240, -ep 1274). A value passed through --engine-args as `-tp 2` would otherwise stay
# next to the `--tensor-parallel-size` set here, and argparse keeps the last one silently.
ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size",
           "-dp": "--data-parallel-size", "-dpl": "--data-parallel-size-local",
           "-dpr": "--data-parallel-start-rank", "-dpa": "--data-parallel-address",
           "-dpp": "--data-parallel-rpc-port", "-n": "--nnodes", "-r": "--node-rank",
           "-ep": "--enable-expert-parallel"}


def _canonical(name: str) -> str:
    """The long flag `name` stands for: an alias resolved, and `_` in a long name read as
    `-` (vLLM's FlexibleArgumentParser does the same, utils/argparse_utils.py 0.32)."""
    if name.startswith("--"):
        return "--" + name[2:].replace("_", "-")
    return ALIASES.get(name, name)


@dataclass(frozen=True)
class Layout:
    """How TP×PP×DP ranks fall on `nnodes` nodes of `gpus_per_node` devices each."""

    nnodes: int
    tp: int
    pp: int
    dp: int
    gpus_per_node: int

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def spans_nodes(self) -> bool:
        """One replica's TP×PP group crosses node boundaries (else DP spans them)."""
        return self.tp * self.pp > self.gpus_per_node

    @property
    def dp_local(self) -> int:
        return self.dp // self.nnodes

    def problem(self) -> str | None:
        """Why vLLM could not run this layout with every device used, or None."""
        sizes = {"--nnodes": self.nnodes, "TP": self.tp, "PP": self.pp, "DP": self.dp,
                 "devices per node": self.gpus_per_node}
        for name, v in sizes.items():
            if v < 1:
                return f"{name} {v} is below 1"
        devices = self.nnodes * self.gpus_per_node
        if self.world_size != devices:
            return (f"TP{self.tp}×PP{self.pp}×DP{self.dp} = {self.world_size} ranks, but "
                    f"{self.nnodes} nodes × {self.gpus_per_node} devices = {devices}")
        if self.spans_nodes and self.dp != 1:
            return (f"TP{self.tp}×PP{self.pp} spans nodes of {self.gpus_per_node} devices; "
                    "data parallelism on top of it is not supported")
        if not self.spans_nodes and self.dp % self.nnodes:
            return f"DP{self.dp} does not split evenly over {self.nnodes} nodes"
        return None


def _strip(argv: list[str]) -> list[str]:
    """`argv` without the flags (and their values) this module sets."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name = _canonical(a.split("=", 1)[0])
        if name in PARALLEL_FLAGS:
            i += 1 if "=" in a else 2
            continue
        if name in SWITCHES and "=" not in a:
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def node_command(cmd: EngineCommand, *, nnodes: int, node_rank: int, master_addr: str,
                 master_port: int, tp: int, pp: int, dp: int, gpus_per_node: int,
                 dp_rpc_port: int | None = None, expert_parallel: bool = False,
                 host_ip: str | None = None,
                 socket_ifname: str | None = None) -> EngineCommand:
    """Node `node_rank`'s command; raises ValueError for a layout vLLM cannot run.

    `cmd` is the plan's single-node command (`python -m <entry> --model … --tensor-parallel-
    size …`); `host_ip` and `socket_ifname` become VLLM_HOST_IP and GLOO_SOCKET_IFNAME."""
    layout = Layout(nnodes, tp, pp, dp, gpus_per_node)
    problem = layout.problem()
    if problem:
        raise ValueError(problem)
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node rank {node_rank} is outside 0..{nnodes - 1}")
    argv = list(cmd.argv)
    if len(argv) < 3 or argv[1] != "-m":
        raise ValueError("the engine command does not start with `python -m <module>`")
    python, rest = argv[0], _strip(argv[3:])
    entry = argv[:3] if node_rank == 0 else [python, "-m", ENTRY, "serve"]
    flags = ["--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp),
             "--data-parallel-size", str(dp)]
    if nnodes > 1 and layout.spans_nodes:
        flags += ["--nnodes", str(nnodes), "--node-rank", str(node_rank),
                  "--master-addr", master_addr, "--master-port", str(master_port),
                  "--distributed-executor-backend", "mp"]
    elif nnodes > 1:
        local = layout.dp_local
        flags += ["--data-parallel-size-local", str(local), "--data-parallel-address",
                  master_addr]
        if node_rank > 0:  # on node 0 a start rank would switch vLLM to hybrid load balancing
            flags += ["--data-parallel-start-rank", str(node_rank * local)]
        if dp_rpc_port is not None:
            flags += ["--data-parallel-rpc-port", str(dp_rpc_port)]
    if expert_parallel:
        flags.append("--enable-expert-parallel")
    if node_rank > 0:
        flags.append("--headless")
    env = dict(cmd.env)
    if nnodes > 1:
        env.pop("CUDA_VISIBLE_DEVICES", None)
    if host_ip:
        env["VLLM_HOST_IP"] = host_ip
    if socket_ifname:
        env["GLOO_SOCKET_IFNAME"] = socket_ifname
    return replace(cmd, argv=(*entry, *rest, *flags), env=env)
