"""`--emit lws`: a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) per variant, and a Service.

One LWS group = one engine over `size` pods, one pod per node (kubernetes-sigs/lws
docs/examples/vllm/GPU/lws.yaml; vLLM docs/deployment/frameworks/lws.md). LWS gives every
pod LWS_LEADER_ADDRESS, LWS_GROUP_SIZE and LWS_WORKER_INDEX; the containers read them through
the shell (`sh -c`), so each pod runs exactly `node_command`'s command for its index:

    leader (index 0)   the plan's entry point, serves the OpenAI API, carries the probes
    workers (1..N-1)   `vllm serve … --headless` through launcher.engines.vllm_entry, picked
                       by a `case` on LWS_WORKER_INDEX (one branch per rank, each exact)

`restartPolicy: RecreateGroupOnPodRestart`: a dead pod takes its group down (vLLM cannot
re-admit a rank), and `startupPolicy: LeaderCreated`, because the leader blocks in
torch.distributed until its workers join, so they cannot wait for it to be ready.

The second LWS, `<name>-launcher`, runs the launcher's own multi-node mode in every pod
(`serve MODEL --nnodes N --node-rank $(LWS_WORKER_INDEX) --master-addr
$(LWS_LEADER_ADDRESS)`, Kubernetes' own `$(VAR)` expansion); it starts at replicas 0. Why the
plan's command is the default is said in the file's header (`HEADER`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from launcher import policy
from launcher.deploy import kube
from launcher.deploy.layout import NodeLayout
from launcher.deploy.words import expand, line
from launcher.memory.calibration import Device
from launcher.planner.plan import EngineCommand, Plan
from launcher.units import GiB

API_VERSION = "leaderworkerset.x-k8s.io/v1"
LEADER_ADDRESS = expand("LWS_LEADER_ADDRESS")
WORKER_INDEX = expand("LWS_WORKER_INDEX")
GROUP_SIZE = expand("LWS_GROUP_SIZE")
NAME_LABEL = "app.kubernetes.io/name"
ROLE_LABEL = "role"  # vLLM's and LWS's examples select the leader by role: leader
DEFAULT_IFNAME = "eth0"  # a pod's own interface


@dataclass(frozen=True)
class KubeSpec:
    """What the manifest needs beyond the plan."""

    name: str  # DNS-1123 name of the LWS (the launcher variant adds -launcher)
    image: str  # the launcher image (docker/Dockerfile): vLLM + launcher, `python3`
    model_arg: str  # MODEL as the user gave it (the launcher variant plans it again)
    ifname: str = DEFAULT_IFNAME
    control_port: int = policy.DEFAULT_CONTROL_PORT
    launcher_env: Mapping[str, str] | None = None  # LAUNCHER_* settings the plan was made with


def group_check(nnodes: int) -> str:
    """A pod of a resized group stops at once instead of hanging in the rendezvous."""
    return (f'[ "{GROUP_SIZE}" = {nnodes} ] || {{ echo "planned for {nnodes} nodes, the group '
            f'has {GROUP_SIZE}: emit the manifest again for that many" >&2; exit 2; }}')


def _exec(cmd: EngineCommand, common: Mapping[str, str]) -> str:
    """`exec env -u … [K=V of this rank only] argv`: the container's env holds `common`."""
    own = {k: v for k, v in cmd.env.items() if common.get(k) != v}
    return "exec " + line(replace(cmd, env=own), (LEADER_ADDRESS,))


def _common_env(cmds: tuple[EngineCommand, ...]) -> dict[str, str]:
    """The variables every command sets alike (they go into the container's `env:`)."""
    first = dict(cmds[0].env)
    return {k: v for k, v in first.items() if all(c.env.get(k) == v for c in cmds[1:])}


def leader_script(lay: NodeLayout) -> str:
    lines = [group_check(lay.nnodes)] if lay.nnodes > 1 else []
    return "\n".join([*lines, _exec(lay.leader, _common_env((lay.leader,))), ""])


def worker_script(lay: NodeLayout) -> str:
    common = _common_env(lay.workers)
    out = [group_check(lay.nnodes), f'case "{WORKER_INDEX}" in']
    for rank, cmd in enumerate(lay.workers, start=1):
        out += [f"  {rank})", f"    {_exec(cmd, common)}", "    ;;"]
    out += ["  *)", f'    echo "no command for worker index {WORKER_INDEX} '
            f'(1..{lay.nnodes - 1} planned)" >&2', "    exit 2", "    ;;", "esac", ""]
    return "\n".join(out)


def _node_env(lay: NodeLayout, common: Mapping[str, str], spec: KubeSpec) -> list[dict[str, Any]]:
    env = kube.env_list(common)
    if lay.nnodes > 1:
        env.append(kube.pod_ip())
        if lay.device == Device.CUDA and "NCCL_SOCKET_IFNAME" not in common:
            env.append({"name": "NCCL_SOCKET_IFNAME", "value": spec.ifname})
    env.append(kube.secret_env("HF_TOKEN"))
    return env


