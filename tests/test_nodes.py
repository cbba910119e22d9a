"""Planning on nodes × GPUs: `--gpus 2x8xH100-80GB`, one snapshot per node, cluster files,
and the planner's multi-node shapes (TP inside a node, PP across nodes)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.engines.multinode import node_command
from launcher.errors import InputError
from launcher.hardware import get_inventory
from launcher.hardware.catalog import parse_gpu_spec, simulated_inventory
from launcher.hardware.cluster import SEPARATOR, parse_cluster
from launcher.hardware.inventory import Inventory
from launcher.hardware.nvml import RawSystem, build_inventory
from launcher.planner import PlanRequest
from launcher.planner.nodes import crossing_hops
from launcher.prepare import Target, build_plan
from launcher.units import GiB

DATA = Path(__file__).parent / "data" / "nvml"
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _plan(model: str, gpus: str | None = None, inventory_file: str | None = None, **kw):
    return build_plan(model, PlanRequest(**kw), Target(gpus=gpus, inventory_file=inventory_file))


def _snapshot() -> Inventory:
    """A real two-H100 NVML reading (tests/data/nvml/h100x2-raw.json)."""
    raw = RawSystem.from_dict(json.loads((DATA / "h100x2-raw.json").read_text()))
    return build_inventory(raw, {}, captured_at="2024-11-14T07:00:14+00:00")


def _write(path: Path, inv: Inventory) -> Path:
    path.write_text(inv.to_json())
    return path


# ---- --gpus NODESxGPUSxTYPE ---------------------------------------------------------------

def test_node_spec_builds_nodes_with_their_own_nvlink() -> None:
    inv = simulated_inventory("2x8xH100-80GB")
    assert [g.index for g in inv.gpus] == list(range(16))
    assert [g.node for g in inv.gpus] == [0] * 8 + [1] * 8
    for g in inv.gpus:  # NVSwitch links every GPU of its own node, none of the other
        assert {inv.gpus[p].node for p in g.nvlink_peers} == {g.node}
        assert len(g.nvlink_peers) == 7
    assert inv.source == "simulated:2x8xH100-80GB"
    mixed = simulated_inventory("1x8xH100-80GB,1x8xH200")
    assert [g.catalog_name for g in mixed.gpus[7:9]] == ["H100-80GB", "H200"]
    assert {g.node for g in mixed.gpus} == {0, 1}
    # one machine's specs keep their meaning
    assert {g.node for g in simulated_inventory("2xH100-80GB,2xA100-80GB").gpus} == {0}
    assert len(simulated_inventory("2xRTX-A6000").gpus) == 2  # an "x" inside the name


@pytest.mark.parametrize(("spec", "part"), [
    ("0x8xH100-80GB", "node count '0'"),
    ("-1x8xH100-80GB", "node count '-1'"),
    ("twox8xH100-80GB", "node count 'two'"),
    ("2x0xH100-80GB", "GPUs-per-node count '0'"),
    ("2xeightxH100-80GB", "GPUs-per-node count 'eight'"),
    ("5000x8xH100-80GB", "node count '5000'"),
    ("2x8xH100-80GB,2xA100-80GB", "mixes nodes"),
    ("200x8xH100-80GB", "1,600 GPUs"),
    ("2x8xH999", "Unknown GPU type"),
])
def test_bad_node_specs_name_the_part(spec: str, part: str) -> None:
    with pytest.raises(InputError) as e:
        parse_gpu_spec(spec)
    assert part in e.value.message
    assert e.value.exit_code == 2


def test_bad_node_spec_exits_2_on_the_cli() -> None:
    r = run_cli("plan", "llama-3.1-8b", "--gpus", "2x0xH100-80GB")
    assert r.returncode == 2, r.stderr
    assert "GPUs-per-node count '0'" in r.stderr
    assert "Traceback" not in r.stderr


@FAST
@given(a=st.text(max_size=6), b=st.text(max_size=6),
       name=st.sampled_from(["H100-80GB", "A100-40GB", "L4", "RTX-A6000", "zz"]))
def test_any_node_spec_parses_or_fails_as_input(a: str, b: str, name: str) -> None:
    try:
        reqs = parse_gpu_spec(f"{a}x{b}x{name}")
    except InputError:
        return
    assert all(r.count >= 1 for r in reqs)
    assert sum(r.count * max(1, r.nodes) for r in reqs) <= 1024


# ---- snapshots: the node field, one file per node, cluster files -----------------------

def test_old_snapshots_load_as_node_0_and_the_node_round_trips() -> None:
    inv = _snapshot()
    data = inv.to_dict()
    for g in data["gpus"]:
        del g["node"]  # a snapshot written before multi-node planning
    assert all(g.node == 0 for g in Inventory.from_dict(data).gpus)
    two = simulated_inventory("2x2xH100-80GB")
    assert Inventory.from_dict(json.loads(two.to_json())) == two


@pytest.mark.parametrize("bad", [-1, "1", True, 1.5, 10**9])
def test_a_bad_node_field_is_named(bad: object) -> None:
    data = _snapshot().to_dict()
    data["gpus"][1]["node"] = bad
    with pytest.raises(InputError, match=r"gpus\[1\]\.node"):
        Inventory.from_dict(data)


def test_one_snapshot_per_node_joins_into_nodes(tmp_path: Path) -> None:
    a = _write(tmp_path / "node0.json", _snapshot())
    b = _write(tmp_path / "node1.json", _snapshot())
    inv = get_inventory(inventory_file=f"{a}{SEPARATOR}{b}")
    assert [(g.index, g.node) for g in inv.gpus] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert [g.uuid for g in inv.gpus[2:]] == [g.uuid for g in _snapshot().gpus]
    for g in inv.gpus:  # peers renumbered, never across nodes
        assert all(inv.gpus[p].node == g.node for p in g.nvlink_peers)
    assert inv.source == f"file:{a}{SEPARATOR}{b}"
    # a single path keeps its old meaning
    assert get_inventory(inventory_file=str(a)).source == f"file:{a}"


@pytest.mark.parametrize(("value", "problem"), [
    ("{a}{sep}{sep}{b}", "Empty path"),
    ("{a}{sep}{missing}", "Cannot read inventory file"),
    ("{a}{sep}{multi}", "already lists several nodes"),
])
def test_bad_snapshot_lists_are_input_errors(tmp_path: Path, value: str, problem: str) -> None:
    a = _write(tmp_path / "a.json", _snapshot())
    b = _write(tmp_path / "b.json", _snapshot())
    multi = _write(tmp_path / "m.json", simulated_inventory("2x2xH100-80GB"))
    text = value.format(a=a, b=b, sep=SEPARATOR, missing=tmp_path / "nope.json", multi=multi)
    with pytest.raises(InputError, match=problem):
        get_inventory(inventory_file=text)


def test_cluster_file_mixes_snapshots_and_specs(tmp_path: Path) -> None:
    _write(tmp_path / "node0.json", _snapshot())
    doc = {"format": "launcher-cluster/1",
           "nodes": [{"inventory": "node0.json"}, {"gpus": "2xH100-80GB"}]}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    inv = get_inventory(inventory_file=str(path))
    assert [g.node for g in inv.gpus] == [0, 0, 1, 1]
    assert [g.simulated for g in inv.gpus] == [False, False, True, True]
    assert inv.source == f"cluster:{path}"
    assert any(a.startswith("node 1: H100-80GB: simulated") for a in inv.assumptions)
    # JSON works too
    (tmp_path / "cluster.json").write_text(json.dumps(doc))
    assert get_inventory(inventory_file=str(tmp_path / "cluster.json")) == replace(
        inv, source=f"cluster:{tmp_path / 'cluster.json'}")


@pytest.mark.parametrize(("doc", "field"), [
    ([], "<root>"),
    ({"nodes": [{"gpus": "1xL4"}]}, "format"),
    ({"format": "launcher-cluster/1"}, "nodes"),
    ({"format": "launcher-cluster/1", "nodes": []}, "nodes"),
    ({"format": "launcher-cluster/1", "nodes": [{"gpus": "1xL4"}], "extra": 1}, "extra"),
    ({"format": "launcher-cluster/1", "nodes": ["1xL4"]}, "nodes[0]"),
    ({"format": "launcher-cluster/1", "nodes": [{"gpus": "1xL4", "inventory": "a.json"}]},
     "nodes[0]"),
    ({"format": "launcher-cluster/1", "nodes": [{"gpus": "1xL4"}, {"gpu": "1xL4"}]},
     "nodes[1].gpu"),
    ({"format": "launcher-cluster/1", "nodes": [{"gpus": "1xL4"}, {"gpus": "0xL4"}]},
     "nodes[1].gpus"),
    ({"format": "launcher-cluster/1", "nodes": [{"gpus": "2x1xL4"}]}, "nodes[0].gpus"),
    ({"format": "launcher-cluster/1", "nodes": [{"gpus": 8}]}, "nodes[0].gpus"),
    ({"format": "launcher-cluster/1", "nodes": [{"inventory": "missing.json"}]},
     "nodes[0].inventory"),
    ({"format": "launcher-cluster/1", "nodes": [{"inventory": ""}]}, "nodes[0].inventory"),
])
def test_bad_cluster_files_name_the_field(tmp_path: Path, doc: object, field: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as e:
        get_inventory(inventory_file=str(path))
    assert f"field {field}:" in e.value.message
    assert e.value.exit_code == 2


def test_bad_cluster_file_exits_2_on_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("format: launcher-cluster/1\nnodes:\n  - gpus: 8xH100-80GB\n  - gpus: -3\n")
    r = run_cli("plan", "llama-3.1-8b", "--inventory-file", str(path))
    assert r.returncode == 2, r.stderr
    assert "nodes[1].gpus" in r.stderr and "Traceback" not in r.stderr


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8)
    | st.sampled_from(["launcher-cluster/1", "1xL4", "2xH100-80GB", "nodes", "gpus"]),
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.sampled_from(["format", "nodes", "gpus", "inventory", "x"]), kids,
                      max_size=3),
    max_leaves=12)


@FAST
@given(doc=_JSONISH)
def test_any_cluster_document_parses_or_fails_as_input(tmp_path: Path, doc: object) -> None:
    try:
        inv = parse_cluster(doc, tmp_path / "c.yaml")
    except InputError as e:
        assert "field" in e.message or "Cannot read" in e.message
        return
    assert inv.gpus


# ---- the planner on nodes -----------------------------------------------------------------

def test_405b_bf16_on_two_nodes_is_tp8_pp2() -> None:
    p = _plan("llama-3.1-405b", "2x8xH100-80GB", quantization="none")
    assert p.feasible, p.reason
    d = p.decision
    assert (d.tensor_parallel_size, d.pipeline_parallel_size, d.data_parallel_size) == (8, 2, 1)
    assert (d.nnodes, d.gpus_per_node) == (2, 8)
    assert p.chosen.option.label == "bf16"
    j = p.to_json()
    assert j["decision"]["nnodes"] == 2
    assert [(n["node"], n["pipeline_stages"], n["local_gpus"]) for n in j["nodes"]] == [
        (0, [0], list(range(8))), (1, [1], list(range(8)))]
    assert any("InfiniBand/RoCE" in n for n in j["notes"])
    names = {e["name"]: e for e in j["decisions"]}
    assert "1 stage boundary" in names["nnodes"]["reason"]
    assert "node 1: replica 0 stage 1 on GPUs 8-15" in names["gpus_per_node"]["reason"]
    # every candidate keeps TP inside a node of 8
    assert all(8 % c["tensor_parallel_size"] == 0 for c in j["candidates"])
    # the multi-node engine gets every number it needs from the decision
    for rank in (0, 1):
        cmd = node_command(p.engine, nnodes=d.nnodes, node_rank=rank, master_addr="10.0.0.1",
                           master_port=29501, tp=d.tensor_parallel_size,
                           pp=d.pipeline_parallel_size, dp=d.data_parallel_size,
                           gpus_per_node=d.gpus_per_node)
        assert cmd.flag("--nnodes") == "2" and cmd.flag("--node-rank") == str(rank)


def test_deepseek_v3_on_two_nodes_keeps_tp_inside_a_node() -> None:
    p = _plan("deepseek-v3", "2x8xH100-80GB")
    assert p.feasible, p.reason
    d = p.decision
    assert d.nnodes == 2 and d.gpus_per_node == 8
    assert 8 % d.tensor_parallel_size == 0
    assert d.tensor_parallel_size * d.pipeline_parallel_size * d.data_parallel_size == 16
    assert d.pipeline_parallel_size >= 2  # 671B does not fit one node of 8 H100s
    ep = [u for u in p.unavailable if u.key == "dp-ep"]
    assert ep and "--enable-expert-parallel" in ep[0].reason
    assert crossing_hops(p.chosen.gpus, d.tensor_parallel_size,
                         d.pipeline_parallel_size) == 1


def test_a_tight_node_bounds_every_rank(tmp_path: Path) -> None:
    clean = simulated_inventory("1x8xH100-80GB")
    busy = replace(clean, gpus=tuple(replace(g, used_bytes=5 * GiB, free_bytes=g.total_bytes
                                             - 5 * GiB) for g in clean.gpus))
    doc = {"format": "launcher-cluster/1",
           "nodes": [{"inventory": str(_write(tmp_path / "n0.json", clean))},
                     {"inventory": str(_write(tmp_path / "n1.json", busy))}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    even = _plan("llama-3.1-405b", "2x8xH100-80GB", quantization="none", tp=8, pp=2,
                 max_model_len=16384)
    tight = _plan("llama-3.1-405b", inventory_file=str(tmp_path / "c.yaml"),
                  quantization="none", tp=8, pp=2, max_model_len=16384)
    assert even.feasible and tight.feasible, tight.reason
    assert tight.decision.kv_cache_memory_bytes < even.decision.kv_cache_memory_bytes
    # the busy node's GPUs hold 5 GiB of other processes; the KV cache is the same on all
    node_of = {g.index: g.node for g in tight.chosen.gpus}
    tightest = min(tight.budgets, key=lambda b: b.limit_bytes - b.planned_total + b.planned[
        "kv_cache"])
    assert node_of[tightest.index] == 1
    assert all(b.planned["kv_cache"] == tight.decision.kv_cache_memory_bytes
               for b in tight.budgets)
    assert all(b.planned_total <= b.limit_bytes for b in tight.budgets)
    assert "node 1" in {e.name: e for e in tight.decisions}["nnodes"].reason


def test_the_cross_node_hop_is_charged() -> None:
    one = _plan("llama-3.1-405b", "16xH100-80GB", quantization="none", tp=8, pp=2)
    two = _plan("llama-3.1-405b", "2x8xH100-80GB", quantization="none", tp=8, pp=2)
    assert one.chosen.predicted and two.chosen.predicted
    assert one.decision.kv_cache_memory_bytes == two.decision.kv_cache_memory_bytes
    assert two.chosen.predicted.itl_ms > one.chosen.predicted.itl_ms
    assert two.chosen.predicted.ttft_ms > one.chosen.predicted.ttft_ms
    assert crossing_hops(one.chosen.gpus, 8, 2) == 0


def test_nothing_fits_on_all_nodes_exits_3_with_more_nodes() -> None:
    r = run_cli("plan", "llama-3.1-405b", "--gpus", "2x4xH100-80GB", "--quantization",
                "none", "--json")
    assert r.returncode == 3, r.stderr
    j = json.loads(r.stdout)
    assert not j["feasible"] and "2 nodes × 4×" in j["reason"]
    assert j["nodes"] == [] and j["decision"] is None
    more = [s for s in j["suggestions"] if "nodes ×" in s and s.startswith("would fit")]
    assert more, j["suggestions"]
    assert "at bf16 (TP4×PP" in more[0]  # more nodes of 4, TP inside each
    assert any("--quantization auto" in s for s in j["suggestions"])


def test_unequal_nodes_and_straddling_tp_are_input_errors() -> None:
    with pytest.raises(InputError, match="different numbers of GPUs"):
        _plan("llama-3.1-8b", "1x8xH100-80GB,1x4xH100-80GB")
    with pytest.raises(InputError, match="straddle"):
        _plan("llama-3.1-8b", "2x8xH100-80GB", tp=16)
    with pytest.raises(InputError, match="neither divides"):
        _plan("llama-3.1-8b", "2x6xH100-80GB", tp=2, pp=4)
    r = run_cli("plan", "llama-3.1-8b", "--gpus", "2x8xH100-80GB", "--tp", "16")
    assert r.returncode == 2 and "--tp 8 --pp 2" in r.stderr


def test_small_model_on_nodes_runs_replicas_on_every_gpu() -> None:
    p = _plan("llama-3.1-8b", "2x4xH100-80GB")
    assert p.feasible
    d = p.decision
    assert d.nnodes == 2 and d.gpus_per_node == 4
    assert d.tensor_parallel_size * d.pipeline_parallel_size * d.data_parallel_size == 8
    assert d.data_parallel_size % 2 == 0  # replicas split evenly over the nodes
    assert crossing_hops(p.chosen.gpus, d.tensor_parallel_size, d.pipeline_parallel_size) == 0


def test_one_machine_plans_say_one_node() -> None:
    j = _plan("llama-3.1-8b", "2xH100-80GB").to_json()
    assert j["decision"]["nnodes"] == 1
    assert j["decision"]["gpus_per_node"] == (j["decision"]["tensor_parallel_size"]
                                              * j["decision"]["pipeline_parallel_size"]
                                              * j["decision"]["data_parallel_size"])
    assert len(j["nodes"]) == 1 and j["nodes"][0]["node"] == 0
    assert not any("InfiniBand" in n for n in j["notes"])
    assert "nnodes" not in {e["name"] for e in j["decisions"]}


def test_moe_replicas_across_nodes_say_what_vllm_shares() -> None:
    p = _plan("qwen3-30b-a3b", "2x4xH100-80GB")
    assert p.feasible and p.decision.data_parallel_size > 1 and p.decision.nnodes == 2
    assert any("MoE with data parallel across nodes" in n for n in p.notes)
    assert any(u.key == "dp-ep" for u in p.unavailable)


def test_a_pipe_named_like_a_cluster_file_fails_at_once(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "cluster.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        get_inventory(inventory_file=str(fifo))
