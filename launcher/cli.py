"""Command line: parse → call → render. No logic of its own.

Every option also reads `LAUNCHER_<NAME>` from the environment. Expected failures print what
failed, how to fix it and a runnable hint, and exit with the code of their kind
(`launcher.errors`); `LAUNCHER_DEBUG=1` shows the traceback. Heavy modules (NVML, hub) load
only inside the commands that need them, so `--help` and dry estimates stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from launcher.errors import InputError, LauncherError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Memory-aware launcher for vLLM: inventory, estimate, plan, serve.")


def _env(name: str) -> str:
    return f"LAUNCHER_{name.upper()}"


GpusOpt = Annotated[str | None, typer.Option(
    "--gpus", envvar=_env("gpus"),
    help="Simulated GPUs, e.g. 2xH100-80GB, 8xA100-40GB, 1xRTX4090 (see profiles/gpus.yaml).")]
InventoryOpt = Annotated[str | None, typer.Option(
    "--inventory-file", envvar=_env("inventory_file"),
    help="Replay a GPU snapshot written by `launcher gpus --json`.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
def gpus(gpus: GpusOpt = None, inventory_file: InventoryOpt = None, json_out: JsonOpt = False):
    """The GPUs this process can use (NVML), honouring CUDA_VISIBLE_DEVICES."""
    from launcher.hardware import get_inventory
    from launcher.hardware.host import read_host

    inv = get_inventory(gpus=gpus, inventory_file=inventory_file)
    if inv.host is None and inv.source == "nvml":
        from dataclasses import replace

        inv = replace(inv, host=read_host())
    if json_out:
        _print_json(inv.to_dict())
        return
    from rich.console import Console

    from launcher.render_hardware import host_line, inventory_table

    console = Console()
    console.print(inventory_table(inv))
    console.print(host_line(inv))


@app.command()
def models(json_out: JsonOpt = False):
    """Built-in model profiles with their aliases and key facts."""
    from launcher.render import models_rows

    rows = models_rows()
    if json_out:
        _print_json(rows)
        return
    from rich.console import Console

    from launcher.render import models_table

    Console().print(models_table(rows))


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="Profile alias, local model directory or HF repo id.")],
    gpus: GpusOpt = None,
    inventory_file: InventoryOpt = None,
    tp: Annotated[int, typer.Option("--tp", "--tensor-parallel-size", min=1,
                                    envvar=_env("tp"))] = 1,
    pp: Annotated[int, typer.Option("--pp", "--pipeline-parallel-size", min=1,
                                    envvar=_env("pp"))] = 1,
    dp: Annotated[int, typer.Option("--dp", "--data-parallel-size", min=1,
                                    envvar=_env("dp"))] = 1,
    dtype: Annotated[str, typer.Option(envvar=_env("dtype"),
                                       help="auto, bfloat16, float16")] = "auto",
    quantization: Annotated[str | None, typer.Option(envvar=_env("quantization"))] = None,
    kv_cache_dtype: Annotated[str, typer.Option(envvar=_env("kv_cache_dtype"),
                                                help="auto or fp8")] = "auto",
    max_model_len: Annotated[int | None, typer.Option(min=1, envvar=_env("max_model_len"))] = None,
    max_num_seqs: Annotated[int | None, typer.Option(min=1, envvar=_env("max_num_seqs"))] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(
        min=1, envvar=_env("max_num_batched_tokens"))] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(
        envvar=_env("gpu_memory_utilization"), help="Fraction in (0, 1].")] = None,
    kv_cache_memory_bytes: Annotated[int | None, typer.Option(
        min=1, envvar=_env("kv_cache_memory_bytes"))] = None,
    enforce_eager: Annotated[bool, typer.Option(envvar=_env("enforce_eager"))] = False,
    engine_version: Annotated[str | None, typer.Option(envvar=_env("engine_version"))] = None,
    json_out: JsonOpt = False,
):
    """Predict what plain vLLM does with exactly these flags (worst rank)."""
    from launcher.engines.version import choose_version
    from launcher.hardware import get_inventory
    from launcher.memory.estimate import EngineFlags
    from launcher.memory.estimate import estimate as run_estimate
    from launcher.memory.overheads import calibration_for
    from launcher.models.resolve import resolve_model

    if gpu_memory_utilization is not None and kv_cache_memory_bytes is not None:
        raise InputError("--gpu-memory-utilization and --kv-cache-memory-bytes both given",
                         fix="vLLM sizes the KV cache by one or the other; keep one.")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise InputError(f"--gpu-memory-utilization {gpu_memory_utilization} is outside (0, 1]",
                         fix="Pass the fraction of GPU memory vLLM may use, e.g. 0.9.")
    if kv_cache_dtype not in ("auto", "fp8", "fp8_e4m3", "fp8_e5m2"):
        raise InputError(f"--kv-cache-dtype {kv_cache_dtype!r} is not auto or fp8",
                         fix="Use --kv-cache-dtype auto or --kv-cache-dtype fp8.")
    from launcher.models.spec import TORCH_DTYPES

    if dtype != "auto" and dtype.lower() not in TORCH_DTYPES:
        raise InputError(f"--dtype {dtype!r} is not a dtype vLLM serves",
                         fix="Use auto, bfloat16 or float16.")
    version, version_source = choose_version(engine_version)
    cal = calibration_for(version)
    inv = get_inventory(gpus=gpus, inventory_file=inventory_file)
    spec = resolve_model(model)
    flags = EngineFlags(tensor_parallel_size=tp, pipeline_parallel_size=pp,
                        data_parallel_size=dp, dtype=dtype, quantization=quantization,
                        kv_cache_dtype=kv_cache_dtype, max_model_len=max_model_len,
                        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                        gpu_memory_utilization=gpu_memory_utilization,
                        kv_cache_memory_bytes=kv_cache_memory_bytes, enforce_eager=enforce_eager)
    result = run_estimate(spec, list(inv.gpus), flags, cal,
                          version_source=f"{version} ({version_source})")
    out = result.to_json()
    out["model"] = {"name": spec.name, "source": spec.source, "assumptions": spec.assumptions}
    if json_out:
        _print_json(out)
    else:
        from rich.console import Console

        from launcher.render import estimate_panel

        Console().print(estimate_panel(out))
    raise typer.Exit(0 if result.starts else 3)


HeadroomOpt = Annotated[float, typer.Option(
    envvar=_env("headroom"), help="Fraction of each GPU's memory that stays free while serving.")]
MaxLenOpt = Annotated[int | None, typer.Option(
    envvar=_env("max_model_len"), help="Context cap in tokens (default: the model's maximum).")]
MinCtxOpt = Annotated[int | None, typer.Option(
    envvar=_env("min_context"),
    help="Shortest context the planner may step down to (default 4096 or the model maximum).")]
MinConcOpt = Annotated[int, typer.Option(
    envvar=_env("min_concurrency"), help="Full-length sequences each replica must hold at once.")]
QuantOpt = Annotated[str, typer.Option(
    envvar=_env("quantization"), help="auto, none, fp8, awq, gptq, bitsandbytes or 4bit.")]
KvOpt = Annotated[str, typer.Option(envvar=_env("kv_cache_dtype"),
                                    help="auto (planner decides) or fp8.")]
TpOpt = Annotated[str, typer.Option("--tp", envvar=_env("tp"), help="auto or a size.")]
PpOpt = Annotated[str, typer.Option("--pp", envvar=_env("pp"), help="auto or a size.")]
ObjectiveOpt = Annotated[str, typer.Option(envvar=_env("objective"),
                                           help="throughput (fewest GPUs per replica, more "
                                                "replicas) or latency (largest TP).")]
EngineVersionOpt = Annotated[str | None, typer.Option(envvar=_env("engine_version"),
                                                      help="vLLM version to plan for.")]
EagerOpt = Annotated[bool, typer.Option(envvar=_env("enforce_eager"),
                                        help="No CUDA graphs (less memory, slower decode).")]
EnginePythonOpt = Annotated[str | None, typer.Option(
    envvar=_env("engine_python"), help="Python interpreter with vLLM (default: this one).")]
DeviceOpt = Annotated[str, typer.Option(
    envvar=_env("device"), help="auto (GPUs if NVML finds any, else vLLM's CPU backend), cuda or cpu.")]
HostOpt = Annotated[str, typer.Option(envvar=_env("host"), help="Address the server binds.")]
PortOpt = Annotated[int, typer.Option(envvar=_env("port"), help="Port of the OpenAI API.")]


def _size(name: str, value: str) -> int | None:
    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise InputError(f"{name} {value!r} is not auto or a whole number",
                         fix=f"Use {name} auto or e.g. {name} 2.") from None
    if n < 1:
        raise InputError(f"{name} {n} is below 1", fix=f"Use {name} auto or a positive size.")
    return n


PLAN_OPTIONS = ("gpus", "inventory_file", "headroom", "max_model_len", "min_context",
                "min_concurrency", "quantization", "kv_cache_dtype", "tp", "pp", "objective",
                "engine_version", "enforce_eager", "engine_python", "host", "port", "device",
                "engine_args")


def _settle(ctx: typer.Context, model: str, names: tuple[str, ...]) -> dict:
    """Each option's value and where it came from: CLI > env > the model profile > default."""
    from launcher.models.profiles import find_profile
    from launcher.settings import settle

    sources = {}
    for name in names:
        src = ctx.get_parameter_source(name)
        label = getattr(src, "name", str(src)).upper()
        sources[name] = "cli" if label == "COMMANDLINE" else "env" if label == "ENVIRONMENT" \
            else "default"
    profile = find_profile(model) if model else None
    defaults = {k: v for k, v in (profile.launcher_defaults if profile else {}).items()
                if k in names}
    return settle({n: ctx.params[n] for n in names}, sources, defaults,
                  profile.key if profile else None)


