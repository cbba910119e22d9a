"""The boot store: what verified starts measured, kept in a real file, and the correction the
next plan on this host takes from it (exact and near fingerprints), the overshoot check in the
verdict, and `launcher calibration show|clear`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from rich.console import Console
from test_vllm_log import CPU_EXPLICIT

from launcher.calibration import boot_store
from launcher.calibration.boot_store import BootStore
from launcher.calibration.boots import (
    CAP_FLOOR_BYTES,
    EXACT_RECENT,
    Boot,
    Fingerprint,
    boot_of,
    correction,
    model_non_kv_bytes,
)
from launcher.engines.vllm_log import LogFigures, parse_log
from launcher.memory.components import Component
from launcher.planner import PlanRequest
from launcher.planner.plan import Plan
from launcher.prepare import Target, boot_fingerprint, build_plan, learns_here
from launcher.render.serve import ServeConsole
from launcher.runtime.loop import Session, remember
from launcher.runtime.measure import DeviceReading
from launcher.runtime.report import Attempt, Report, ReportWriter
from launcher.runtime.signals import StopRequest
from launcher.runtime.state import ControlState
from launcher.runtime.verify import CheckName, verify
from launcher.units import GiB, MiB

# What a new user saw: a 0.5B model (0.92 GiB of bf16 weights) on the CPU engine used this
# much more than planned, and the soft check still said ok.
USER_OVERSHOOT = int(0.60 * GiB)
FIGURES = parse_log("\n".join(CPU_EXPLICIT))[0].figures  # a real vLLM 0.32 CPU start


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private launcher cache (the demo model is built there on first use)."""
    monkeypatch.setenv("LAUNCHER_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def cpu_plan(cache: Path) -> Plan:
    return build_plan("demo", PlanRequest(), Target(device="cpu"))


def _engine_planned(p: Plan) -> int:
    b = p.budgets[0]
    return b.planned_total - b.planned[Component.OTHER]


def _booted(p: Plan, over: int = 0, at: str = "2025-01-01T00:00:00+00:00",
            fp: Fingerprint | None = None, measured: int | None = None) -> Boot:
    """The record of a verified start of `p` whose engine measured `over` bytes more than
    the memory model planned for it (or `measured` bytes)."""
    fp = fp or boot_fingerprint(p, Target(device="cpu"))
    assert fp is not None
    planned = _engine_planned(p)
    row = {"index": 0, "engine_planned_bytes": planned,
           "engine_measured_bytes": measured if measured is not None else
           planned - p.request.reserve_bytes + over,
           "source": "PSS of 4 engine processes"}
    return boot_of(p, [row], FIGURES.to_json(), fp, at)


# ---- the store ------------------------------------------------------------------------

def test_store_round_trips_and_keeps_the_newest(cpu_plan: Plan, cache: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = BootStore()
    assert store.path == cache / "calibration" / "boots.json"
    assert store.load().boots == () and store.load().problem is None
    boots = [_booted(cpu_plan, i * MiB, at=f"2025-01-0{i + 1}T00:00:00+00:00") for i in range(4)]
    monkeypatch.setattr(boot_store, "KEEP", 3)
    for n, b in enumerate(boots, 1):
        assert store.add(b) == (min(n, 3), None)
    assert store.load().boots == tuple(boots[1:])  # equal field by field, oldest dropped
    doc = json.loads(store.path.read_text())
    assert doc["format"] == "launcher-boots/1"
    first = doc["boots"][0]
    assert first["overshoot_bytes"] == 1 * MiB and first["fingerprint"]["device"] == "cpu"
    assert first["figures"]["kv_cache"] == int(FIGURES.kv_cache_gib * GiB)
    assert not list(store.path.parent.glob(".boots.json.*"))  # no temporary left behind


def test_two_launchers_writing_at_once_lose_no_boot(cpu_plan: Plan, cache: Path) -> None:
    boot = json.dumps(_booted(cpu_plan, 0).to_json())
    code = textwrap.dedent(f"""
        import json, sys
        from dataclasses import replace
        from launcher.calibration.boot_store import BootStore
        from launcher.calibration.boots import Boot
        boot = Boot.from_json(json.loads({boot!r}))
        for i in range(25):
            BootStore().add(replace(boot, at=f"{{sys.argv[1]}}-{{i}}"))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, name], cwd=ROOT,
                              env={"LAUNCHER_CACHE_DIR": str(cache), "PATH": ""})
             for name in ("a", "b")]
    assert [p.wait(120) for p in procs] == [0, 0]
    ats = sorted(b.at for b in BootStore().load().boots)
    assert ats == sorted(f"{n}-{i}" for n in "ab" for i in range(25))


@pytest.mark.parametrize("data", [b"{not json", b'{"format": "something-else/1", "boots": []}',
                                  b'{"format": "launcher-boots/1", "boots": [{"at": 1}]}',
                                  b'{"format": "launcher-boots/1", "boots": {}}', b"\xff\xfe"])
def test_a_corrupt_store_is_set_aside_and_reported(cpu_plan: Plan, cache: Path,
                                                   data: bytes) -> None:
    store = BootStore()
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(data)
    found = store.load()
    assert found.boots == () and found.problem is not None
    assert "set aside as boots.json.corrupt-" in found.problem
    [aside] = store.path.parent.glob("boots.json.corrupt-*")
    assert aside.read_bytes() == data and not store.path.exists()
    assert store.add(_booted(cpu_plan, 0)) == (1, None)  # a new store starts
    store.path.write_text("[]")
    n, problem = store.add(_booted(cpu_plan, 0))  # a writer sets it aside too
    assert n == 1 and problem is not None
    # the plan reports it and carries on from the fitted constants
    store.path.write_text("garbage")
    p = build_plan("demo", PlanRequest(), Target(device="cpu"))
    assert p.feasible and any("boot store" in n and "unreadable" in n for n in p.notes)


# ---- the correction ---------------------------------------------------------------------

def test_an_exact_boot_adds_its_overshoot_to_the_next_plan(cpu_plan: Plan) -> None:
    assert cpu_plan.request.learned_bytes == 0
    assert not any("calibrated from" in n for n in cpu_plan.notes)
    BootStore().add(_booted(cpu_plan, USER_OVERSHOOT))
    p = build_plan("demo", PlanRequest(), Target(device="cpu"))
    learned = p.request.learned_bytes
    assert learned == -(-USER_OVERSHOOT // MiB) * MiB
    assert p.request.reserve_bytes == learned
    runtime = p.budgets[0].planned[Component.RUNTIME]
    assert runtime == cpu_plan.budgets[0].planned[Component.RUNTIME] + learned
    [note] = [n for n in p.notes if n.startswith("calibrated from")]
    assert note.startswith("calibrated from 1 boot on this host (+0.60 GiB runtime per device)")
    assert "this configuration measured +0.60 GiB" in note
    out = p.to_json()
    assert out["request"]["learned_bytes"] == learned and note in out["notes"]
    # the engine holds what it held before (the KV cache is the same); the corrected plan
    # records the same overshoot again, so it does not learn its own correction away
    again = _booted(p, measured=_engine_planned(cpu_plan) + USER_OVERSHOOT)
    assert again.engine_planned_bytes == _engine_planned(cpu_plan) + learned
    assert again.overshoot_bytes == USER_OVERSHOOT and again.reserve_bytes == learned
    BootStore().add(again)
    assert build_plan("demo", PlanRequest(), Target(device="cpu")).request.learned_bytes == \
        learned


def test_exact_boots_take_the_largest_recent_overshoot_and_never_shrink(cpu_plan: Plan) -> None:
    fp = boot_fingerprint(cpu_plan, Target(device="cpu"))
    assert fp is not None
    base = model_non_kv_bytes(cpu_plan)
    old = _booted(cpu_plan, 900 * MiB)
    recent = [_booted(cpu_plan, o * MiB) for o in (100, 300, 200)]
    c = correction([old, *recent], fp, base)
    assert c is not None and c.kind == "exact" and c.boots == 1 + EXACT_RECENT
    assert c.extra_bytes == 300 * MiB  # the oldest boot is no longer looked at
    under = correction([_booted(cpu_plan, -400 * MiB)], fp, base)
    assert under is not None and under.extra_bytes == 0
    assert "under the model: the plan is not shrunk" in under.note()
    noise = correction([_booted(cpu_plan, 5 * MiB)], fp, base)
    assert noise is not None and noise.extra_bytes == 0 and "within the model" in noise.note()
    huge = correction([_booted(cpu_plan, 40 * GiB)], fp, base)
    assert huge is not None and huge.capped and huge.extra_bytes == CAP_FLOOR_BYTES
    assert "capped at 1.00 GiB" in huge.note()
    other_model = replace(fp, model="/elsewhere/model")
    assert correction([_booted(cpu_plan, 300 * MiB, fp=other_model)], fp, base) is None
    other_engine = replace(fp, engine="0.31.0", max_num_seqs=8)
    assert correction([_booted(cpu_plan, 300 * MiB, fp=other_engine)], fp, base) is None
    # an undershooting plan stays what the model says
    BootStore().add(_booted(cpu_plan, -400 * MiB))
    p = build_plan("demo", PlanRequest(), Target(device="cpu"))
    assert p.request.learned_bytes == 0 and p.request.reserve_bytes == 0
    for c in (Component.RUNTIME, Component.WEIGHTS, Component.ACTIVATION, Component.KV_CACHE):
        assert p.budgets[0].planned[c] == cpu_plan.budgets[0].planned[c]  # other: the host's now
    assert any(n.startswith("calibrated from 1 boot on this host (+0.00 GiB runtime per "
                            "device)") for n in p.notes)


def test_near_boots_give_the_median_relative_overshoot(cpu_plan: Plan) -> None:
    fp = boot_fingerprint(cpu_plan, Target(device="cpu"))
    assert fp is not None
    base = model_non_kv_bytes(cpu_plan)
    assert base == cpu_plan.budgets[0].non_kv_bytes - cpu_plan.budgets[0].planned[
        Component.OTHER]
    shapes = [replace(fp, max_num_seqs=8), replace(fp, max_num_seqs=16, enforce_eager=True),
              replace(fp, max_num_batched_tokens=512)]
    boots = [_booted(cpu_plan, int(f * base), fp=s) for f, s in zip((0.10, 0.30, 0.20), shapes, strict=True)]
    c = correction(boots, fp, base)
    assert c is not None and c.kind == "near" and c.boots == 3
    assert c.fraction == pytest.approx(0.20, abs=1e-3)
    assert c.extra_bytes == pytest.approx(0.20 * base, abs=MiB)
    for b in boots:
        BootStore().add(b)
    p = build_plan("demo", PlanRequest(), Target(device="cpu"))
    assert p.request.learned_bytes == c.extra_bytes
    [note] = [n for n in p.notes if n.startswith("calibrated from 3 boots on this host (+")]
    assert "other shapes or batches measured a median +20.0%" in note
    # an exact boot wins over near ones
    BootStore().add(_booted(cpu_plan, 100 * MiB))
    assert build_plan("demo", PlanRequest(), Target(device="cpu")).request.learned_bytes == \
        100 * MiB


def test_only_real_devices_learn(cpu_plan: Plan) -> None:
    assert learns_here("nvml") and learns_here("host:numa-node")
    assert learns_here("measured by the engine")
    assert not learns_here("simulated:1xH100-80GB") and not learns_here("file:gpus.json")
    BootStore().add(_booted(cpu_plan, USER_OVERSHOOT))
    host = {"format": "launcher-inventory/1", "source": "recorded", "driver_version": None,
            "cuda_driver_version": None, "captured_at": None, "assumptions": [], "gpus": [],
            "host": {"total_ram_bytes": 16 * GiB, "available_ram_bytes": 12 * GiB,
                     "cpu_count": 2}}
    snap = BootStore().path.parent / "host.json"
    snap.write_text(json.dumps(host))
    p = build_plan("demo", PlanRequest(), Target(device="cpu", inventory_file=str(snap)))
    assert p.request.learned_bytes == 0 and not any("calibrated" in n for n in p.notes)


# ---- the verdict and the loop -------------------------------------------------------------

def _figures(p: Plan) -> LogFigures:
    """The recorded CPU start's figures, with the capacity this plan asked for (an engine
    that took the plan's numbers)."""
    c = p.chosen
    assert c is not None
    return replace(FIGURES, kv_cache_tokens=c.kv_tokens,
                   explicit_kv_cache_gib=c.kv_cache_memory_bytes / GiB)


def _reading(p: Plan, engine_bytes: int) -> DeviceReading:
    b = p.budgets[0]
    return DeviceReading(0, b.total_bytes, b.planned[Component.OTHER] + engine_bytes,
                         engine_bytes, "PSS of 4 engine processes; node numa-node")


def test_an_engine_over_its_plan_is_off_in_the_verdict_but_not_a_failure(
        cpu_plan: Plan) -> None:
    planned = _engine_planned(cpu_plan)
    over = verify(cpu_plan, [_reading(cpu_plan, planned + USER_OVERSHOOT)], _figures(cpu_plan), None, {})
    check = next(c for c in over.checks if c.what == CheckName.DEVICE_ENGINE)
    assert over.ok and not check.ok and not check.hard  # under the limit: it still serves
    assert check.name in [c.name for c in over.off]
    assert "+0.600 GiB" in check.detail and "came in short" in check.detail
    out = over.to_json()
    assert out["off"] == [check.name] and out["failures"] == []
    assert out["engine_overshoot_bytes"] == USER_OVERSHOOT
    # a sliver over the plan, or under it, is fine
    near = verify(cpu_plan, [_reading(cpu_plan, planned + 16 * MiB)], _figures(cpu_plan), None, {})
    assert next(c for c in near.checks if c.what == CheckName.DEVICE_ENGINE).ok
    assert near.to_json()["off"] == [] and near.to_json()["engine_overshoot_bytes"] == 16 * MiB
    # +4 % (the user's case) is off, where the old ±10 % said ok
    four = verify(cpu_plan, [_reading(cpu_plan, int(planned * 1.04))], _figures(cpu_plan), None, {})
    assert four.ok and [c.name for c in four.off] == [check.name]


def test_a_verified_start_is_remembered_and_the_second_plan_learns(cpu_plan: Plan,
                                                                   tmp_path: Path) -> None:
    state, report = ControlState(), Report(model="demo")
    s = Session(model="demo", target=Target(device="cpu"), log_dir=tmp_path / "logs",
                report=report, writer=ReportWriter(report, [tmp_path / "r.json"], state),
                state=state, out=ServeConsole(Console(file=io.StringIO(), width=200)),
                stop=StopRequest())
    planned = _engine_planned(cpu_plan)
    figures = _figures(cpu_plan)
    v = verify(cpu_plan, [_reading(cpu_plan, planned + USER_OVERSHOOT)], figures, 4096, {})
    assert v.ok
    attempt = Attempt(1, cpu_plan.to_json(), figures=figures.to_json(),
                      verification=v.to_json())
    remember(s, cpu_plan, attempt)
    assert attempt.boot is not None and attempt.boot["recorded"]
    assert attempt.boot["overshoot_bytes"] == USER_OVERSHOOT and attempt.boot["boots_stored"] == 1
    [boot] = BootStore().load().boots
    assert boot.engine_measured_bytes == planned + USER_OVERSHOOT
    assert boot.figures["kv_cache"] == cpu_plan.chosen.kv_cache_memory_bytes  # type: ignore[union-attr]
    assert boot.fingerprint.device_name == "cpu" and boot.fingerprint.driver is None
    second = build_plan("demo", PlanRequest(), Target(device="cpu"))
    assert second.request.learned_bytes >= USER_OVERSHOOT
    # a store that cannot be written is a warning, not a failed start
    BootStore().path.unlink()
    BootStore().path.mkdir()
    remember(s, cpu_plan, attempt)
    assert attempt.boot is not None and not attempt.boot["recorded"]
    assert "not recorded in the boot store" in s.out.console.file.getvalue()  # type: ignore[attr-defined]


# ---- the command ------------------------------------------------------------------------

def test_calibration_show_and_clear(cpu_plan: Plan, cache: Path) -> None:
    env = {"LAUNCHER_CACHE_DIR": str(cache)}
    p = run_cli("calibration", "show", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"path": str(cache / "calibration" / "boots.json"),
                                    "problem": None, "boots": []}
    BootStore().add(_booted(cpu_plan, USER_OVERSHOOT))
    BootStore().add(_booted(cpu_plan, -100 * MiB))
    p = run_cli("calibration", "show", "--json", env=env)
    shown = json.loads(p.stdout)["boots"]
    assert [b["overshoot_bytes"] for b in shown] == [USER_OVERSHOOT, -100 * MiB]
    assert shown[0]["fingerprint"]["model"] == cpu_plan.decision.model  # type: ignore[union-attr]
    table = run_cli("calibration", "show", env=env)
    assert table.returncode == 0 and "demo bfloat16" in table.stdout
    assert "+0.60 GiB" in table.stdout and "TP1×PP1×DP1" in table.stdout
    p = run_cli("calibration", "clear", env=env)
    assert p.returncode == 0 and p.stdout.startswith(
        f"removed 2 boots from {cache / 'calibration' / 'boots.json'}")
    assert json.loads(run_cli("calibration", "show", "--json", env=env).stdout)["boots"] == []
    assert "nothing to remove" in run_cli("calibration", "clear", env=env).stdout
    # a corrupt store: reported on stderr, no traceback
    BootStore().path.write_text("{")
    p = run_cli("calibration", "show", env=env)
    assert p.returncode == 0 and "set aside" in p.stderr and "Traceback" not in p.stderr
    assert "removed the unreadable copy" in run_cli("calibration", "clear", env=env).stdout


# ---- the second size the CPU constants are fitted on --------------------------------------

def test_the_large_demo_is_qwen2_5_0_5b_shaped_bf16(tmp_path: Path) -> None:
    """`launcher demo-model --size large` (0.92 GiB, ~20 s) is too big to build in a unit
    test: its tensor table is checked at full size, its writer on a narrow copy."""
    import math

    import numpy as np

    from launcher.models.demo import LARGE, LARGE_VOCAB, _tensor_shapes, _write_bf16_safetensors
    from launcher.models.safetensors_meta import read_header

    full = _tensor_shapes(dict(LARGE, vocab_size=LARGE_VOCAB))
    assert sum(math.prod(s) for s in full.values()) == 494_005_120  # 0.92 GiB in bf16
    assert "lm_head.weight" not in full and LARGE["head_dim"] == 64
    narrow = dict(LARGE, hidden_size=128, intermediate_size=256, num_attention_heads=2,
                  num_key_value_heads=1, num_hidden_layers=2, vocab_size=512)
    path = tmp_path / "model.safetensors"
    _write_bf16_safetensors(narrow, path)
    tensors = {t.name: t for t in read_header(path)}
    assert {n: t.shape for n, t in tensors.items()} == _tensor_shapes(narrow)
    assert {t.dtype for t in tensors.values()} == {"BF16"}
    raw = path.read_bytes()
    head = int.from_bytes(raw[:8], "little")
    offsets = json.loads(raw[8:8 + head])
    assert head % 8 == 0 and len(raw) == 8 + head + 2 * sum(
        math.prod(s) for s in _tensor_shapes(narrow).values())

    def values(name: str) -> np.ndarray:
        a, b = offsets[name]["data_offsets"]
        bits = np.frombuffer(raw[8 + head + a:8 + head + b], "<u2").astype("<u4") << 16
        return bits.view("<f4")

    assert (values("model.norm.weight") == 1.0).all()
    w = values("model.layers.0.mlp.down_proj.weight")
    assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002


def test_a_new_hostname_still_matches_the_same_hardware() -> None:
    """Docker gives every container a new hostname while the store (on the cache volume) and
    the GPUs stay: the host is recorded, not matched."""
    from dataclasses import replace

    from launcher.calibration.boots import Fingerprint

    a = Fingerprint(engine="0.33.0", device="cuda", device_name="NVIDIA H100 80GB HBM3",
                    driver="570.1", host="container-a", model="org/m", dtype="bfloat16",
                    quantization="none", tp=1, pp=1, dp=1, max_num_seqs=256,
                    max_num_batched_tokens=8192, enforce_eager=False, kv_cache_dtype="auto")
    b = replace(a, host="container-b")
    assert a == b and a.near(b)
    assert not a.near(replace(b, driver="580.2"))