def _resources(lay: NodeLayout) -> dict[str, Any]:
    if lay.device != Device.CUDA:
        return {}
    return {"limits": {"nvidia.com/gpu": lay.gpus_per_node}}


def _pod(container: dict[str, Any], lay: NodeLayout) -> dict[str, Any]:
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 90, "containers": [container],
                            "volumes": kube.volumes()}
    if lay.device == Device.CUDA:
        spec["tolerations"] = [kube.GPU_TOLERATION]
    return spec


def _template(labels: Mapping[str, str], role: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {**labels, ROLE_LABEL: role}}, "spec": pod}


def _lws(name: str, labels: Mapping[str, str], replicas: int, size: int,
         leader: dict[str, Any], worker: dict[str, Any] | None) -> dict[str, Any]:
    """A size-1 group has only a workerTemplate, which LWS then uses for its one (leader) pod."""
    lwt: dict[str, Any] = {"size": size, "restartPolicy": "RecreateGroupOnPodRestart"}
    if worker is None:
        lwt["workerTemplate"] = _template(labels, "leader", leader)
    else:
        lwt["leaderTemplate"] = _template(labels, "leader", leader)
        lwt["workerTemplate"] = _template(labels, "worker", worker)
    return {"apiVersion": API_VERSION, "kind": "LeaderWorkerSet",
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"replicas": replicas, "startupPolicy": "LeaderCreated",
                     "leaderWorkerTemplate": lwt}}


def in_pod(lay: NodeLayout) -> NodeLayout:
    """The commands without CUDA_VISIBLE_DEVICES: a pod sees only the GPUs the device plugin
    gave it, numbered from 0; the planning host's indices or UUIDs mean nothing there."""
    cmds = tuple(replace(c, env={k: v for k, v in c.env.items() if k != "CUDA_VISIBLE_DEVICES"})
                 for c in lay.commands)
    return replace(lay, commands=cmds)


def vllm_lws(lay: NodeLayout, spec: KubeSpec, replicas: int = 1) -> dict[str, Any]:
    """The plan's exact commands, one per node rank."""
    lay = in_pod(lay)
    labels = {NAME_LABEL: spec.name, "app.kubernetes.io/component": "vllm"}
    lead_env = _common_env((lay.leader,))
    leader = {"name": "vllm", "image": spec.image,
              "command": ["sh", "-c", kube.literal(leader_script(lay))],
              "env": _node_env(lay, lead_env, spec),
              "ports": [{"name": "http", "containerPort": lay.port}],
              "resources": _resources(lay), "volumeMounts": kube.MOUNTS,
              "startupProbe": kube.startup_probe("/health", "http", lay.weight_bytes),
              "readinessProbe": kube.readiness_probe("/health", "http")}
    worker = None
    if lay.nnodes > 1:
        worker = {"name": "vllm", "image": spec.image,
                  "command": ["sh", "-c", kube.literal(worker_script(lay))],
                  "env": _node_env(lay, _common_env(lay.workers), spec),
                  "resources": _resources(lay), "volumeMounts": kube.MOUNTS}
        worker = _pod(worker, lay)
    return _lws(spec.name, labels, replicas, lay.nnodes, _pod(leader, lay), worker)


def launcher_argv(lay: NodeLayout, spec: KubeSpec) -> list[str]:
    """`serve MODEL [--nnodes …]`; the rank and the leader's address are the kubelet's
    `$(VAR)` expansions of LWS's variables (no shell in between)."""
    argv = ["serve", kube.literal(spec.model_arg)]
    if lay.nnodes > 1:
        argv += ["--nnodes", str(lay.nnodes), "--node-rank", "$(LWS_WORKER_INDEX)",
                 "--master-addr", "$(LWS_LEADER_ADDRESS)", "--master-port", str(lay.master_port)]
    return argv


def launcher_lws(lay: NodeLayout, spec: KubeSpec, replicas: int = 0) -> dict[str, Any]:
    """The launcher in every pod: it plans on the GPUs the pods got, verifies, steps down."""
    labels = {NAME_LABEL: spec.name, "app.kubernetes.io/component": "launcher"}
    env = kube.env_list({**(spec.launcher_env or {}), "LAUNCHER_PORT": str(lay.port),
                         "LAUNCHER_CONTROL_PORT": str(spec.control_port)})
    if lay.nnodes > 1:
        env.append(kube.pod_ip())
        env.append({"name": "GLOO_SOCKET_IFNAME", "value": spec.ifname})
        if lay.device == Device.CUDA:
            env.append({"name": "NCCL_SOCKET_IFNAME", "value": spec.ifname})
    env += [kube.secret_env("HF_TOKEN"), kube.secret_env("LAUNCHER_API_TOKEN")]
    control = {"name": "control", "containerPort": spec.control_port}
    base = {"name": "launcher", "image": spec.image, "command": launcher_argv(lay, spec),
            "env": env, "resources": _resources(lay), "volumeMounts": kube.MOUNTS,
            "terminationMessagePolicy": "FallbackToLogsOnError"}
    leader = {**base, "ports": [{"name": "http", "containerPort": lay.port}, control],
              "startupProbe": kube.startup_probe("/readyz", "control", lay.weight_bytes),
              "readinessProbe": kube.readiness_probe("/readyz", "control")}
    worker = _pod({**base, "ports": [control]}, lay) if lay.nnodes > 1 else None
    return _lws(f"{spec.name}-launcher", labels, replicas, lay.nnodes, _pod(leader, lay),
                worker)