def _request(settings: dict):
    import shlex

    from launcher.planner import PlanRequest
    from launcher.prepare import Target

    v = {k: s.value for k, s in settings.items()}
    req = PlanRequest(headroom=v["headroom"], max_model_len=v["max_model_len"],
                      min_context=v["min_context"], min_concurrency=v["min_concurrency"],
                      quantization=v["quantization"], kv_cache_dtype=v["kv_cache_dtype"],
                      tp=_size("--tp", str(v["tp"])), pp=_size("--pp", str(v["pp"])),
                      objective=v["objective"], enforce_eager=v["enforce_eager"])
    try:
        extra = tuple(shlex.split(v["engine_args"] or ""))
    except ValueError as e:
        raise InputError(f"--engine-args / LAUNCHER_ENGINE_ARGS cannot be parsed: {e}",
                         fix="Quote it as a shell would, e.g. --engine-args '--seed 1'.") from e
    target = Target(gpus=v["gpus"], inventory_file=v["inventory_file"],
                    engine_version=v["engine_version"], engine_python=v["engine_python"],
                    host=v["host"], port=v["port"], device=v["device"], engine_args=extra)
    return req, target


def _secrets(settings: dict) -> list[str]:
    import shlex

    from launcher.redact import secret_flag_values, secrets_from_env

    extra = settings.get("engine_args")
    try:
        flags = shlex.split(extra.value or "") if extra is not None else []
    except ValueError:
        flags = []
    return secrets_from_env() + secret_flag_values(flags)


