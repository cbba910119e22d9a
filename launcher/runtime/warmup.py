"""Talking to the engine over HTTP: readiness, what it serves, warm-up requests, metrics.

Warm-up exercises the two extremes the plan budgets for: one request that fills the context
(token ids, so no tokenizer is needed here), then `max_num_seqs` short chat requests at once.
If either breaks the engine, that is found now, not by the first user.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import httpx


class EngineGone(Exception):
    """The engine process exited while we waited for it."""


@dataclass
class WarmupResult:
    long_prompt_tokens: int = 0
    long_request_seconds: float = 0.0
    burst_requests: int = 0
    burst_ok: int = 0
    burst_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.burst_ok == self.burst_requests

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def wait_healthy(base_url: str, alive: Callable[[], bool], timeout: float,
                 interval: float = 0.5) -> float:
    """Seconds until GET /health answers 200. `alive()` False → EngineGone; timeout → TimeoutError."""
    t0 = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while True:
            if not alive():
                raise EngineGone("the engine exited before /health answered")
            try:
                if client.get(f"{base_url}/health").status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"/health did not answer within {timeout:.0f} s")
            time.sleep(interval)


def served_models(base_url: str, headers: dict[str, str] | None = None) -> list[dict]:
    r = httpx.get(f"{base_url}/v1/models", timeout=10, headers=headers)
    r.raise_for_status()
    return r.json().get("data", [])


def metrics_text(base_url: str) -> str:
    r = httpx.get(f"{base_url}/metrics", timeout=10)
    r.raise_for_status()
    return r.text


_LABELS = re.compile(r'(\w+)="([^"]*)"')


def cache_config_info(metrics: str) -> dict[str, str]:
    """Labels of `vllm:cache_config_info` (num_gpu_blocks, block_size, …)."""
    for line in metrics.splitlines():
        if line.startswith("vllm:cache_config_info{"):
            return dict(_LABELS.findall(line))
    return {}


def warm_up(base_url: str, model: str, max_model_len: int, max_num_seqs: int, vocab_size: int,
            *, timeout: float = 600.0, burst_cap: int = 256, long_output: int = 4,
            headers: dict[str, str] | None = None) -> WarmupResult:
    res = WarmupResult()
    # 1. one request close to max_model_len, as token ids (any ids below the vocabulary)
    n = max(1, max_model_len - long_output - 1)
    ids = [10 + (i * 7919) % max(1, min(vocab_size, 30000) - 10) for i in range(n)]
    t = time.monotonic()
    try:
        r = httpx.post(f"{base_url}/v1/completions", timeout=timeout, headers=headers, json={
            "model": model, "prompt": ids, "max_tokens": long_output, "temperature": 0})
        if r.status_code != 200:
            res.errors.append(f"long request: HTTP {r.status_code}: {r.text[:300]}")
        else:
            usage = r.json().get("usage") or {}
            res.long_prompt_tokens = int(usage.get("prompt_tokens") or n)
    except httpx.HTTPError as e:
        res.errors.append(f"long request: {type(e).__name__}: {e}")
    res.long_request_seconds = round(time.monotonic() - t, 3)
    # 2. a burst of max_num_seqs concurrent short chat requests
    burst = max(1, min(max_num_seqs, burst_cap))
    res.burst_requests = burst
    t = time.monotonic()
    results = asyncio.run(_burst(base_url, model, burst, timeout, headers or {}))
    res.burst_seconds = round(time.monotonic() - t, 3)
    res.burst_ok = sum(1 for x in results if x is None)
    res.errors.extend(sorted({x for x in results if x is not None})[:5])
    return res


async def _burst(base_url: str, model: str, n: int, timeout: float,
                 headers: dict[str, str]) -> list[str | None]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:
        async def one(i: int) -> str | None:
            try:
                r = await client.post(f"{base_url}/v1/chat/completions", json={
                    "model": model, "max_tokens": 8, "temperature": 0,
                    "messages": [{"role": "user", "content": f"Warm-up request {i}: say hi."}]})
            except httpx.HTTPError as e:
                return f"burst: {type(e).__name__}: {e}"
            return None if r.status_code == 200 else f"burst: HTTP {r.status_code}: {r.text[:200]}"

        return await asyncio.gather(*(one(i) for i in range(n)))