def service(lay: NodeLayout, spec: KubeSpec) -> dict[str, Any]:
    """The OpenAI API of whichever variant runs: it selects leader pods by name and role."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": spec.name, "labels": {NAME_LABEL: spec.name}},
            "spec": {"type": "ClusterIP",
                     "selector": {NAME_LABEL: spec.name, ROLE_LABEL: "leader"},
                     "ports": [{"name": "http", "port": lay.port, "targetPort": "http"},
                               {"name": "control", "port": spec.control_port,
                                "targetPort": "control"}]}}


def documents(lay: NodeLayout, spec: KubeSpec) -> list[dict[str, Any]]:
    return [vllm_lws(lay, spec), launcher_lws(lay, spec), service(lay, spec)]


def header(plan: Plan, lay: NodeLayout, spec: KubeSpec) -> str:
    """The file's comment: what it needs, the two variants and why the first is the default,
    the startup window and anything the pods must provide."""
    name, n = spec.name, lay.nnodes
    if n == 1:
        vllm = ["    its pod runs the plan's own vLLM command, word for word, serving the OpenAI",
                f"    API on port {lay.port}."]
        launcher = f"    its pod runs `serve {spec.model_arg}`:"
    else:
        vllm = ["    every pod runs the plan's own vLLM command for its node rank, word for word:",
                f"    pod 0 serves the OpenAI API on port {lay.port}, pods 1..{n - 1} run "
                "`vllm serve --headless`",
                f"    and join it at $LWS_LEADER_ADDRESS:{lay.master_port}."]
        launcher = (f"    every pod runs `serve {spec.model_arg} --nnodes {n} --node-rank "
                    "$(LWS_WORKER_INDEX) …`:")
    lines = [
        f"LeaderWorkerSet for {plan.model.name} with vLLM {plan.engine_version}: {lay.shape}.",
        "Generated by `launcher plan --emit lws`. Needs the LeaderWorkerSet controller",
        "(https://lws.sigs.k8s.io) and the launcher image (docker/Dockerfile: vLLM and the",
        f"launcher, in your registry; here {spec.image}). Optional Secret `{kube.SECRET}`:",
        "HF_TOKEN, LAUNCHER_API_TOKEN (see docker/kubernetes.yaml).",
        "",
        "Two variants of the same engine; one runs at a time, the Service reaches whichever does:",
        f" 1. {name} (replicas: 1, the default):", *vllm,
        f" 2. {name}-launcher (replicas: 0):", launcher,
        "    the launcher plans again on the GPUs the pods got, verifies the headroom on every",
        f"    node and steps down when a start fails (ready: /readyz on port {spec.control_port}).",
        "The plan's command is the default because it is what `launcher plan` showed and you",
        "reviewed: nothing is decided when the pods start, and a failure is vLLM's own, with no",
        "launcher in between (the image only gives the headless pods their `vllm serve`).",
        "Choose the launcher when the pods' GPUs may differ from the ones planned for, or memory",
        "must be verified:",
        f"  kubectl scale lws/{name} --replicas=0 && kubectl scale lws/{name}-launcher --replicas=1",
        "CUDA_VISIBLE_DEVICES is left to the device plugin (the pod sees only its GPUs).",
        f"Startup probe: {round(kube.startup_seconds(lay.weight_bytes) / 60)} min "
        f"({round(policy.DEFAULT_READY_TIMEOUT / 60)} min for the engine's start plus "
        f"{lay.weight_bytes / GiB:.1f} GiB of weights",
        f"at {kube.LOAD_BYTES_PER_S // 2**20} MiB/s); a slower download needs a larger "
        "failureThreshold.",
    ]
    if plan.model.source.startswith("local:"):
        lines += [f"The model is a local directory ({plan.model.model_ref}): it must exist at "
                  "that path", "in every pod (mount it)."]
    if lay.device != Device.CUDA:
        lines.append("A CPU plan: no GPUs requested; the image must hold vLLM's CPU build.")
    return "\n".join(lines)


def render(plan: Plan, lay: NodeLayout, spec: KubeSpec) -> str:
    return kube.dump(documents(lay, spec), header(plan, lay, spec))