def _settings_json(settings: dict) -> dict:
    from launcher.redact import redact_obj

    return redact_obj({k: s.to_json() for k, s in settings.items()}, _secrets(settings))


def _print_settings(settings: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Settings (CLI > environment > profile > default)", title_justify="left")
    t.add_column("option")
    t.add_column("value")
    t.add_column("from")
    for name, s in _settings_json(settings).items():
        t.add_row(name, "–" if s["value"] is None else str(s["value"]), s["source"])
    Console().print(t)


def _plan_and_print(model: str, settings: dict, *, json_out: bool, explain: bool) -> None:
    from launcher.prepare import build_plan

    req, target = _request(settings)
    p = build_plan(model, req, target)
    from launcher.redact import redact_obj

    p.settings = _settings_json(settings)
    out = redact_obj(p.to_json(), _secrets(settings))
    if json_out:
        _print_json(out)
    else:
        from rich.console import Console

        from launcher.render_plan import plan_view

        if explain:
            _print_settings(settings)
        Console().print(plan_view(out))
    raise typer.Exit(0 if p.feasible else 3)


ModelArg = Annotated[str, typer.Argument(
    envvar=_env("model"), help="Profile alias, local model directory or HF repo id "
    "(LAUNCHER_MODEL).")]
ExplainOpt = Annotated[bool, typer.Option(
    "--explain", help="Also show where every option's value came from.")]
EngineArgsOpt = Annotated[str | None, typer.Option(
    envvar=_env("engine_args"), help="Extra vLLM flags, checked against the plan.")]


@app.command()
def plan(
    ctx: typer.Context,
    model: ModelArg,
    gpus: GpusOpt = None,
    inventory_file: InventoryOpt = None,
    headroom: HeadroomOpt = 0.2,
    max_model_len: MaxLenOpt = None,
    min_context: MinCtxOpt = None,
    min_concurrency: MinConcOpt = 8,
    quantization: QuantOpt = "auto",
    kv_cache_dtype: KvOpt = "auto",
    tp: TpOpt = "auto",
    pp: PpOpt = "auto",
    objective: ObjectiveOpt = "throughput",
    engine_version: EngineVersionOpt = None,
    enforce_eager: EagerOpt = False,
    engine_python: EnginePythonOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    device: DeviceOpt = "auto",
    engine_args: EngineArgsOpt = None,
    explain: ExplainOpt = False,
    json_out: JsonOpt = False,
):
    """The launch plan for MODEL on these GPUs, with every decision explained (starts nothing)."""
    _plan_and_print(model, _settle(ctx, model, PLAN_OPTIONS), json_out=json_out,
                    explain=explain)


@app.command("demo-model")
def demo_model(
    directory: Annotated[str | None, typer.Argument(
        help="Where to build it (default: $LAUNCHER_CACHE_DIR/demo-model).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if it is already there.")] = False,
):
    """Build the tiny demo model (random weights, trained BPE tokenizer; no download)."""
    from pathlib import Path

    from launcher.models.demo import build_demo_model, default_dir, is_built

    path = Path(directory).expanduser() if directory else default_dir()
    if force or not is_built(path):
        build_demo_model(path)
        print(f"built {path}")
    else:
        print(f"already built: {path}")


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error types, abort types) of click and of typer's vendored copy of it."""
    usage: list[type] = []
    abort: list[type] = []
    for mod in ("click.exceptions", "typer._click.exceptions"):
        try:
            m = __import__(mod, fromlist=["ClickException"])
        except ImportError:
            continue
        usage.append(m.ClickException)
        if hasattr(m, "Abort"):
            abort.append(m.Abort)
    return tuple(usage), tuple(abort)


