"""Measured speed: a short load at the planned concurrency, right after verification and before
the engine is reported ready, so the report holds what this engine does on this hardware —
time to first token, inter-token latency, output tokens per second — beside what the plan
predicted.

The load is real HTTP: `concurrency` clients each stream one completion after another from the
engine's OpenAI API (`/v1/completions`, token ids as the prompt, so no tokenizer is needed;
`ignore_eos` so every request asks for the same number of tokens) until `seconds` have passed;
then the requests still running are cancelled (the engine aborts them). Every prompt starts
with its own tokens, so the prefix cache cannot answer from an earlier one.

Each streamed chunk carries the running `usage.completion_tokens` (vLLM's
`continuous_usage_stats`), so a chunk that holds several tokens counts as several: its gap is
shared among them. Figures, as vLLM's `benchmark_serving` defines them:

    TTFT            first chunk − request sent, per request that got a first token
    ITL             gap between chunks ÷ tokens in the later chunk, per token after the first
                    (its p50 can be ~0 where the client reads several chunks of a stream in
                    one go, as on a busy host: the stream's gaps then bunch up)
    tokens/s        every output token that arrived in the window ÷ the window
    TPOT            per request, (last chunk − first chunk) ÷ tokens after the first: robust
                    where the client reads several chunks at once (ITL then shows ~0 gaps)
    tokens/s/user   tokens after each request's first ÷ time from its first chunk to its last,
                    summed over requests (the decode speed one user sees; = 1000 / mean ITL)
    requests/s      requests completed in the window ÷ the window

A request cut off at the end of the window still counts its tokens so far; one that got no
token before the end has no TTFT (a TTFT longer than the window is reported as none at all).
The first wave — every client's first request, sent at once — queues all its prompts together,
so its TTFT is longer than a steady stream's: `ttft_after_first_wave_ms` holds the requests
sent as earlier ones ended (none when no request ended within the window, as with long answers
on a large model; the first wave's TTFT is then all there is).
`summarize` is pure (traces in, figures out); `measure_speed` does the HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx

from launcher.errors import InputError
from launcher.runtime.live import EngineSample, parse_engine_metrics, read_engine_sample

if TYPE_CHECKING:
    from launcher.planner.plan import Plan

DEFAULT_PROMPT_TOKENS = 256
DEFAULT_OUTPUT_TOKENS = 64
CONCURRENCY_CAP = 256  # clients one launcher process opens at most (as the warm-up burst)


@dataclass(frozen=True)
class LoadShape:
    """What the load asks of the engine."""

    concurrency: int
    prompt_tokens: int
    output_tokens: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_shape(max_model_len: int, max_num_seqs: int, seconds: float,
               prompt_tokens: int | None = None, output_tokens: int | None = None,
               concurrency: int | None = None) -> LoadShape:
    """The planned concurrency (`max_num_seqs`, or the prediction's), requests that fit the
    context: prompt and output together stay within `max_model_len`."""
    out = max(2, min(output_tokens or DEFAULT_OUTPUT_TOKENS, max_model_len // 2))
    prompt = max(1, min(prompt_tokens or DEFAULT_PROMPT_TOKENS, max_model_len - out - 1))
    users = max(1, min(concurrency or max_num_seqs, CONCURRENCY_CAP))
    return LoadShape(concurrency=users, prompt_tokens=prompt, output_tokens=out,
                     seconds=seconds)


@dataclass
class Trace:
    """One streamed request as the client saw it (monotonic seconds)."""

    sent: float
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (arrival, new tokens)
    done: bool = False
    error: str | None = None
    first_wave: bool = True  # sent at the start with all the others, not after one ended

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.chunks)


@dataclass(frozen=True)
class Stats:
    mean: float
    p50: float
    p90: float
    n: int

    def to_json(self) -> dict[str, float | int]:
        return {"mean": round(self.mean, 3), "p50": round(self.p50, 3), "p90": round(self.p90, 3),
                "n": self.n}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values: Sequence[float]) -> Stats | None:
    if not values:
        return None
    return Stats(sum(values) / len(values), percentile(values, 50), percentile(values, 90),
                 len(values))


@dataclass(frozen=True)
class SpeedMeasurement:
    """What the load measured. Latencies in milliseconds, rates per second of the window."""

    shape: LoadShape
    window_seconds: float
    requests_sent: int
    requests_completed: int
    requests_failed: int
    output_tokens: int
    ttft_ms: Stats | None
    ttft_after_first_wave_ms: Stats | None  # requests sent as earlier ones ended
    itl_ms: Stats | None
    tpot_ms: Stats | None
    output_tokens_per_s: float
    output_tokens_per_s_per_user: float | None
    requests_per_s: float
    errors: tuple[str, ...] = ()
    engine_generation_tokens: float | None = None  # the engine's own counter over the load

    @property
    def ok(self) -> bool:
        """Something was measured: at least one first token and one later one."""
        return self.ttft_ms is not None and self.itl_ms is not None and self.output_tokens > 0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "load": self.shape.to_json(),
                "window_seconds": round(self.window_seconds, 3),
                "requests_sent": self.requests_sent,
                "requests_completed": self.requests_completed,
                "requests_failed": self.requests_failed, "output_tokens": self.output_tokens,
                "ttft_ms": self.ttft_ms.to_json() if self.ttft_ms else None,
                "ttft_after_first_wave_ms": self.ttft_after_first_wave_ms.to_json()
                if self.ttft_after_first_wave_ms else None,
                "itl_ms": self.itl_ms.to_json() if self.itl_ms else None,
                "tpot_ms": self.tpot_ms.to_json() if self.tpot_ms else None,
                "output_tokens_per_s": round(self.output_tokens_per_s, 3),
                "output_tokens_per_s_per_user": None
                if self.output_tokens_per_s_per_user is None
                else round(self.output_tokens_per_s_per_user, 3),
                "requests_per_s": round(self.requests_per_s, 3),
                "engine_generation_tokens": self.engine_generation_tokens,
                "errors": list(self.errors)}


def summarize(traces: Sequence[Trace], shape: LoadShape, start: float, end: float,
              engine_generation_tokens: float | None = None) -> SpeedMeasurement:
    """The figures of a load that ran from `start` to `end` (the module docstring defines
    them). Pure."""
    if end <= start:
        raise ValueError(f"the window must be positive (start {start}, end {end})")
    window = end - start
    ttft: list[float] = []
    ttft_later: list[float] = []
    itl: list[float] = []
    tpot: list[float] = []
    later_tokens = 0
    decode_seconds = 0.0
    tokens = 0
    for t in traces:
        chunks = [(at, n) for at, n in t.chunks if start <= at <= end and n > 0]
        tokens += sum(n for _, n in chunks)
        if not chunks:
            continue
        ttft.append(1000 * (chunks[0][0] - t.sent))
        if not t.first_wave:
            ttft_later.append(ttft[-1])
        for (a, _), (b, n) in itertools.pairwise(chunks):
            itl.extend([1000 * (b - a) / n] * n)
        later = sum(n for _, n in chunks[1:])
        span = chunks[-1][0] - chunks[0][0]
        if later:
            tpot.append(1000 * span / later)
        later_tokens += later
        decode_seconds += span
    errors = sorted({t.error for t in traces if t.error})
    return SpeedMeasurement(
        shape=shape, window_seconds=window, requests_sent=len(traces),
        requests_completed=sum(1 for t in traces if t.done and not t.error),
        requests_failed=sum(1 for t in traces if t.error), output_tokens=tokens,
        ttft_ms=stats(ttft), ttft_after_first_wave_ms=stats(ttft_later),
        itl_ms=stats(itl), tpot_ms=stats(tpot), output_tokens_per_s=tokens / window,
        output_tokens_per_s_per_user=later_tokens / decode_seconds if decode_seconds > 0
        else None,
        requests_per_s=sum(1 for t in traces if t.done and not t.error) / window,
        errors=tuple(errors[:5]), engine_generation_tokens=engine_generation_tokens)


def prompt_ids(request: int, n: int, vocab_size: int) -> list[int]:
    """`n` token ids below the vocabulary; the first ones differ per request (no shared
    prefix for the prefix cache to reuse)."""
    span = max(1, min(vocab_size, 30000) - 10)
    return [10 + (request * 104729 + i * 7919) % span for i in range(n)]


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any], trace: Trace,
                  headers: dict[str, str]) -> None:
    """One streamed completion into `trace` (its chunks as they arrive)."""
    seen = 0
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            text = (await r.aread()).decode(errors="replace")
            trace.error = f"HTTP {r.status_code}: {text[:200]}"
            return
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            now = time.monotonic()
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                trace.error = f"a streamed chunk is not JSON: {data[:120]!r}"
                return
            if "error" in chunk:
                trace.error = f"engine error: {str(chunk['error'])[:200]}"
                return
            usage = chunk.get("usage") or {}
            count = usage.get("completion_tokens")
            if isinstance(count, int):
                new, seen = count - seen, max(seen, count)
            else:  # no running usage: one token per chunk with text
                new = 1 if any(c.get("text") for c in chunk.get("choices") or []) else 0
                seen += new
            if new > 0 and chunk.get("choices"):
                trace.chunks.append((now, new))
            elif new > 0 and trace.chunks:  # tokens only in the closing usage chunk
                at, n = trace.chunks[-1]
                trace.chunks[-1] = (at, n + new)
    trace.done = True


async def _load(base_url: str, model: str, shape: LoadShape, vocab_size: int,
                headers: dict[str, str], every: float
                ) -> tuple[list[Trace], float, float, list[EngineSample]]:
    """The clients, and the engine's /metrics read every `every` seconds meanwhile."""
    traces: list[Trace] = []
    samples: list[EngineSample] = []
    url = f"{base_url}/v1/completions"
    limits = httpx.Limits(max_connections=shape.concurrency + 1,
                          max_keepalive_connections=shape.concurrency + 1)
    timeout = httpx.Timeout(shape.seconds + 30, connect=10)
    start = time.monotonic()
    deadline = start + shape.seconds

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        async def user(u: int) -> None:
            k = 0
            while time.monotonic() < deadline:
                trace = Trace(sent=time.monotonic(), first_wave=k == 0)
                traces.append(trace)
                body = {"model": model, "prompt": prompt_ids(u + k * shape.concurrency,
                                                              shape.prompt_tokens, vocab_size),
                        "max_tokens": shape.output_tokens, "temperature": 0,
                        "ignore_eos": True, "stream": True,
                        "stream_options": {"include_usage": True,
                                           "continuous_usage_stats": True}}
                k += 1
                try:
                    await _stream(client, url, body, trace, headers)
                except httpx.HTTPError as e:
                    trace.error = f"{type(e).__name__}: {e}"
                if trace.error:
                    await asyncio.sleep(0.05)  # a failing engine is not hammered

        async def watch() -> None:
            while True:
                await asyncio.sleep(every)
                with contextlib.suppress(httpx.HTTPError, InputError):
                    r = await client.get(f"{base_url}/metrics", timeout=every + 5)
                    r.raise_for_status()
                    samples.append(parse_engine_metrics(r.text, time.time()))

        watcher = asyncio.create_task(watch())
        tasks = [asyncio.create_task(user(u)) for u in range(shape.concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=shape.seconds)
        end = min(time.monotonic(), deadline)
        for t in [*pending, watcher]:
            t.cancel()
        await asyncio.gather(*pending, watcher, return_exceptions=True)
    return traces, start, end, samples


def measure_speed(base_url: str, model: str, shape: LoadShape, vocab_size: int,
                  headers: dict[str, str] | None = None
                  ) -> tuple[SpeedMeasurement, list[EngineSample]]:
    """Run the load (about `shape.seconds`) and summarize it. The engine's own /metrics is
    read before, a few times during, and after: its generation counter over the load is a
    cross-check of what the clients counted (it also counts the tokens of cancelled requests
    that never reached a client), and the readings go to the live series the status page
    draws. A /metrics page that cannot be read leaves them out, nothing else."""
    samples: list[EngineSample] = []

    def sample() -> None:
        with contextlib.suppress(httpx.HTTPError, InputError):
            samples.append(read_engine_sample(base_url))

    sample()
    traces, start, end, during = asyncio.run(_load(
        base_url, model, shape, vocab_size, headers or {}, every=max(1.0, shape.seconds / 4)))
    measured = summarize(traces, shape, start, end)
    first = samples[0] if samples else None
    sample()
    last = samples[-1] if len(samples) > (first is not None) else None
    if first is not None and last is not None and first.generation_tokens is not None \
            and last.generation_tokens is not None:
        measured = replace(measured, engine_generation_tokens=last.generation_tokens
                           - first.generation_tokens)
    return measured, sorted([*samples, *during], key=lambda x: x.at)


# ---- beside the prediction ----------------------------------------------------------------
# Measured figure → the prediction's field it is compared with (the speed model's
# `SpeedPrediction`: ttft_ms, itl_ms, output_tokens_per_s, output_tokens_per_s_per_user,
# requests_per_s).
COMPARED = (("ttft_ms", "ttft_ms"), ("itl_ms", "itl_ms"),
            ("output_tokens_per_s", "output_tokens_per_s"),
            ("output_tokens_per_s_per_user", "output_tokens_per_s_per_user"),
            ("requests_per_s", "requests_per_s"))


def planned_workload(plan: dict[str, Any] | None) -> dict[str, Any]:
    """The workload the plan's speed was predicted for (`request.workload`: input_len,
    output_len, concurrency…); empty when the plan names none."""
    w = ((plan or {}).get("request") or {}).get("workload")
    return w if isinstance(w, dict) else {}


def shape_for(max_model_len: int, concurrency: int, seconds: float,
              workload: dict[str, Any]) -> LoadShape:
    """The load's shape: the planned workload's prompt and output lengths (so the measurement
    and the prediction describe the same requests), at the workload's concurrency or, where it
    names none, the planned one (`concurrency`: max_num_seqs × replicas)."""

    def positive(key: str) -> int | None:
        v = workload.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    return load_shape(max_model_len, concurrency, seconds, prompt_tokens=positive("input_len"),
                      output_tokens=positive("output_len"),
                      concurrency=positive("concurrency"))


def load_prediction(plan: Plan, shape: LoadShape) -> dict[str, Any] | None:
    """The speed model's prediction for exactly the load that runs (its lengths and
    concurrency, a closed loop): the figures to put beside the measured ones. None where the
    plan carries no prediction (the CPU backend, a GPU the catalog does not know)."""
    from launcher.planner.speed import predict_candidate
    from launcher.prepare import speed_inputs
    from launcher.speed.workload import Workload

    c = plan.chosen
    if c is None or c.predicted is None:
        return None
    inputs = speed_inputs(c.gpus)
    if inputs is None:
        return None
    workload = Workload(input_len=shape.prompt_tokens, output_len=shape.output_tokens,
                        concurrency=shape.concurrency)
    return {**predict_candidate(c, inputs, workload).to_json(), "workload": workload.to_json()}


def _measured_figure(m: dict[str, Any], key: str) -> float | None:
    v = m.get(key)
    if isinstance(v, dict):  # latency statistics: the mean is what a model predicts
        v = v.get("mean")
    return float(v) if isinstance(v, int | float) else None


def speed_record(measured: SpeedMeasurement | None, predicted: dict[str, Any] | None,
                 skipped: str | None = None) -> dict[str, Any]:
    """The report's `speed` of an attempt: measured, predicted (None: the plan has no
    prediction), and per figure measured ÷ predicted."""
    m = measured.to_json() if measured is not None else None
    ratios: dict[str, float | None] = {}
    if m is not None and predicted is not None:
        for mk, pk in COMPARED:
            a, b = _measured_figure(m, mk), predicted.get(pk)
            ratios[mk] = round(a / b, 3) if a is not None and isinstance(b, int | float) \
                and b > 0 else None
    return {"measured": m, "predicted": predicted, "measured_over_predicted": ratios or None,
            "skipped": skipped}
