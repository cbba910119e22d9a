"""What the clients send: prompt and answer lengths and how hard they push.

A closed loop (`concurrency`: that many requests in flight, a new one as soon as one ends, as
`vllm bench serve --max-concurrency` does) or an open loop (`request_rate` requests per second,
`math.inf`: all `num_prompts` at once, as `vllm bench serve --request-rate inf`). Both may be
given: the rate then arrives under a cap of `concurrency` in flight, like the benchmark's
`--request-rate R --max-concurrency C`. Neither: all prompts at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from launcher.errors import InputError

# `vllm bench serve --num-prompts` default: what "all at once" means when no count is given.
DEFAULT_NUM_PROMPTS = 1000


def _bad(field: str, value: object, what: str) -> InputError:
    return InputError(f"workload {field} {value!r} {what}",
                      fix=f"Give {field} as a positive number.",
                      hint="launcher speed MODEL --gpus 1xH100-80GB --input-len 1000 "
                           "--output-len 200 --concurrency 16")


@dataclass(frozen=True)
class Workload:
    input_len: int
    output_len: int
    concurrency: int | None = None
    request_rate: float | None = None  # requests/s; math.inf: all at once
    num_prompts: int | None = None

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise _bad(name, v, "is not a whole number")
            if v < 1:
                raise _bad(name, v, "is not above 0")
        for name in ("concurrency", "num_prompts"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool):
                raise _bad(name, v, "is not a whole number")
            if v < 1:
                raise _bad(name, v, "is not above 0")
        r = self.request_rate
        if r is not None:
            if isinstance(r, bool) or not isinstance(r, int | float) or math.isnan(r):
                raise _bad("request_rate", r, "is not a number")
            if r <= 0:
                raise _bad("request_rate", r, "is not above 0")
            object.__setattr__(self, "request_rate", float(r))

    @property
    def prompts(self) -> int:
        """How many requests the run sends (the benchmark's default when not given)."""
        return self.num_prompts if self.num_prompts is not None else DEFAULT_NUM_PROMPTS

    @property
    def open_loop(self) -> bool:
        """Arrivals at a finite rate (Poisson), not as fast as answers come back."""
        return self.request_rate is not None and math.isfinite(self.request_rate)

    def to_json(self) -> dict[str, object]:
        rate = self.request_rate
        return {"input_len": self.input_len, "output_len": self.output_len,
                "concurrency": self.concurrency,
                "request_rate": None if rate is None else ("inf" if math.isinf(rate) else rate),
                "num_prompts": self.num_prompts}


# ---- the workload options of a command (`launcher.options`) -------------------------------

Value = str | int | float | bool | None


def parse_rate(raw: object, flag: str = "--request-rate") -> float:
    """Requests per second: a positive number, or inf (every prompt at once)."""
    text = str(raw).strip().lower()
    if text in ("inf", "infinity", "+inf"):
        return math.inf
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"{flag} {raw!r} is not a positive number or inf",
                         fix=f"Give requests per second, e.g. {flag} 4, or {flag} inf to send "
                             "every prompt at once.", hint="launcher speed --help")
    return rate


def workload_from(v: Mapping[str, Value]) -> Workload:
    """The workload options of a command (`launcher.options`), checked."""
    conc, rate = v.get("concurrency"), v.get("request_rate")
    if conc is not None and rate is not None:
        raise InputError("--concurrency and --request-rate both given",
                         fix="Give one: --concurrency N keeps N requests in flight; "
                             "--request-rate R sends R per second (inf: all at once).",
                         hint="launcher speed --help")

    def whole(name: str) -> int | None:
        x = v.get(name)
        return None if x is None else int(x)

    i, o = whole("input_len"), whole("output_len")
    if i is None or o is None:
        raise InputError("--input-len and --output-len are needed",
                         fix="Give the prompt and answer lengths in tokens.")
    return Workload(input_len=i, output_len=o, concurrency=whole("concurrency"),
                    request_rate=None if rate is None else parse_rate(rate),
                    num_prompts=whole("num_prompts"))