def _run(argv: list[str] | None, prog: str, application: typer.Typer) -> None:
    usage, abort = _click_exceptions()
    try:
        rc = application(args=argv, prog_name=prog, standalone_mode=False)
    except LauncherError as e:
        if os.environ.get("LAUNCHER_DEBUG") == "1":
            raise
        _print_error(e)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except usage as e:  # bad flags: click's own message, exit 2
        e.show()  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except abort:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


def _print_error(e: LauncherError) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {e.message}", markup=True)
    if e.fix:
        console.print(f"[bold]fix:[/] {e.fix}", markup=True)
    if e.hint:
        console.print(f"[bold]try:[/] {e.hint}", markup=True)


def main(argv: list[str] | None = None) -> None:
    _run(argv, "launcher", app)


serve_app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                        help="Serve a model with a memory plan that keeps 20 % of each GPU free.")


@serve_app.command()
def serve(
    ctx: typer.Context,
    model: ModelArg,
    gpus: GpusOpt = None,
    inventory_file: InventoryOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; start nothing.")] = False,
    headroom: HeadroomOpt = 0.2,
    max_model_len: MaxLenOpt = None,
    min_context: MinCtxOpt = None,
    min_concurrency: MinConcOpt = 8,
    quantization: QuantOpt = "auto",
    kv_cache_dtype: KvOpt = "auto",
    tp: TpOpt = "auto",
    pp: PpOpt = "auto",
    objective: ObjectiveOpt = "throughput",
    engine_version: EngineVersionOpt = None,
    enforce_eager: EagerOpt = False,
    engine_python: EnginePythonOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    device: DeviceOpt = "auto",
    engine_args: EngineArgsOpt = None,
    report: Annotated[str | None, typer.Option(
        envvar=_env("report"), help="Write the launch report (JSON) here.")] = None,
    fit_report: Annotated[str | None, typer.Option(
        envvar=_env("fit_report"),
        help="Where every run writes fit-report.json (default: the launcher cache).")] = None,
    max_attempts: Annotated[int, typer.Option(
        envvar=_env("max_attempts"), help="Launches to try, stepping down after each failure.")] = 3,
    log_dir: Annotated[str | None, typer.Option(
        envvar=_env("log_dir"), help="Where engine logs go (default: the launcher cache).")] = None,
    ready_timeout: Annotated[float, typer.Option(
        envvar=_env("ready_timeout"), help="Seconds to wait for the engine's /health.")] = 1200.0,
    control_host: Annotated[str, typer.Option(
        envvar=_env("control_host"), help="Address of the control API.")] = "127.0.0.1",
    control_port: Annotated[int, typer.Option(
        envvar=_env("control_port"), help="Port of the control API (0: no control API).")] = 8001,
    monitor_interval: Annotated[float, typer.Option(
        envvar=_env("monitor_interval"), help="Seconds between live memory samples.")] = 5.0,
    explain: ExplainOpt = False,
    json_out: JsonOpt = False,
):
    """Plan, launch, warm up, verify and serve MODEL (`--dry-run`: print the plan only)."""
    settings = _settle(ctx, model, (*PLAN_OPTIONS, "report", "fit_report", "max_attempts",
                                    "log_dir", "ready_timeout", "control_host", "control_port",
                                    "monitor_interval"))
    if dry_run:
        _plan_and_print(model, settings, json_out=json_out, explain=explain)
    from pathlib import Path

    from rich.console import Console

    from launcher.runtime.serve import ServeOptions, run_serve

    if json_out:
        raise InputError("--json goes with --dry-run", fix="serve prints progress; its JSON "
                         "record is the --report file.")
    if explain:
        _print_settings(settings)
    req, target = _request(settings)
    v = {k: s.value for k, s in settings.items()}
    opts = ServeOptions(
        report=Path(v["report"]) if v["report"] else None, max_attempts=v["max_attempts"],
        log_dir=Path(v["log_dir"]) if v["log_dir"] else None, ready_timeout=v["ready_timeout"],
        control_host=v["control_host"], control_port=v["control_port"],
        fit_report=Path(v["fit_report"]) if v["fit_report"] else None,
        monitor_interval=v["monitor_interval"], settings=_settings_json(settings))
    raise typer.Exit(run_serve(model, req, target, opts, Console(highlight=False)))


def serve_main(argv: list[str] | None = None) -> None:
    _run(argv, "serve", serve_app)
