"""docs/plan-json.md is generated from launcher/planner/schema.py, and the schema matches what
plans really emit: every emitted key is documented, every documented key is emitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.planner import PlanRequest, schema
from launcher.prepare import Target, build_plan

DOC = Path(__file__).resolve().parents[1] / "docs" / "plan-json.md"


@pytest.fixture(scope="module")
def plans() -> list[dict]:
    return [
        build_plan("deepseek-67b", PlanRequest(), Target(gpus="2xH100-80GB")).to_json(),
        build_plan("llama-3.1-8b", PlanRequest(), Target(gpus="1xH100-80GB")).to_json(),
        build_plan("deepseek-67b", PlanRequest(), Target(gpus="1xRTX4090")).to_json(),
        build_plan("demo", PlanRequest(), Target(device="cpu")).to_json(),
    ]


def _keys(objs: list[dict | None]) -> set[str]:
    return {k for o in objs if o for k in o}


def _check(section: schema.Section, emitted: set[str], where: str) -> None:
    assert emitted - set(section) == set(), f"{where}: emitted but not documented"
    assert set(section) - emitted == set(), f"{where}: documented but never emitted"


def test_every_emitted_key_is_documented_and_back(plans: list[dict]) -> None:
    assert any(p["feasible"] for p in plans) and not all(p["feasible"] for p in plans)
    _check(schema.TOP, _keys(plans), "top level")
    _check(schema.MODEL, _keys([p["model"] for p in plans]), "model")
    _check(schema.REQUEST, _keys([p["request"] for p in plans]), "request")
    _check(schema.DECISION, _keys([p["decision"] for p in plans]), "decision")
    _check(schema.GPU, _keys([g for p in plans for g in p["gpus"]]), "gpus[]")
    _check(schema.CAPACITY, _keys([p["capacity"] for p in plans]), "capacity")
    _check(schema.ENGINE, _keys([p["engine"] for p in plans]), "engine")
    _check(schema.CANDIDATE, _keys([c for p in plans for c in p["candidates"]]), "candidates[]")


def test_typed_objects_and_documentation_agree() -> None:
    assert schema.typed_drift() == []


def test_checked_in_page_is_generated() -> None:
    assert DOC.read_text() == schema.markdown(), \
        "docs/plan-json.md is stale: python -m launcher.planner.schema > docs/plan-json.md"
