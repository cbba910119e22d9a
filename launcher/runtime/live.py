"""What the engine is doing now, from its own `/metrics`: requests running and waiting, KV cache
in use, tokens generated — sampled by the launcher into a small ring buffer so the status page
can draw the last minutes and the control API can export the latest rate.

The engine's Prometheus text is outside input: `parse_engine_metrics` reads only the few
series it needs, sums them over the engine's data-parallel ranks (the `engine` label), and
rejects a value that cannot be what vLLM means (a negative count, a usage outside 0–1) with an
`InputError` that names the series; a page without any of them is an error too, never a row
of zeros. A missing series (another vLLM release) is `None`, shown as "–".

Names read (vLLM 0.32 `vllm/v1/metrics/loggers.py`, checked against the running CPU engine,
recorded in tests/data/engine-metrics-0.32.txt): `vllm:num_requests_running`,
`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc` (0–1; releases before
vllm-project/vllm#18354 call it `vllm:gpu_cache_usage_perc`), `vllm:generation_tokens_total`
and `vllm:prompt_tokens_total` (counters).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from launcher.errors import InputError

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"  # before vllm-project/vllm#18354
GENERATION = "vllm:generation_tokens_total"
PROMPT = "vllm:prompt_tokens_total"
WANTED = (RUNNING, WAITING, KV_USAGE, KV_USAGE_OLD, GENERATION, PROMPT)

# `name{labels} value [timestamp]` or `name value [timestamp]`; label values are quoted and
# may hold spaces, braces and escaped quotes.
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)'
                   r'(?:\s+\S+)?\s*$')

FIX = ("The engine's /metrics page is not what this launcher reads; check that the engine is "
       "vLLM and that nothing else answers on its port.")


@dataclass(frozen=True)
class EngineSample:
    """One reading of the engine's /metrics. Counts and counters are summed over data-parallel
    engines; KV usage is the fullest engine's (the one that preempts first)."""

    at: float  # wall clock (time.time()) of the reading
    running: float | None
    waiting: float | None
    kv_cache_usage: float | None  # 0–1
    generation_tokens: float | None  # counter since the engine started
    prompt_tokens: float | None  # counter since the engine started

    def to_json(self) -> dict[str, float | None]:
        return dict(self.__dict__)


def _value(name: str, raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise InputError(f"engine /metrics: {name}: {raw!r} is not a number", fix=FIX) from None
    if not math.isfinite(v) or v < 0:
        raise InputError(f"engine /metrics: {name}: {raw} is not a count (finite, ≥ 0)", fix=FIX)
    if name in (KV_USAGE, KV_USAGE_OLD) and v > 1:
        raise InputError(f"engine /metrics: {name}: {raw} is not a fraction between 0 and 1",
                         fix=FIX)
    return v


def parse_engine_metrics(text: str, at: float) -> EngineSample:
    """The sample in a vLLM /metrics page; `at` is when it was read. Only the series this
    module reads are parsed: every other line may hold anything."""
    found: dict[str, list[float]] = {}
    for line in text.split("\n"):  # the exposition format ends lines with \n only
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(None, 1)[0]
        if name not in WANTED:
            continue
        m = _LINE.match(line)
        if m is None:
            raise InputError(f"engine /metrics: {name}: cannot read the line {line[:120]!r}",
                             fix=FIX)
        found.setdefault(name, []).append(_value(name, m.group(3)))
    if not found:
        raise InputError("engine /metrics has none of " + ", ".join(WANTED[:3]) +
                         " (not a vLLM metrics page?)", fix=FIX)

    def total(name: str) -> float | None:
        return sum(found[name]) if name in found else None

    kv = found.get(KV_USAGE) or found.get(KV_USAGE_OLD)
    return EngineSample(at=at, running=total(RUNNING), waiting=total(WAITING),
                        kv_cache_usage=max(kv) if kv else None,
                        generation_tokens=total(GENERATION), prompt_tokens=total(PROMPT))


def read_engine_sample(base_url: str, timeout: float = 5.0) -> EngineSample:
    """GET the engine's /metrics now (httpx errors and InputError pass to the caller)."""
    import httpx

    r = httpx.get(f"{base_url}/metrics", timeout=timeout)
    r.raise_for_status()
    return parse_engine_metrics(r.text, time.time())


def rate(a: EngineSample, b: EngineSample) -> float | None:
    """Output tokens per second between two samples; None without both counters, when no time
    passed, or when the counter fell (the engine restarted)."""
    if a.generation_tokens is None or b.generation_tokens is None:
        return None
    dt = b.at - a.at
    dn = b.generation_tokens - a.generation_tokens
    if dt <= 0 or dn < 0:
        return None
    return dn / dt


class SampleRing:
    """The last samples, oldest first: at most `capacity`, none older than `window` seconds
    before the newest. Not locked: `ControlState` holds it under its own lock."""

    def __init__(self, capacity: int = 600, window: float = 900.0) -> None:
        if capacity < 2:
            raise ValueError("a ring of fewer than 2 samples has no rate")
        self.window = window
        self._samples: deque[EngineSample] = deque(maxlen=capacity)

    def add(self, sample: EngineSample) -> None:
        if self._samples and sample.at < self._samples[-1].at:
            return  # a late reading from a slower thread: the series stays in time order
        self._samples.append(sample)
        while self._samples and self._samples[0].at < sample.at - self.window:
            self._samples.popleft()

    def extend(self, samples: Iterable[EngineSample]) -> None:
        for s in samples:
            self.add(s)

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> list[EngineSample]:
        return list(self._samples)

    def series(self) -> list[dict[str, float | None]]:
        """One point per sample: the reading and the output rate since the one before."""
        out: list[dict[str, float | None]] = []
        prev: EngineSample | None = None
        for s in self._samples:
            out.append({**s.to_json(),
                        "output_tokens_per_s": rate(prev, s) if prev is not None else None})
            prev = s
        return out

    def to_json(self) -> dict:
        points = self.series()
        latest = points[-1] if points else None
        rates = [p["output_tokens_per_s"] for p in points if p["output_tokens_per_s"] is not None]
        return {"window_seconds": self.window, "samples": len(points), "latest": latest,
                "latest_output_tokens_per_s": rates[-1] if rates else None, "series": points}
