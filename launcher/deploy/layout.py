"""A plan placed on nodes: how many, how many devices each, and every node's exact command.

The per-node commands are `launcher.engines.multinode.node_command` applied to the plan's
single-node command (`plan.engine`), never rebuilt here, so what a manifest or a script runs is
what `serve --nnodes` would run. The master address is a placeholder (a shell expansion such
as `${LWS_LEADER_ADDRESS}`) that each renderer turns into its own syntax.

Nodes come from the plan when its GPUs span nodes (`--gpus 2x8xH100-80GB`: `decision.nnodes`),
else from `--nodes` (a one-machine plan spread over nodes of the same GPUs), else 1; devices
per node = TP·PP·DP / nodes. A count that does not divide the plan's devices, a spread the
planner would refuse for nodes (`launcher.planner.nodes.why_not`: a TP group across nodes),
or a layout vLLM cannot run, is an `InputError` (exit 2); an infeasible plan is a
`DoesNotFitError` (exit 3) carrying the plan's own reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.engines.multinode import DEFAULT_MASTER_PORT, node_command
from launcher.errors import DoesNotFitError, InputError
from launcher.memory.calibration import Device
from launcher.memory.components import Component
from launcher.planner.nodes import Nodes, why_not
from launcher.planner.plan import EngineCommand, Plan
from launcher.redact import secret_flag_values


@dataclass(frozen=True)
class NodeLayout:
    """The plan on `nnodes` nodes: one command per node rank (rank 0 serves the API)."""

    nnodes: int
    gpus_per_node: int
    tp: int
    pp: int
    dp: int
    master_addr: str
    master_port: int
    commands: tuple[EngineCommand, ...]  # index = node rank
    port: int  # the OpenAI API's port on node 0
    device: Device
    weight_bytes: int  # one replica's weights (what every node downloads, at most)

    @property
    def leader(self) -> EngineCommand:
        return self.commands[0]

    @property
    def workers(self) -> tuple[EngineCommand, ...]:
        return self.commands[1:]

    @property
    def shape(self) -> str:
        """"2 nodes × 8 GPUs (TP8 × PP2 × DP1)" — for comments."""
        dev = "GPU" if self.device == Device.CUDA else "CPU rank"
        return (f"{self.nnodes} node{'s' if self.nnodes > 1 else ''} × {self.gpus_per_node} "
                f"{dev}{'s' if self.gpus_per_node > 1 else ''} "
                f"(TP{self.tp} × PP{self.pp} × DP{self.dp})")


def plan_nodes(plan: Plan) -> int | None:
    """The node count the plan was made for, when it spans nodes (`--gpus 2x8xH100-80GB`);
    None for a plan on one machine, which `--nodes` may spread."""
    d = plan.decision
    return d.nnodes if d is not None and d.nnodes > 1 else None


def layout(plan: Plan, *, nodes: int | None, master_addr: str,
           socket_ifname: str | None = None) -> NodeLayout:
    """Every node's command for `plan` on `nodes` nodes (None: the plan's count, else 1)."""
    d, engine = plan.decision, plan.engine
    if not plan.feasible or d is None or engine is None:
        raise DoesNotFitError(f"nothing to emit: {plan.reason or 'the plan is not feasible'}",
                              fix="Make the plan fit first (see `launcher plan` without "
                                  "--emit); only a feasible plan has commands to deploy.")
    secrets = secret_flag_values(engine.argv)
    if secrets:
        raise InputError("the engine command holds a secret (--api-key / --hf-token in "
                         "--engine-args); --emit writes it into a file others read",
                         fix="Drop the flag and give the secret through the environment "
                             "(vLLM reads VLLM_API_KEY and HF_TOKEN); the manifests take "
                             "HF_TOKEN from a Secret.")
    planned = plan_nodes(plan)
    if nodes is not None and planned is not None and nodes != planned:
        raise InputError(f"--nodes {nodes} contradicts the plan, made for {planned} nodes",
                         fix=f"Drop --nodes (the plan's {planned} is used) or plan again.")
    n = nodes or planned or 1
    tp, pp, dp = d.tensor_parallel_size, d.pipeline_parallel_size, d.data_parallel_size
    devices = tp * pp * dp
    if devices % n:
        raise InputError(f"--nodes {n} does not divide the plan's {devices} devices "
                         f"(TP{tp} × PP{pp} × DP{dp})",
                         fix="Give a node count that divides them evenly, or plan for GPUs "
                             "that split over the nodes (--tp/--pp).",
                         hint="launcher plan MODEL --gpus 16xH100-80GB --emit lws --nodes 2")
    gpn = devices // n
    if planned is None and n > 1:
        # The planner's own rule for nodes (a TP group never straddles them), so a
        # one-machine plan spread with --nodes cannot run where a plan on nodes is refused.
        why = why_not(tp, pp, Nodes(n, gpn))
        if why:
            raise InputError(f"the plan cannot run on {n} nodes of {gpn} devices: {why}",
                             fix=f"Plan for the nodes instead of spreading a one-machine plan: "
                                 f"--gpus {n}x{gpn}xTYPE, so the planner keeps TP within a "
                                 f"node (or give --nodes so that TP{tp} × PP{pp} fits on one "
                                 "node).",
                             hint=f"launcher plan MODEL --gpus {n}x{gpn}x{_gpu_type(plan)} "
                                  "--emit lws")
    master_port = _int_flag(engine, "--master-port") or DEFAULT_MASTER_PORT
    rpc = _int_flag(engine, "--data-parallel-rpc-port")
    ep = "--enable-expert-parallel" in engine.argv or "-ep" in engine.argv
    try:
        cmds = tuple(node_command(engine, nnodes=n, node_rank=r, master_addr=master_addr,
                                  master_port=master_port, tp=tp, pp=pp, dp=dp,
                                  gpus_per_node=gpn, dp_rpc_port=rpc, expert_parallel=ep,
                                  socket_ifname=socket_ifname if n > 1 else None)
                     for r in range(n))
    except ValueError as e:
        raise InputError(f"the plan cannot run on {n} nodes of {gpn} devices: {e}",
                         fix="Choose a node count where each replica's TP×PP fits on whole "
                             "nodes, or TP×PP spans them with DP 1.") from None
    port = _int_flag(cmds[0], "--port") or 8000
    return NodeLayout(nnodes=n, gpus_per_node=gpn, tp=tp, pp=pp, dp=dp,
                      master_addr=master_addr, master_port=master_port, commands=cmds,
                      port=port, device=plan.device, weight_bytes=replica_weight_bytes(plan))


def replica_weight_bytes(plan: Plan) -> int:
    """One replica's weights: the sum over its GPUs (what a start downloads and loads)."""
    return sum(b.planned[Component.WEIGHTS] for b in plan.budgets if b.replica == 0)


def _gpu_type(plan: Plan) -> str:
    """The catalog type of `--gpus 8xH100-80GB` (for a hint), else TYPE."""
    given = (plan.settings or {}).get("gpus")
    value = given.get("value") if isinstance(given, dict) else None
    return value.rsplit("x", 1)[-1] if isinstance(value, str) and "x" in value else "TYPE"


def _int_flag(cmd: EngineCommand, name: str) -> int | None:
    v = cmd.flag(name)
    return int(v) if v is not None and v.isdigit() else None
