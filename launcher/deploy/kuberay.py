"""`--emit kuberay`: a RayService (ray.io/v1) serving the plan through Ray Serve LLM.

For teams that run Ray: KubeRay starts the Ray cluster (a head without GPUs, one worker pod
per node), and Ray Serve's `ray.serve.llm:build_openai_app` starts vLLM with the plan's
arguments as `engine_kwargs`, under vLLM's Ray executor (`distributed_executor_backend: ray`)
— the shape of KubeRay's sample ray-operator/config/samples/ray-service.llm-serve.yaml and of
vLLM's docs/deployment/integrations/kuberay.md. Data-parallel replicas become Serve replicas.

Checked by its content and the RayService CRD schema only: Ray cannot run vLLM's CPU backend
(vllm v1/executor/ray_utils.py: "current platform cpu does not support ray"), so a CPU plan
is refused here rather than emitted.
"""

from __future__ import annotations

from typing import Any

import yaml

from launcher.deploy import kube
from launcher.deploy.layout import NodeLayout
from launcher.errors import InputError
from launcher.memory.calibration import Device
from launcher.planner.plan import EngineCommand, Plan

API_VERSION = "ray.io/v1"
# KubeRay's LLM sample (ray-operator/config/samples/ray-service.llm-serve.yaml @feeaf72).
RAY_VERSION = "2.52.0"
RAY_IMAGE = f"rayproject/ray-llm:{RAY_VERSION}-py311-cu128"
SERVE_PORT = 8000  # Ray Serve's HTTP proxy
# Flags Ray Serve decides itself: where it listens, the model's name and source, replicas.
NOT_ENGINE = ("--model", "--host", "--port", "--served-model-name", "--data-parallel-size")


def engine_kwargs(cmd: EngineCommand) -> dict[str, Any]:
    """The command's vLLM flags as keyword arguments: `--max-model-len 4096` →
    max_model_len: 4096, a switch → true; numbers stay numbers."""
    args = list(cmd.argv[3:])  # after `python -m <entry>`
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        flag, value = args[i], None
        if "=" in flag:
            flag, value = flag.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            value = args[i + 1]
            i += 1
        i += 1
        if flag in NOT_ENGINE:
            continue
        out[flag.lstrip("-").replace("-", "_")] = True if value is None else _scalar(value)
    out["distributed_executor_backend"] = "ray"
    return out


def _scalar(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def serve_config(plan: Plan, lay: NodeLayout) -> dict[str, Any]:
    cmd = plan.engine
    assert cmd is not None  # a layout exists only for a feasible plan
    served = cmd.flag("--served-model-name") or plan.model.name
    llm = {"model_loading_config": {"model_id": served, "model_source": cmd.flag("--model")},
           "engine_kwargs": engine_kwargs(cmd),
           "deployment_config": {"num_replicas": lay.dp}}
    return {"applications": [{"name": "llms", "import_path": "ray.serve.llm:build_openai_app",
                              "route_prefix": "/", "args": {"llm_configs": [llm]}}]}


def _container(name: str, image: str, gpus: int, env: list[dict[str, Any]],
               ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": image, "env": env,
                         "volumeMounts": kube.MOUNTS[:1]}
    if gpus:
        c["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    if ports:
        c["ports"] = ports
    return c


def rayservice(plan: Plan, lay: NodeLayout, name: str, image: str, ifname: str) -> dict[str, Any]:
    if lay.device != Device.CUDA:
        raise InputError("--emit kuberay needs a GPU plan: Ray cannot run vLLM's CPU backend",
                         fix="Plan for GPUs (--gpus / --device cuda), or emit lws or shell.")
    env = [{"name": "GLOO_SOCKET_IFNAME", "value": ifname},
           {"name": "NCCL_SOCKET_IFNAME", "value": ifname}, kube.secret_env("HF_TOKEN")]
    shm = kube.volumes()[:1]
    head = {"rayStartParams": {"num-gpus": "0"},
            "template": {"spec": {"containers": [_container(
                "ray-head", image, 0, env,
                [{"name": "serve", "containerPort": SERVE_PORT},
                 {"name": "gcs", "containerPort": 6379},
                 {"name": "dashboard", "containerPort": 8265}])], "volumes": shm}}}
    workers = {"groupName": "gpu", "replicas": lay.nnodes, "minReplicas": lay.nnodes,
               "maxReplicas": lay.nnodes, "numOfHosts": 1,
               "rayStartParams": {"num-gpus": str(lay.gpus_per_node)},
               "template": {"spec": {"containers": [_container(
                   "ray-worker", image, lay.gpus_per_node, env)], "volumes": shm,
                   "tolerations": [kube.GPU_TOLERATION]}}}
    return {"apiVersion": API_VERSION, "kind": "RayService",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name}},
            "spec": {"serveConfigV2": yaml.safe_dump(serve_config(plan, lay), sort_keys=False),
                     "rayClusterConfig": {"rayVersion": RAY_VERSION, "headGroupSpec": head,
                                          "workerGroupSpecs": [workers]}}}


HEADER = """\
RayService for {model}: {shape}, from `launcher plan --emit kuberay`.
Needs KubeRay (https://docs.ray.io/en/latest/cluster/kubernetes/) and Ray Serve LLM in the
image ({image}). Ray Serve starts vLLM with the plan's arguments
(engine_kwargs) under vLLM's Ray executor. The plan's numbers are for vLLM {version}: check
that the image's vLLM is that release, or plan with --engine-version set to the image's.
OpenAI API: the Service {name}-serve-svc, port {port}. Optional Secret `{secret}`: HF_TOKEN.
"""


def render(plan: Plan, lay: NodeLayout, name: str, image: str | None, ifname: str) -> str:
    image = image or RAY_IMAGE
    doc = rayservice(plan, lay, name, image, ifname)
    return kube.dump([doc], HEADER.format(model=plan.model.name, shape=lay.shape, image=image,
                                          version=plan.engine_version, name=name,
                                          port=SERVE_PORT, secret=kube.SECRET))
