"""Deployment files from a plan: `launcher plan MODEL --emit lws|shell|kuberay`.

    layout.py   the plan on N nodes: every node's exact command (engines.multinode.node_command)
    words.py    a command as one shell line, unknown values left to the shell (${VAR})
    shell.py    --emit shell: one command per node, with where to run it
    lws.py      --emit lws: LeaderWorkerSet (the plan's commands; the launcher's variant) + Service
    kuberay.py  --emit kuberay: RayService (Ray Serve LLM, vLLM's Ray executor)
    kube.py     what the Kubernetes emitters share (names, probes, volumes, YAML)
    files.py    writing the file whole or not at all

Everything but files.py is pure: a plan in, text out. Errors are `launcher.errors` classes:
an infeasible plan is exit 3 with its reason, a node count or option that cannot work exit 2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from launcher import __version__
from launcher.planner.plan import Plan
from launcher.settings import Setting

KINDS = ("lws", "shell", "kuberay")
IMAGE = f"launcher-vllm:{__version__}"  # docker/Dockerfile's image (docker/kubernetes.yaml)
CONTAINER_PYTHON = "python3"  # the image's interpreter, which has vLLM and the launcher
NODE_PYTHON = "python3"  # --emit shell: each node's own interpreter, not this machine's path
CONTAINER_HOST = "0.0.0.0"  # a pod's API must answer the Service, not only loopback
# A Linux interface name (IFNAMSIZ: 15 characters; no `/`, space or `,`): GLOO_SOCKET_IFNAME
# takes one; NCCL's prefix lists (^docker, =eth0) would break it.
IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}")
# An image reference: [registry[:port]/]path[:tag][@digest], lower-case path (the OCI
# distribution spec's grammar, simplified; a cluster rejects the rest at pull time).
IMAGE_REF = re.compile(r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
                       r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                       r"(?:@sha256:[a-f0-9]{64})?")
# Settings of `plan` that `serve` in a pod must not inherit: simulated or local hardware,
# local paths and what the launcher variant sets itself.
NOT_FORWARDED = ("gpus", "inventory_file", "engine_python", "host", "port", "price_file")


@dataclass(frozen=True)
class EmitRequest:
    kind: str  # one of KINDS
    model_arg: str  # MODEL as given (the launcher variant plans it again in the pod)
    nodes: int | None = None  # None: the plan's node count, else 1
    ifname: str | None = None  # GLOO_/NCCL_SOCKET_IFNAME; None: eth0 in pods, unset in shell
    image: str | None = None  # None: the launcher image (lws), Ray's LLM image (kuberay)
    launcher_env: Mapping[str, str] = field(default_factory=dict)


def emit(plan: Plan, req: EmitRequest) -> str:
    """The file's text; raises DoesNotFitError (infeasible plan) or InputError."""
    from launcher.deploy import kube, kuberay, layout, lws, shell
    from launcher.errors import InputError

    if req.kind not in KINDS:
        raise InputError(f"--emit {req.kind!r} is not one of {', '.join(KINDS)}",
                         fix="Use --emit lws, --emit shell or --emit kuberay.")
    if req.ifname is not None and not IFNAME.fullmatch(req.ifname):
        raise InputError(f"--emit-ifname {req.ifname[:40]!r} is not a network interface name "
                         "(variable LAUNCHER_EMIT_IFNAME)",
                         fix="Give one interface, as `ip link` names it, e.g. --emit-ifname "
                             "eth0.")
    if req.image is not None and (len(req.image) > 255 or not IMAGE_REF.fullmatch(req.image)):
        raise InputError(f"--emit-image {req.image[:80]!r} is not an image reference "
                         "(variable LAUNCHER_EMIT_IMAGE)",
                         fix="Give [registry/]name[:tag], e.g. --emit-image "
                             "registry.example.com/launcher-vllm:0.1.0.")
    name = kube.dns_name(plan.model.name)
    if req.kind == "shell":
        lay = layout.layout(plan, nodes=req.nodes, master_addr=shell.MASTER_ADDR,
                            socket_ifname=req.ifname)
        return shell.render(plan, lay)
    ifname = req.ifname or lws.DEFAULT_IFNAME
    if req.kind == "kuberay":
        lay = layout.layout(plan, nodes=req.nodes, master_addr="ray-head")
        return kuberay.render(plan, lay, name, req.image, ifname)
    lay = layout.layout(plan, nodes=req.nodes, master_addr=lws.LEADER_ADDRESS,
                        socket_ifname=ifname)
    spec = lws.KubeSpec(name=name, image=req.image or IMAGE, model_arg=req.model_arg,
                        ifname=ifname, launcher_env=req.launcher_env)
    return lws.render(plan, lay, spec)


def in_container(kind: str | None) -> bool:
    """Whether the emitted commands run in a container (the image's Python, bound to all
    interfaces) rather than on the planning host."""
    return kind in ("lws", "kuberay")


def launcher_env(settings: Mapping[str, Setting]) -> dict[str, str]:
    """LAUNCHER_* for the launcher variant: the settings given on the command line or in the
    environment that `serve` also takes (defaults and profile values it finds itself)."""
    from launcher import options

    out: dict[str, str] = {}
    for name, s in settings.items():
        opt = options.BY_NAME.get(name)
        if opt is None or "serve" not in opt.commands or name in NOT_FORWARDED \
                or s.value is None or not (s.source == "cli" or s.source.startswith("env")):
            continue
        value = ("true" if s.value else "false") if isinstance(s.value, bool) else str(s.value)
        out[options.env_var(name)] = value
    return out
