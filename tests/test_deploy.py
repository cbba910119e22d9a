"""`launcher plan --emit lws|shell|kuberay`: the files a plan deploys with.

What matters is checked on the real thing: every emitted manifest against the Kubernetes
OpenAPI schemas (kubernetes-validate) and the LeaderWorkerSet / RayService CRD schemas
(tests/data/k8s/, NOTICE.md there); every pod's and node's command by running the emitted
shell under `sh` with LWS's variables set and comparing what reaches `python3` with
`node_command`'s argv for that rank (a stand-in `python3` on PATH records its argv and
environment: the shell, `env` and the quoting are the real ones).
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import LEASE_DIR, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.deploy import EmitRequest, emit, kube, layout, lws, shell, words
from launcher.deploy.files import write_atomic
from launcher.engines.multinode import node_command
from launcher.errors import DoesNotFitError, InputError
from launcher.planner import PlanRequest
from launcher.planner.plan import Plan
from launcher.prepare import Target, build_plan

DATA = Path(__file__).parent / "data" / "k8s"
K8S_VERSION = kubernetes_validate.latest_version()
CONTAINER = Target(gpus="16xH100-80GB", engine_python="python3", host="0.0.0.0")
LEADER = "lws-0.lws.default.svc.cluster.local"


# ---- plans and emitted files ---------------------------------------------------------------

@pytest.fixture(scope="module")
def plans(_launcher_cache: Path) -> Iterator[dict[str, Plan]]:
    """Built once for the module, under the same clean environment as every test (conftest's
    `_clean_env` is per test, and a module fixture is built before it)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("LAUNCHER_", "HF_", "HUGGING_FACE")) or key in (
                    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
                mp.delenv(key)
        mp.setenv("LAUNCHER_CACHE_DIR", str(_launcher_cache))
        mp.setenv("LAUNCHER_LEASE_DIR", str(LEASE_DIR))
        yield _plans()


def _plans() -> dict[str, Plan]:
    return {
        # TP×PP spans nodes (vLLM's --nnodes): 2 nodes × 8, 4 nodes × 4
        # planned on nodes (--gpus NxGxTYPE)
        "tp8pp2": build_plan("llama-3.1-70b", PlanRequest(tp=8, pp=2),
                             replace(CONTAINER, gpus="2x8xH100-80GB")),
        "tp4pp4": build_plan("llama-3.1-70b", PlanRequest(tp=4, pp=4),
                             replace(CONTAINER, gpus="4x4xH100-80GB")),
        # DP replicas, planned on one machine and spread with --nodes (--data-parallel-*)
        "dp": build_plan("llama-3.1-8b", PlanRequest(tp=2, pp=1), CONTAINER),
        # TP8 on one 8-GPU machine: --nodes 2 would split every TP group over two nodes
        "tp8": build_plan("llama-3.1-70b", PlanRequest(tp=8),
                          replace(CONTAINER, gpus="8xH100-80GB")),
        "single": build_plan("llama-3.1-8b", PlanRequest(),
                             Target(gpus="1xH100-80GB", engine_python="python3",
                                    host="0.0.0.0")),
        "cpu": build_plan("demo", PlanRequest(device="cpu"), Target(device="cpu")),
        "infeasible": build_plan("deepseek-67b", PlanRequest(), Target(gpus="1xRTX4090")),
    }


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def lws_docs(plan: Plan, nodes: int, **kw: Any) -> list[dict[str, Any]]:
    return docs(emit(plan, EmitRequest(kind="lws", model_arg="llama-3.1-70b", nodes=nodes, **kw)))


def expected(plan: Plan, nodes: int, rank: int, addr: str, ifname: str | None = "eth0"):
    d, engine = plan.decision, plan.engine
    assert d is not None and engine is not None
    tp, pp, dp = d.tensor_parallel_size, d.pipeline_parallel_size, d.data_parallel_size
    return node_command(engine, nnodes=nodes, node_rank=rank, master_addr=addr,
                        master_port=29501, tp=tp, pp=pp, dp=dp,
                        gpus_per_node=tp * pp * dp // nodes,
                        socket_ifname=ifname if nodes > 1 else None)


# ---- running the emitted shell -------------------------------------------------------------

@pytest.fixture()
def recorder(tmp_path: Path) -> Path:
    """A directory whose `python3` writes its argv and environment to $RECORD and exits."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    py = bindir / "python3"
    import sys

    py.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                  "json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, "
                  "open(os.environ['RECORD'], 'w'))\n")
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return bindir


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """What the kubelet does to a container's command, args and env values before starting it
    (kubernetes third_party/forked/golang/expansion/expand.go): `$$` → `$`, `$(VAR)` → its
    value when VAR is defined (else kept), any other `$` kept."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
        elif text[i + 1] == "$":
            out.append("$")
            i += 2
        elif text[i + 1] == "(" and ")" in text[i + 2:]:
            end = text.index(")", i + 2)
            name = text[i + 2:end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def run_pod(container: dict[str, Any], lws_env: dict[str, str], recorder: Path,
            tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """A container's `sh -c` command as a pod runs it: env values and the script through the
    kubelet's expansion (LWS's variables defined), then the shell."""
    env = {**lws_env, **{k: kubelet_expand(v, lws_env) for k, v in container_env(container).items()}}
    assert container["command"][:2] == ["sh", "-c"]
    return run_sh(kubelet_expand(container["command"][2], env), env, recorder, tmp_path)


def run_sh(script: str, env: dict[str, str], recorder: Path,
           tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    record = tmp_path / "record.json"
    record.unlink(missing_ok=True)
    full = {"PATH": f"{recorder}:/usr/bin:/bin", "RECORD": str(record),
            "VLLM_CPU_KVCACHE_SPACE": "40", **env}
    proc = subprocess.run(["sh", "-c", script], env=full, capture_output=True, text=True,
                          timeout=30)
    return proc, json.loads(record.read_text()) if record.exists() else None


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain `env:` values (valueFrom entries are the cluster's to fill)."""
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def templates(lws_doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    t = lws_doc["spec"]["leaderWorkerTemplate"]
    if "leaderTemplate" in t:
        return t["leaderTemplate"], t["workerTemplate"]
    return t["workerTemplate"], None


@pytest.mark.parametrize(("key", "nodes"), [("tp8pp2", 2), ("tp4pp4", 4), ("dp", 2),
                                            ("dp", 4)])
def test_every_pod_runs_node_command_for_its_rank(plans, key, nodes, recorder, tmp_path):
    plan = plans[key]
    vllm_lws = lws_docs(plan, nodes)[0]
    assert vllm_lws["spec"]["leaderWorkerTemplate"]["size"] == nodes
    leader, worker = templates(vllm_lws)
    assert worker is not None
    for rank in range(nodes):
        pod = leader if rank == 0 else worker
        (c,) = pod["spec"]["containers"]
        proc, rec = run_pod(c, {"LWS_LEADER_ADDRESS": LEADER, "LWS_GROUP_SIZE": str(nodes),
                                "LWS_WORKER_INDEX": str(rank)}, recorder, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert rec is not None
        want = expected(plan, nodes, rank, LEADER)
        assert want.argv[0] == "python3"
        assert rec["argv"] == list(want.argv[1:])
        for k, v in want.env.items():
            assert rec["env"][k] == v
        assert not set(want.unset) & set(rec["env"])  # VLLM_CPU_KVCACHE_SPACE removed
        assert ("--headless" in rec["argv"]) == (rank > 0)


def test_dollars_in_the_plan_reach_vllm_as_written(plans, recorder, tmp_path):
    """A value holding `$(…)`, `$$` or `${…}` (a chat template, a JSON override) passes the
    kubelet's expansion and the shell untouched."""
    plan = plans["tp8pp2"]
    assert plan.engine is not None
    odd = '{"x": "$(LWS_GROUP_SIZE) $$ ${HOME} `id` \'q\'"}'
    engine = replace(plan.engine, argv=(*plan.engine.argv, "--override-generation-config", odd),
                     env={**plan.engine.env, "ODD": odd})
    odd_plan = replace(plan, engine=engine)
    leader, worker = templates(lws_docs(odd_plan, 2)[0])
    assert worker is not None
    for rank, pod in enumerate((leader, worker)):
        proc, rec = run_pod(pod["spec"]["containers"][0],
                            {"LWS_LEADER_ADDRESS": LEADER, "LWS_GROUP_SIZE": "2",
                             "LWS_WORKER_INDEX": str(rank), "HOME": "/root"},
                            recorder, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert rec is not None
        assert rec["argv"][rec["argv"].index("--override-generation-config") + 1] == odd
        assert rec["env"]["ODD"] == odd


def test_ports_and_expert_parallel_from_engine_args_are_kept(plans):
    """--engine-args may set vLLM's rendezvous ports and EP; node_command re-adds them only
    when told, so the layout reads them from the plan's command."""
    for key, extra, want in (
            ("tp8pp2", ("--master-port", "29600"), ["--master-port", "29600"]),
            ("dp", ("--data-parallel-rpc-port", "13345", "--enable-expert-parallel"),
             ["--data-parallel-rpc-port", "13345"])):
        plan = plans[key]
        assert plan.engine is not None
        odd = replace(plan, engine=replace(plan.engine, argv=(*plan.engine.argv, *extra)))
        lay = layout.layout(odd, nodes=2, master_addr="h")
        for cmd in lay.commands:
            argv = list(cmd.argv)
            i = argv.index(want[0])
            assert argv[i:i + 2] == want and argv.count(want[0]) == 1
            assert argv.count("--enable-expert-parallel") == \
                ("--enable-expert-parallel" in extra)


def test_a_resized_group_or_unknown_index_stops_at_once(plans, recorder, tmp_path):
    _, worker = templates(lws_docs(plans["tp4pp4"], 4)[0])
    assert worker is not None
    (c,) = worker["spec"]["containers"]
    base = {"LWS_LEADER_ADDRESS": LEADER, "LWS_GROUP_SIZE": "4"}
    proc, rec = run_pod(c, {**base, "LWS_GROUP_SIZE": "3", "LWS_WORKER_INDEX": "1"},
                        recorder, tmp_path)
    assert proc.returncode == 2 and rec is None and "planned for 4 nodes" in proc.stderr
    proc, rec = run_pod(c, {**base, "LWS_WORKER_INDEX": "4"}, recorder, tmp_path)
    assert proc.returncode == 2 and rec is None and "1..3 planned" in proc.stderr


def test_pods_env_resources_volumes_and_probes(plans):
    plan = plans["tp8pp2"]
    documents = lws_docs(plan, 2, ifname="ens5")
    lay = layout.layout(plan, nodes=2, master_addr=lws.LEADER_ADDRESS)
    for doc in by_kind(documents, "LeaderWorkerSet"):
        t = doc["spec"]["leaderWorkerTemplate"]
        assert t["restartPolicy"] == "RecreateGroupOnPodRestart"
        assert doc["spec"]["startupPolicy"] == "LeaderCreated"
        leader, worker = templates(doc)
        assert worker is not None
        for role, pod in (("leader", leader), ("worker", worker)):
            (c,) = pod["spec"]["containers"]
            env = {e["name"]: e for e in c["env"]}
            assert env["VLLM_HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
            assert env["GLOO_SOCKET_IFNAME"]["value"] == env["NCCL_SOCKET_IFNAME"]["value"] \
                == "ens5"
            assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
            assert c["resources"]["limits"]["nvidia.com/gpu"] == lay.gpus_per_node == 8
            shm = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"]
            (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == shm[0]["name"]]
            assert vol["emptyDir"]["medium"] == "Memory"
            probes = {k for k in c if k.endswith("Probe")}
            if role == "leader":
                assert {"startupProbe", "readinessProbe"} <= probes
                s = c["startupProbe"]
                assert s["periodSeconds"] * s["failureThreshold"] >= \
                    kube.startup_seconds(lay.weight_bytes)
            else:
                assert not probes


def test_startup_window_grows_with_the_weights():
    small, large = kube.startup_seconds(16 * 2**30), kube.startup_seconds(800 * 2**30)
    assert large - small == pytest.approx((800 - 16) * 2**30 / kube.LOAD_BYTES_PER_S, abs=1)


def test_service_selects_only_the_leaders(plans):
    documents = lws_docs(plans["tp8pp2"], 2)
    (svc,) = by_kind(documents, "Service")
    sel = svc["spec"]["selector"]
    for doc in by_kind(documents, "LeaderWorkerSet"):
        leader, worker = templates(doc)
        assert sel.items() <= leader["metadata"]["labels"].items()
        assert worker is not None and not sel.items() <= worker["metadata"]["labels"].items()
        leader_ports = {p["name"] for p in leader["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} & leader_ports


def test_the_plans_command_runs_by_default_the_launcher_variant_on_request(plans):
    plan = plans["tp8pp2"]
    lay = layout.layout(plan, nodes=2, master_addr=lws.LEADER_ADDRESS)
    text = emit(plan, EmitRequest(kind="lws", model_arg="llama-3.1-70b", nodes=2,
                                  launcher_env={"LAUNCHER_HEADROOM": "0.15"}))
    vllm_lws, launcher_lws = by_kind(docs(text), "LeaderWorkerSet")
    assert vllm_lws["spec"]["replicas"] == 1 and launcher_lws["spec"]["replicas"] == 0
    assert "the default" in text.split("apiVersion")[0]
    leader, worker = templates(launcher_lws)
    assert worker is not None
    for pod in (leader, worker):
        (c,) = pod["spec"]["containers"]
        assert c["command"] == ["serve", "llama-3.1-70b", "--nnodes", "2", "--node-rank",
                                "$(LWS_WORKER_INDEX)", "--master-addr", "$(LWS_LEADER_ADDRESS)",
                                "--master-port", str(lay.master_port)]
        env = container_env(c)
        assert env["LAUNCHER_HEADROOM"] == "0.15" and env["LAUNCHER_PORT"] == str(lay.port)
    assert leader["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_single_node_plan_is_one_pod(plans, recorder, tmp_path):
    plan = plans["single"]
    vllm_lws = docs(emit(plan, EmitRequest(kind="lws", model_arg="llama-3.1-8b")))[0]
    t = vllm_lws["spec"]["leaderWorkerTemplate"]
    assert t["size"] == 1 and "leaderTemplate" not in t
    leader, _ = templates(vllm_lws)
    assert leader["metadata"]["labels"]["role"] == "leader"
    (c,) = leader["spec"]["containers"]
    proc, rec = run_pod(c, {}, recorder, tmp_path)
    assert proc.returncode == 0, proc.stderr
    want = expected(plan, 1, 0, "unused")
    assert rec is not None and rec["argv"] == list(want.argv[1:])
    # the plan names the planning host's GPUs; a pod numbers its own: left to the device plugin
    assert "CUDA_VISIBLE_DEVICES" in want.env and "CUDA_VISIBLE_DEVICES" not in rec["env"]
    assert {k: v for k, v in want.env.items() if k != "CUDA_VISIBLE_DEVICES"}.items() \
        <= rec["env"].items()
    assert "--nnodes" not in rec["argv"] and "--headless" not in rec["argv"]


# ---- schemas --------------------------------------------------------------------------------

def _strict(schema: Any) -> Any:
    """The CRD schema as the API server's strict field validation applies it: an object with
    declared properties takes no others (unless it preserves unknown fields)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd() -> dict[str, tuple[str, jsonschema.protocols.Validator]]:
    """kind → (apiVersion, validator). OpenAPI v3.0 schemas are JSON Schema draft 4 with
    extensions (the x-kubernetes-* keys, which a validator ignores)."""
    out = {}
    for name in ("leaderworkerset-v1", "rayservice-v1"):
        data = json.loads((DATA / f"{name}.schema.json").read_text())
        schema = _strict(data["openAPIV3Schema"])
        jsonschema.Draft4Validator.check_schema(schema)
        out[data["kind"]] = (f"{data['group']}/{data['version']}",
                             jsonschema.Draft4Validator(schema))
    return out


def validate_crd(doc: dict[str, Any], crd: dict[str, Any]) -> None:
    api_version, validator = crd[doc["kind"]]
    assert doc["apiVersion"] == api_version
    validator.validate(doc)


def validate_pod(template: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template["metadata"]},
           "spec": template["spec"]}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("key", "nodes"), [("tp8pp2", 2), ("tp4pp4", 4), ("dp", 2),
                                            ("single", None), ("cpu", None)])
def test_lws_manifests_validate(plans, crd, key, nodes):
    documents = docs(emit(plans[key], EmitRequest(kind="lws", model_arg="m", nodes=nodes)))
    assert [d["kind"] for d in documents] == ["LeaderWorkerSet", "LeaderWorkerSet", "Service"]
    for doc in documents:
        if doc["kind"] == "Service":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            continue
        validate_crd(doc, crd)
        for t in templates(doc):
            if t is not None:
                validate_pod(t)


def test_schema_check_catches_a_wrong_field(plans, crd):
    doc = docs(emit(plans["tp8pp2"], EmitRequest(kind="lws", model_arg="m", nodes=2)))[0]
    doc["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Always"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(doc, crd)
    doc = docs(emit(plans["tp8pp2"], EmitRequest(kind="lws", model_arg="m", nodes=2)))[0]
    doc["spec"]["leaderWorkerTemplate"]["sizee"] = 2
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(doc, crd)
    leader, _ = templates(doc)
    leader["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod(leader)


def test_yaml_round_trips(plans):
    plan = plans["tp4pp4"]
    text = emit(plan, EmitRequest(kind="lws", model_arg="m", nodes=4))
    lay = layout.layout(plan, nodes=4, master_addr=lws.LEADER_ADDRESS, socket_ifname="eth0")
    spec = lws.KubeSpec(name=kube.dns_name(plan.model.name), image="launcher-vllm:0.1.0",
                        model_arg="m")
    assert docs(text) == lws.documents(lay, spec)
    assert docs(yaml.safe_dump_all(docs(text))) == docs(text)
    assert "&id" not in text and "*id" not in text  # no YAML anchors for a reader to chase


# ---- shell ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "nodes"), [("tp8pp2", 2), ("dp", 4), ("single", None)])
def test_shell_lines_are_node_commands(plans, key, nodes, recorder, tmp_path):
    plan = plans[key]
    text = emit(plan, EmitRequest(kind="shell", model_arg="m", nodes=nodes))
    n = nodes or 1
    commands = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(commands) == n
    if n > 1:
        for rank in range(n):
            assert f"# ---- node {rank} of {n}" in text
    for rank, ln in enumerate(commands):
        want = expected(plan, n, rank, shell.MASTER_ADDR, ifname=None)
        assert ln == words.line(want, shell.LIVE)
        proc, rec = run_sh(ln, {"MASTER_ADDR": "10.0.0.1"}, recorder, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert rec is not None
        assert rec["argv"] == list(expected(plan, n, rank, "10.0.0.1", ifname=None).argv[1:])
        assert "VLLM_CPU_KVCACHE_SPACE" not in rec["env"]
        if n > 1:  # without MASTER_ADDR the shell stops before vLLM starts
            proc, rec = run_sh(ln, {}, recorder, tmp_path)
            assert proc.returncode != 0 and rec is None and "MASTER_ADDR" in proc.stderr


def test_shell_sets_the_interface_only_when_asked(plans):
    plan = plans["tp8pp2"]
    plain = emit(plan, EmitRequest(kind="shell", model_arg="m", nodes=2))
    given_if = emit(plan, EmitRequest(kind="shell", model_arg="m", nodes=2, ifname="ib0"))
    assert "GLOO_SOCKET_IFNAME=" not in plain and "GLOO_SOCKET_IFNAME=ib0" in given_if


# ---- kuberay --------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "nodes"), [("tp8pp2", 2), ("dp", 2), ("single", None)])
def test_rayservice_carries_the_plan(plans, crd, key, nodes):
    plan = plans[key]
    (doc,) = docs(emit(plan, EmitRequest(kind="kuberay", model_arg="m", nodes=nodes)))
    validate_crd(doc, crd)
    d, engine = plan.decision, plan.engine
    assert d is not None and engine is not None
    (app,) = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    (llm,) = app["args"]["llm_configs"]
    kw = llm["engine_kwargs"]
    assert kw["distributed_executor_backend"] == "ray"
    assert llm["model_loading_config"]["model_source"] == engine.flag("--model")
    assert llm["deployment_config"]["num_replicas"] == d.data_parallel_size
    for flag, key_ in (("--tensor-parallel-size", "tensor_parallel_size"),
                       ("--pipeline-parallel-size", "pipeline_parallel_size"),
                       ("--max-model-len", "max_model_len"), ("--max-num-seqs", "max_num_seqs"),
                       ("--kv-cache-memory-bytes", "kv_cache_memory_bytes"),
                       ("--gpu-memory-utilization", "gpu_memory_utilization"),
                       ("--dtype", "dtype")):
        assert str(kw[key_]) == engine.flag(flag) or float(kw[key_]) == float(engine.flag(flag))
    assert "data_parallel_size" not in kw and "port" not in kw
    (workers,) = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    n = nodes or 1
    assert workers["replicas"] == n
    gpn = d.tensor_parallel_size * d.pipeline_parallel_size * d.data_parallel_size // n
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == gpn
    assert workers["rayStartParams"]["num-gpus"] == str(gpn)
    for t in (doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"],
              workers["template"]):
        validate_pod({"metadata": {}, **t})


def test_kuberay_refuses_a_cpu_plan(plans):
    with pytest.raises(InputError, match="Ray cannot run"):
        emit(plans["cpu"], EmitRequest(kind="kuberay", model_arg="demo"))


# ---- bad input ------------------------------------------------------------------------------

def test_infeasible_plan_has_nothing_to_emit(plans):
    plan = plans["infeasible"]
    assert not plan.feasible and plan.reason
    with pytest.raises(DoesNotFitError) as e:
        emit(plan, EmitRequest(kind="lws", model_arg="m"))
    assert plan.reason in e.value.message


def test_nodes_come_from_a_plan_made_on_nodes(plans):
    plan = plans["tp8pp2"]
    assert plan.decision is not None and plan.decision.nnodes == 2
    vllm_lws = docs(emit(plan, EmitRequest(kind="lws", model_arg="m")))[0]
    assert vllm_lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    with pytest.raises(InputError, match="contradicts the plan"):
        emit(plan, EmitRequest(kind="lws", model_arg="m", nodes=4))


def test_node_counts_that_cannot_work(plans):
    with pytest.raises(InputError, match="does not divide"):
        emit(plans["dp"], EmitRequest(kind="lws", model_arg="m", nodes=3))
    d = plans["dp"].decision
    assert d is not None and d.data_parallel_size > 1 and d.tensor_parallel_size == 2
    n = d.data_parallel_size * 2  # one GPU a node: a TP2 replica would span nodes with DP > 1
    with pytest.raises(InputError, match=f"cannot run on {n} nodes"):
        emit(plans["dp"], EmitRequest(kind="shell", model_arg="m", nodes=n))


def test_spreading_tp_over_nodes_is_refused_by_the_planners_rule(plans):
    """--nodes on a one-machine plan obeys the rule a plan made on nodes obeys
    (launcher.planner.nodes.why_not): TP8 on 2 nodes of 4 is refused like `--gpus
    2x4xH100-80GB --tp 8`, with the re-plan for nodes as the fix."""
    from launcher.planner.nodes import Nodes, why_not

    d = plans["tp8"].decision
    assert d is not None and d.tensor_parallel_size == 8 and d.data_parallel_size == 1
    for kind in ("lws", "shell", "kuberay"):
        with pytest.raises(InputError) as e:
            emit(plans["tp8"], EmitRequest(kind=kind, model_arg="m", nodes=2))
        assert why_not(8, d.pipeline_parallel_size, Nodes(2, 4)) in e.value.message
        assert "straddle" in e.value.message and "--gpus 2x4xTYPE" in (e.value.fix or "")
    # spreads the rule allows still emit: DP replicas, each inside a node
    assert len(lws_docs(plans["dp"], 2)) == 3


def test_shell_names_no_path_of_this_machine(tmp_path):
    """--emit shell runs `python3` from each node's PATH, not the planning machine's
    interpreter, unless --engine-python names one."""
    import sys

    r = run_cli("plan", "llama-3.1-8b", "--gpus", "2xH100-80GB", "--emit", "shell")
    assert r.returncode == 0, r.stderr
    commands = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]
    assert commands and all(_python_of(ln) == "python3" for ln in commands), commands
    assert sys.executable not in r.stdout and "`python3` from the PATH" in r.stdout
    r = run_cli("plan", "llama-3.1-8b", "--gpus", "2xH100-80GB", "--emit", "shell",
                "--engine-python", "/opt/vllm/bin/python3")
    assert r.returncode == 0, r.stderr
    commands = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]
    assert commands and all(_python_of(ln) == "/opt/vllm/bin/python3" for ln in commands)
    assert "# The commands run /opt/vllm/bin/python3 (--engine-python)" in r.stdout


def _python_of(ln: str) -> str:
    """The interpreter of `env [-u X] [K=V] PYTHON -m vllm…`."""
    w = shlex.split(ln)
    return w[w.index("-m") - 1]


def test_cli_errors_exit_with_their_code_and_no_traceback(tmp_path):
    cases = [
        (["plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--emit", "helm"], 2, "--emit"),
        (["plan", "deepseek-67b", "--gpus", "1xRTX4090", "--emit", "lws"], 3,
         "nothing to emit"),
        (["plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--emit", "lws", "--emit-file",
          str(tmp_path / "no-such-dir" / "x.yaml")], 2, "cannot write --emit-file"),
        (["plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--emit", "lws", "--json"], 2,
         "--emit-file"),
        (["plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--emit", "lws", "--nodes", "0"], 2,
         "--nodes"),
        (["plan", "llama-3.1-70b", "--gpus", "8xH100-80GB", "--tp", "8", "--emit", "lws",
          "--nodes", "2"], 2, "would straddle nodes"),
        (["plan", "llama-3.1-8b", "--gpus", "2xH100-80GB", "--nodes", "2"], 2,
         "--nodes only spreads a plan for --emit"),
    ]
    for args, code, text in cases:
        r = run_cli(*args)
        assert r.returncode == code, (args, r.stderr)
        assert "Traceback" not in r.stderr and text in r.stderr, (args, r.stderr)


def test_cli_writes_the_file_whole_and_keeps_it_on_failure(tmp_path):
    target = tmp_path / "deploy.yaml"
    target.write_text("previous\n")
    r = run_cli("plan", "deepseek-67b", "--gpus", "1xRTX4090", "--emit", "lws",
                "--emit-file", str(target))
    assert r.returncode == 3 and target.read_text() == "previous\n"
    r = run_cli("plan", "llama-3.1-70b", "--gpus", "2x8xH100-80GB", "--tp", "8", "--pp", "2",
                "--emit", "lws", "--emit-file", str(target), "--headroom", "0.15", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["feasible"] is True  # the plan on stdout, the file beside it
    documents = docs(target.read_text())
    vllm_lws, launcher_lws = by_kind(documents, "LeaderWorkerSet")
    leader, _ = templates(vllm_lws)
    script = leader["spec"]["containers"][0]["command"][2]
    assert "python3 -m vllm.entrypoints.openai.api_server" in script
    assert "--host 0.0.0.0" in script  # a pod's API answers the Service
    env = container_env(templates(launcher_lws)[0]["spec"]["containers"][0])
    assert env["LAUNCHER_HEADROOM"] == "0.15" and "LAUNCHER_GPUS" not in env
    assert vllm_lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.yaml"]  # no temp file left
    r = run_cli("plan", "llama-3.1-8b", "--gpus", "2xH100-80GB", "--emit", "shell")
    assert r.returncode == 0 and r.stdout.startswith("# ")  # the file on stdout, plan on stderr
    assert "Traceback" not in r.stderr
    r = run_cli("plan", "llama-3.1-8b", "--gpus", "2xH100-80GB", "--emit", "lws", "--explain")
    assert r.returncode == 0, r.stderr  # stdout is the manifest alone: pipe it to kubectl
    assert [d["kind"] for d in docs(r.stdout)] == ["LeaderWorkerSet", "LeaderWorkerSet",
                                                   "Service"]
    assert "Settings" in r.stderr and "from" in r.stderr


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(blocker / "deploy.yaml", "new")
    with pytest.raises(InputError, match="directory"):
        write_atomic(tmp_path, "new")
    target = tmp_path / "deploy.yaml"
    target.write_text("old")
    os.chmod(target, 0o640)
    write_atomic(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640


# ---- properties -----------------------------------------------------------------------------

_expansions = st.sampled_from([lws.LEADER_ADDRESS, lws.WORKER_INDEX, shell.MASTER_ADDR])


@given(st.lists(st.one_of(st.text(max_size=20), _expansions, st.just("${HOME}")), max_size=4),
       st.lists(_expansions, max_size=3))
@settings(max_examples=200, deadline=None)
def test_a_quoted_word_splits_back_whole(parts, live):
    word = "".join(parts)
    assert shlex.split(words.quote(word, live)) == [word]


@given(st.text(max_size=80))
@settings(max_examples=200, deadline=None)
def test_names_are_dns_labels(text):
    import re

    name = kube.dns_name(text)
    assert re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", name) and len(name) <= 42


@pytest.fixture(scope="module")
def two_nodes(plans) -> list[Plan]:
    return [plans["tp8pp2"]]  # in a list: hypothesis prints arguments, and a Plan is large


@given(text=st.text(max_size=30))
@settings(max_examples=150, deadline=None)
def test_interface_and_image_are_checked(two_nodes, text):
    for field, flag in (("ifname", "--emit-ifname"), ("image", "--emit-image")):
        try:
            out = emit(two_nodes[0], EmitRequest(kind="lws", model_arg="m", **{field: text}))
        except InputError as e:
            assert flag in e.message and e.fix
            continue
        assert text.strip() == text and text  # accepted: a plain word, written as given
        (c,) = templates(docs(out)[0])[0]["spec"]["containers"]
        assert text in (c["image"], container_env(c).get("GLOO_SOCKET_IFNAME"))


def test_quoted_expansions_reach_the_shell(recorder, tmp_path):
    word = f"tcp://{lws.LEADER_ADDRESS}:1 '$HOME' ${{HOME}} `x`"
    proc, rec = run_sh(f"exec python3 {words.quote(word, (lws.LEADER_ADDRESS,))}",
                       {"LWS_LEADER_ADDRESS": "h", "HOME": "/root"}, recorder, tmp_path)
    assert proc.returncode == 0 and rec is not None
    assert rec["argv"] == ["tcp://h:1 '$HOME' ${HOME} `x`"]  # only the live one expanded
