"""What `serve` says while it works: the plan, engine start-up progress, failures, step-downs
and the summary once it serves.

The serve loop calls one method per event with the data it has (the plan's and the attempt's
JSON, numbers, reasons); every word printed is here. On a terminal the engine's start-up is a
live status line; elsewhere (a pipe, a container log) one plain line per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.status import Status

from launcher.engines.vllm_log import Phase
from launcher.render.plan import plan_view
from launcher.units import fmt_gib

CONTROL_ENDPOINTS = "/livez /readyz /plan /report /speed /gpus /metrics"


class ServeConsole:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._status: Status | None = None

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    # ---- before the engine ------------------------------------------------------------
    def control_api(self, url: str) -> None:
        self._say(f"control API: {url}/ ({CONTROL_ENDPOINTS})")

    def plan(self, plan: dict) -> None:
        """The whole plan (first attempt, or one that does not fit); `plan` is redacted."""
        self.console.print(plan_view(plan))

    def relaunch(self, n: int, plan: dict) -> None:
        """One line for a stepped-down plan: what changed is in the numbers."""
        d = plan.get("decision") or {}
        self._say(f"attempt {n}: {plan.get('weights') or ''}, "
                  f"TP{d.get('tensor_parallel_size')}×PP{d.get('pipeline_parallel_size')}"
                  f"×DP{d.get('data_parallel_size')}, max_model_len {d.get('max_model_len')}, "
                  f"KV {fmt_gib(d.get('kv_cache_memory_bytes') or 0)}, "
                  f"enforce_eager {d.get('enforce_eager')}")

    # ---- engine start-up --------------------------------------------------------------
    def engine_starting(self, n: int, pid: int | None, log_path: Path) -> None:
        self._say(f"engine log: {log_path}")
        msg = f"attempt {n}: engine starting (pid {pid})"
        if self.live:
            self._status = self.console.status(msg)
            self._status.start()
        else:
            self._say(msg)

    def engine_phase(self, phase: Phase, seconds: float) -> None:
        """Called from the engine's log reader thread."""
        msg = f"engine: {phase.value} ({seconds:.1f} s)"
        status = self._status  # the loop's thread may end the display meanwhile
        if self.live and status is not None:
            status.update(msg)
            self._say(f"  {msg}")
        else:
            self._say(msg)

    def end_progress(self) -> None:
        """End the live status line (no-op without one)."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def engine_ready(self, seconds: float) -> None:
        self.end_progress()
        self._say(f"engine ready in {seconds:.1f} s; warming up")

    # ---- how an attempt ended ---------------------------------------------------------
    def attempt_failed(self, n: int, kind: str, message: str) -> None:
        self.end_progress()
        self._say(f"[red]attempt {n} failed[/]: {kind}: {message}")

    def verification_failed(self, n: int, names: str) -> None:
        self._say(f"[red]attempt {n}: verification failed[/]: {names}")

    def stepping_down(self, reason: str) -> None:
        self._say(f"stepping down: {reason}")

    def serving(self, attempt: dict, report_paths: Sequence[Path], base_url: str,
                name: str | None) -> None:
        """The summary once verified: where to reach it, what was measured, how to try it."""
        v = attempt.get("verification") or {}
        self._say(f"[bold green]serving[/] {name} at {base_url}/v1 — ready in "
                  f"{attempt['ready_seconds']:.1f} s, warm-up {attempt['warmup_seconds']:.1f} s, "
                  f"verification {attempt['verification_seconds']:.2f} s")
        for d in v.get("devices", []):
            self._say(
                f"  device {d['index']}: used {fmt_gib(d['used_bytes'])} ≤ limit "
                f"{fmt_gib(d['limit_bytes'])} ({d['headroom_fraction']:.0%} free); engine "
                f"planned {fmt_gib(d['engine_planned_bytes'])}, measured "
                f"{fmt_gib(d['engine_measured_bytes'])}")
        for c in v.get("checks", []):
            if not c["hard"]:
                self._say(f"  {c['name']}: {'ok' if c['ok'] else 'off'} — {c['detail']}")
        self._say("report: " + ", ".join(map(str, report_paths)))
        self.console.print(
            f"try: curl {base_url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"-d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", "
            f"\"content\": \"Hello\"}}]}}'", highlight=False, soft_wrap=True)

    def speed(self, record: dict) -> None:
        """One line for the measured speed (the report's attempt `speed`), the prediction
        beside it where the plan has one."""
        m, p = record.get("measured") or {}, record.get("predicted")
        load = m.get("load") or {}
        ttft, itl = m.get("ttft_ms") or {}, m.get("itl_ms") or {}
        tpot = m.get("tpot_ms") or {}

        def ms(st: dict, extra: str = "") -> str:
            return f"{st['mean']:,.1f} ms (p50 {st['p50']:,.1f}, p90 {st['p90']:,.1f}{extra})" \
                if st else "–"
        per_request = f"; per request p50 {tpot['p50']:,.1f}, p90 {tpot['p90']:,.1f}" \
            if tpot else ""
        per_user = m.get("output_tokens_per_s_per_user")
        line = (f"speed at {load.get('concurrency')} streams for {load.get('seconds'):g} s "
                f"({load.get('prompt_tokens')} prompt + {load.get('output_tokens')} output "
                f"tokens): TTFT {ms(ttft)}, ITL {ms(itl, per_request)}, "
                f"{m.get('output_tokens_per_s', 0):,.1f} tokens/s, "
                f"{'–' if per_user is None else f'{per_user:,.1f}'} per user")
        self._say(line)
        if p:
            def num(key: str, unit: str) -> str:
                v = p.get(key)
                return f"{v:,.1f}{unit}" if isinstance(v, int | float) else "–"
            self._say(f"  predicted: TTFT {num('ttft_ms', ' ms')}, ITL {num('itl_ms', ' ms')}, "
                      f"{num('output_tokens_per_s', '')} tokens/s, "
                      f"{num('output_tokens_per_s_per_user', '')} per user")

    # ---- any time ---------------------------------------------------------------------
    def warning(self, message: str) -> None:
        """Called from the headroom monitor's thread too."""
        self.console.print(f"[yellow]warning:[/] {message}")

    def stopping(self, signal_name: str) -> None:
        self.end_progress()
        self._say(f"{signal_name}: stopping the engine")
