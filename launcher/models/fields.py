"""Typed reads of config.json values: a wrong type or an impossible size names its key.

A config.json is data from the internet: a layer count of 2**62, a NaN head count or a list
where a number belongs must end as a `ModelConfigError` (exit 2) naming the file and the key,
never as a traceback from deep inside the memory model, and never as a loop over 2**62 layers.
The upper limits are plausibility limits, far above any published model.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from typing import Any, TypeVar

from launcher.errors import ModelConfigError

# The deepest published decoders have ~130 layers (Llama 3.1 405B: 126). The memory model's
# work grows with layers × candidate shapes: 10,000 layers made one plan take minutes, 1,024
# still ten seconds (an infeasible MoE plan on one small GPU); 512 keeps a 4× margin.
MAX_LAYERS = 512
MAX_WIDTH = 1_000_000  # hidden size, head dim, LoRA ranks, vision widths
MAX_FFN = 10_000_000  # MLP / expert intermediate sizes
MAX_COUNT = 100_000  # attention heads, experts
MAX_VOCAB = 10_000_000
MAX_POSITIONS = 2**31
MAX_ROPE_FACTOR = 10_000.0

_FIX = "Correct the field in config.json (compare it with the model's published config.json)."


def config_error(origin: str, key: str, value: Any, expected: str) -> ModelConfigError:
    """`key` is the path in the file (`text_config.num_hidden_layers`)."""
    return ModelConfigError(f"{origin}: field `{key}` is {show(value)}, expected {expected}",
                            fix=_FIX)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def show(value: Any) -> str:
    """A short repr: a hostile value (a list of a million items, nesting a thousand deep, a
    4,000-digit integer) must not make the error message itself explode."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_int(value: Any, key: str, origin: str, *, lo: int = 1, hi: int) -> int:
    """A whole number in [lo, hi] (an integral float such as 4096.0 counts as whole)."""
    whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)
                                       and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise config_error(origin, key, value, f"an integer from {lo} to {hi:,}")
    n = int(value)
    if not lo <= n <= hi:
        limit = " (plausibility limit)" if n > hi else ""
        raise config_error(origin, key, value, f"an integer from {lo} to {hi:,}{limit}")
    return n


def as_float(value: Any, key: str, origin: str, *, lo: float, hi: float) -> float:
    """A finite number in (lo, hi]."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    finite = number and not (isinstance(value, float) and not math.isfinite(value))
    if not finite or not lo < value <= hi:
        raise config_error(origin, key, value, f"a number above {lo:g} and at most {hi:g}")
    return float(value)


def as_bool(value: Any, key: str, origin: str) -> bool:
    if not isinstance(value, bool):
        raise config_error(origin, key, value, "true or false")
    return value


def as_str(value: Any, key: str, origin: str) -> str:
    if not isinstance(value, str):
        raise config_error(origin, key, value, "a string")
    return value


def as_dict(value: Any, key: str, origin: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise config_error(origin, key, value, "an object")
    return value


def as_list(value: Any, key: str, origin: str) -> list[Any]:
    if not isinstance(value, list):
        raise config_error(origin, key, value, "a list")
    return value


K = TypeVar("K")


def layer_list(r: Any, n: int, key: str, names: Mapping[str, K],
               default: K | None = None) -> tuple[K, ...] | None:
    """A per-layer list field (`layer_types`) read through the config reader `r`: exactly `n`
    entries, each a name in `names`; an unknown name becomes `default`, or, without one, an
    error naming the entry. None when the config has no such field."""
    found = r.find("layer_types", (key,))
    if found is None:
        return None
    raw, path = found
    values = as_list(raw, path, r.origin)
    if len(values) != n:
        raise ModelConfigError(f"{r.origin}: `{path}` lists {len(values)} layers but "
                               f"{r.where('num_layers')} is {n}", fix="Correct config.json.")
    out: list[K] = []
    for i, v in enumerate(values):
        name = as_str(v, f"{path}[{i}]", r.origin)
        if name in names:
            out.append(names[name])
        elif default is not None:
            out.append(default)
        else:
            raise ModelConfigError(
                f"{r.origin}: field `{path}[{i}]` is {name!r}, expected one of "
                f"{', '.join(sorted(names))}", fix="Correct config.json.")
    return tuple(out)
