"""The edge around the pure planner: gather the inputs (inventory, model, engine version,
profile variants), plan, and attach the engine command. Used by `launcher plan`,
`serve --dry-run` and `serve`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from launcher.planner import Plan, PlanRequest
from launcher.planner import plan as make_plan


@dataclass(frozen=True)
class Target:
    """Where and how the engine would run."""

    gpus: str | None = None
    inventory_file: str | None = None
    engine_version: str | None = None
    engine_python: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000


def model_ref(spec) -> str | None:
    """What the engine's `--model` gets: the local directory, else the repo id."""
    if spec.source.startswith("local:"):
        return spec.source.split(":", 1)[1]
    return spec.repo_id


def served_name(model: str) -> str | None:
    """Clients address the model by the name the user typed, when it is a plain alias."""
    if "/" in model or Path(model).expanduser().exists():
        return None
    return model


def build_plan(model: str, req: PlanRequest, target: Target) -> Plan:
    from launcher.engines.version import choose_version
    from launcher.engines.vllm import command
    from launcher.hardware import get_inventory
    from launcher.hardware.catalog import simulated_inventory
    from launcher.memory.overheads import calibration_for
    from launcher.models.profiles import find_profile
    from launcher.models.resolve import resolve_model

    version, version_source = choose_version(target.engine_version)
    cal = calibration_for(version)
    spec = resolve_model(model)
    req.check(spec.max_position_embeddings)
    inv = get_inventory(gpus=target.gpus, inventory_file=target.inventory_file)
    profile = find_profile(model) if not Path(model).expanduser().exists() else None
    templates = list(inv.gpus[:1])
    h100 = simulated_inventory("1xH100-80GB").gpus[0]
    if not templates or templates[0].name != h100.name:
        templates.append(h100)
    p = make_plan(spec, list(inv.gpus), cal, req,
                  variants=profile.variants if profile else (), model_ref=model_ref(spec),
                  engine_version_source=f"{version} ({version_source})", templates=templates,
                  inventory_source=inv.source)
    p.notes.extend(inv.assumptions)
    if p.feasible:
        p.engine = command(p, python=target.engine_python or sys.executable, host=target.host,
                           port=target.port, served_model_name=served_name(model)).to_json()
    return p
