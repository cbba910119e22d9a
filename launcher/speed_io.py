"""The edge of the speed model: read profiles/engines/speed.yaml (once per process), and
`launcher speed` (plan memory for the asked configuration, then predict).

The configuration is planned by the existing planner (`launcher.prepare.build_plan`, tp/pp
forced when given, the context at least prompt + answer); a configuration that does not fit
fails like `plan` (exit 3, the planner's reason). Then the pure speed model
(`launcher.speed`) predicts the workload on the planned shape.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import DoesNotFitError, InputError, UnknownGpuError
from launcher.paths import profiles_dir
from launcher.speed.calibration import SpeedCalibration, calibration_from_dict
from launcher.speed.shape import ServingShape, shape_of
from launcher.speed.workload import Value, Workload, workload_from


def speed_calibration_path() -> Path:
    """profiles/engines/speed.yaml, in a checkout or an installed wheel (`launcher.paths`)."""
    return profiles_dir() / "engines" / "speed.yaml"


@functools.lru_cache(maxsize=4)
def load_speed_calibration(path: Path | None = None) -> SpeedCalibration:
    p = path or speed_calibration_path()
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise InputError(f"cannot read the speed calibration {p}: {e.strerror or e}",
                         fix="Reinstall the launcher; the file ships with it.") from None
    except yaml.YAMLError as e:
        raise InputError(f"{p} is not valid YAML: {e}", fix=f"Correct {p}.") from None
    return calibration_from_dict(raw, str(p))


@dataclass(frozen=True)
class Forecast:
    model: str
    gpu: str
    engine_version: str
    workload: Workload
    shape: ServingShape
    prediction: Any  # SpeedPrediction

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.prediction.to_json())
        out.update(model=self.model, gpu=self.gpu, engine_version=self.engine_version,
                   workload=self.workload.to_json(), configuration=self.shape.to_json())
        return out


def forecast(model: str, v: Mapping[str, Value]) -> Forecast:
    """Plan `model` for the settled options `v` of `launcher speed`, then predict its speed."""
    from launcher.hardware.catalog import find_gpu
    from launcher.models.resolve import resolve_model
    from launcher.planner import PlanRequest
    from launcher.prepare import Target, build_plan
    from launcher.speed.hardware import gpu_speed
    from launcher.speed.model import predict

    w = workload_from(v)
    need = w.input_len + w.output_len
    spec = resolve_model(model)
    limit = v.get("max_model_len")
    context = int(limit) if limit is not None else spec.max_position_embeddings
    if need > context:
        what = "--max-model-len" if limit is not None else f"{spec.name}'s context"
        raise InputError(f"--input-len {w.input_len} + --output-len {w.output_len} = {need} "
                         f"tokens is longer than {what} ({context})",
                         fix="Shorten the prompt or the answer"
                             + (", or raise --max-model-len." if limit is not None else "."))

    def size(name: str) -> int | None:
        x = v.get(name)
        return None if x in (None, "auto") else int(str(x))

    req = PlanRequest(max_model_len=None if limit is None else int(limit), min_context=need,
                      min_concurrency=1, quantization=str(v.get("quantization") or "auto"),
                      kv_cache_dtype=str(v.get("kv_cache_dtype") or "auto"),
                      tp=size("tp"), pp=size("pp"),
                      enforce_eager=bool(v.get("enforce_eager") or False))
    target = Target(gpus=_text(v, "gpus"), inventory_file=_text(v, "inventory_file"),
                    engine_version=_text(v, "engine_version"), device="cuda")
    plan = build_plan(model, req, target)
    c = plan.chosen
    if not plan.feasible or c is None:
        raise DoesNotFitError(plan.reason or "no configuration fits",
                              fix="; ".join(plan.suggestions) or
                                  "Use more or larger GPUs, or a lower precision.",
                              hint=f"launcher plan {model} --gpus {v.get('gpus') or '…'}")
    gpu = c.gpus[0]
    entry = find_gpu(gpu.catalog_name or gpu.name)
    if entry is None:
        raise UnknownGpuError(f"GPU {gpu.name!r} is not in the catalog: no bandwidth or "
                              "tensor peak to predict with",
                              fix="Add it to profiles/gpus.yaml, or pass --gpus with a "
                                  "catalog name.", hint="launcher gpus")
    cal = load_speed_calibration()
    shape = shape_of(c)
    pred = predict(c.option.spec, gpu_speed(entry, cal), tp=shape.tp, pp=shape.pp,
                   dp=shape.dp, weight_bits=shape.weight_bits,
                   kv_bytes_per_token=shape.kv_bytes_per_token,
                   state_bytes_per_sequence=shape.state_bytes_per_sequence,
                   max_num_seqs=shape.max_num_seqs,
                   max_num_batched_tokens=shape.max_num_batched_tokens,
                   kv_capacity_tokens=shape.kv_capacity_tokens, workload=w, cal=cal)
    return Forecast(model=spec.name, gpu=f"{len(c.gpus)}x{entry.name}",
                    engine_version=plan.engine_version, workload=w, shape=shape,
                    prediction=pred)


def _text(v: Mapping[str, Value], name: str) -> str | None:
    x = v.get(name)
    return None if x is None or x == "" else str(x)
