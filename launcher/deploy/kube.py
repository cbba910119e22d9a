"""What the Kubernetes emitters share: names, the YAML writer, env entries, probe timing.

Pure: builds plain dicts (the objects `kubectl apply` reads) and YAML text; nothing here talks
to a cluster. The tests validate every object against the Kubernetes OpenAPI schemas and the
CRDs' own schemas (tests/data/k8s/).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from launcher import policy

SECRET = "launcher-secrets"  # the Secret docker/kubernetes.yaml documents (HF_TOKEN, …)
SHM_SIZE = "16Gi"  # /dev/shm for vLLM's workers, as docker/kubernetes.yaml
PROBE_PERIOD_S = 10
# A start may download the weights and load them: the probe allows the launcher's own start
# deadline (policy.DEFAULT_READY_TIMEOUT: compile, CUDA graphs, warm-up) plus one replica's
# weights at LOAD_BYTES_PER_S — an assumed, conservative download-and-load rate
# (~1.7 Gbit/s). A probe that is too short restarts the group forever; too long only delays
# the restart of a start that hangs.
LOAD_BYTES_PER_S = 200 * 2**20


def dns_name(text: str, *, limit: int = 40) -> str:
    """A DNS-1123 label from a model name: lower case, [a-z0-9-], at most `limit` characters
    (LeaderWorkerSet appends group and worker indices to pod names)."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower().rsplit("/", 1)[-1]).strip("-")
    name = name[:limit].rstrip("-")
    return name if name and name[0].isalpha() else f"m-{name}".rstrip("-")


def startup_seconds(weight_bytes: int) -> int:
    """How long the startup probe lets a start take (see LOAD_BYTES_PER_S)."""
    return int(policy.DEFAULT_READY_TIMEOUT) + math.ceil(weight_bytes / LOAD_BYTES_PER_S)


def startup_probe(path: str, port: int | str, weight_bytes: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(startup_seconds(weight_bytes) / PROBE_PERIOD_S)}


def readiness_probe(path: str, port: int | str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": 5, "failureThreshold": 3}


_KUBELET_SPECIAL = re.compile(r"\$(?=[$(])")


def literal(text: str) -> str:
    """`text` as Kubernetes leaves it: the kubelet expands `$(VAR)` and turns `$$` into `$` in
    a container's command, args and env values (before any shell sees them), so each `$` that
    starts either is doubled. `${VAR}` and `$VAR` are the shell's and pass unchanged."""
    return _KUBELET_SPECIAL.sub("$$", text)


def env_list(env: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": literal(v)} for k, v in env.items()]


def pod_ip() -> dict[str, Any]:
    """VLLM_HOST_IP: the address other nodes reach this pod at (downward API)."""
    return {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def secret_env(name: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": name,
                                                         "optional": True}}}


def volumes() -> list[dict[str, Any]]:
    """/dev/shm in memory (the container default, 64 MiB, is too small for vLLM's workers) and
    /models for downloads (the image's HF_HOME; an emptyDir: swap in a volume to keep them)."""
    return [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            {"name": "models", "emptyDir": {}}]


MOUNTS = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "models", "mountPath": "/models"}]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors (&id001) for shared lists; multi-line strings (the `sh -c`
    scripts) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str)


def dump(docs: list[dict[str, Any]], header: str) -> str:
    """`header` (comment lines) and the documents, separated by `---`."""
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         width=100, explicit_start=False)
    comments = "".join(f"# {ln}".rstrip() + "\n" for ln in header.splitlines())
    return comments + body
