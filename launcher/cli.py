"""Command line: parse → call → render. No logic of its own.

The options of `gpus`, `models`, `estimate`, `plan`, `serve` and `calibration show` are not
written here: each
command's signature is built from the registry in `launcher.options` (flags, help, the
`LAUNCHER_<NAME>` variable), and the registry settles and parses the values (CLI > env >
profile > default) and builds the objects the core receives. Click only reads the command
line. Expected failures print what failed, how to fix it and a runnable hint, and exit with
the code of their kind (`launcher.errors`); `LAUNCHER_DEBUG=1` shows the traceback. Heavy
modules (NVML, hub, engine, API) load only inside the commands that need them, so `--help`
and dry runs stay fast.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from launcher import options, policy
from launcher.errors import DoesNotFitError, InputError, LauncherError
from launcher.options import Option
from launcher.settings import Setting

if TYPE_CHECKING:
    from launcher.runtime.serve import ControlApi
    from launcher.runtime.state import ControlState

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Memory-aware launcher for vLLM: inventory, estimate, plan, serve.")


# ---- signatures from the registry -----------------------------------------------------------

def _help(o: Option) -> str:
    """The option's help with click's own suffix: [env var: …; default: …; range]."""
    extra = [f"env var: {o.env_var}"] if o.env_var else []
    if o.default_text is not None:
        extra.append(f"default: {o.default_text}")
    if o.range_text:
        extra.append(o.range_text)
    return f"{o.help}  [{'; '.join(extra)}]" if extra else o.help


def _parameter(o: Option) -> inspect.Parameter:
    """The Typer parameter of one option. Values reach the command as text (None: not on the
    command line) so that one parser, in `launcher.options`, reads CLI and environment alike."""
    default: object = None
    annotation: object
    if o.argument:
        annotation = Annotated[str | None, typer.Argument(help=_help(o), show_default=False,
                                                          metavar=o.name)]
    elif o.kind == "switch":
        annotation = Annotated[bool, typer.Option(*o.cli_flags, help=o.help)]
        default = False
    elif o.kind == "bool":
        flag = o.cli_flags[0]
        annotation = Annotated[bool | None, typer.Option(f"{flag}/--no-{flag[2:]}",
                                                         help=_help(o), show_default=False)]
    else:
        annotation = Annotated[str | None, typer.Option(*o.cli_flags, help=_help(o),
                                                        metavar=o.metavar, show_default=False)]
    return inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def _command(application: typer.Typer, command: str,
             name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(**given)` as `command`, its signature built from the registry."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        params = [_parameter(o) for o in options.options_for(command)]
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        fn.__annotations__ = {p.name: p.annotation for p in params}
        application.command(name)(fn)
        return fn
    return register


def _settle(command: str, given: dict[str, Any], model: str | None = None) -> dict[str, Setting]:
    """Each setting's value and where it came from: CLI > env > the model profile > default."""
    profile = None
    if model and command in (*options.PLANNING, "fit"):
        from launcher.models.profiles import find_profile

        profile = find_profile(model)
    return options.settle_command(command, given,
                                  profile_defaults=profile.launcher_defaults if profile else None,
                                  profile_key=profile.key if profile else None)


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---- commands -------------------------------------------------------------------------------

@_command(app, "gpus")
def gpus(**given: Any) -> None:
    """The GPUs this process can use (NVML), honouring CUDA_VISIBLE_DEVICES."""
    from launcher.hardware import get_inventory
    from launcher.hardware.host import read_host

    v = options.values(_settle("gpus", given))
    inv = get_inventory(gpus=options.text(v, "gpus"),
                        inventory_file=options.text(v, "inventory_file"))
    if inv.host is None and inv.source == "nvml":
        from dataclasses import replace

        inv = replace(inv, host=read_host())
    if given["json"]:
        _print_json(inv.to_dict())
        return
    from rich.console import Console

    from launcher.render.hardware import host_line, inventory_table

    console = Console()
    console.print(inventory_table(inv))
    console.print(host_line(inv))


@_command(app, "models")
def models(**given: Any) -> None:
    """Built-in model profiles with their aliases and key facts."""
    from launcher.render.models import models_rows

    rows = models_rows()
    if given["json"]:
        _print_json(rows)
        return
    from rich.console import Console

    from launcher.render.models import models_table

    Console().print(models_table(rows))


@_command(app, "estimate")
def estimate(**given: Any) -> None:
    """Predict what plain vLLM does with exactly these flags (worst rank)."""
    from launcher.engines.calibration import calibration_for
    from launcher.engines.version import choose_version
    from launcher.hardware import get_inventory
    from launcher.memory.context import engine_context
    from launcher.memory.estimate import estimate as run_estimate
    from launcher.models.resolve import resolve_model

    model = options.model_argument(given["model"])
    v = options.values(_settle("estimate", given))  # plain vLLM: no profile defaults
    flags = options.engine_flags(v)
    version, version_source = choose_version(options.text(v, "engine_version"))
    cal = calibration_for(version)
    inv = get_inventory(gpus=options.text(v, "gpus"),
                        inventory_file=options.text(v, "inventory_file"))
    spec = engine_context(resolve_model(model), cal.context)
    result = run_estimate(spec, list(inv.gpus), flags, cal,
                          version_source=f"{version} ({version_source})")
    out = result.to_json()
    out["model"] = {"name": spec.name, "source": spec.source,
                    "assumptions": list(spec.assumptions)}
    if given["json"]:
        _print_json(out)
    else:
        from rich.console import Console

        from launcher.render.models import estimate_panel

        Console().print(estimate_panel(out))
    raise typer.Exit(0 if result.starts else DoesNotFitError.exit_code)


def _secrets(settings: dict[str, Setting]) -> list[str]:
    import shlex

    from launcher.redact import secret_flag_values, secrets_from_env

    extra = settings.get("engine_args")
    try:
        flags = shlex.split(extra.value or "") if extra is not None else []
    except ValueError:
        flags = []
    return secrets_from_env() + secret_flag_values(flags)


def _settings_json(settings: dict[str, Setting]) -> dict[str, Any]:
    """Each setting's {value, source}, secrets redacted."""
    from launcher.redact import redact_obj

    redacted: dict[str, Any] = redact_obj({k: s.to_json() for k, s in settings.items()},
                                          _secrets(settings))
    return redacted


def _print_settings(settings: dict[str, Setting]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Settings (CLI > environment > profile > default)", title_justify="left")
    t.add_column("option")
    t.add_column("value")
    t.add_column("from")
    for name, s in _settings_json(settings).items():
        t.add_row(name, "–" if s["value"] is None else str(s["value"]), s["source"])
    Console().print(t)


def _plan_and_print(model: str, settings: dict[str, Setting], *, json_out: bool,
                    explain: bool) -> None:
    """`launcher plan` = `serve --dry-run`: the plan `serve` would launch, planned around what
    other launchers on this host hold (read from the lease, adding no entry), and what `serve`
    would download first."""
    from dataclasses import replace

    from launcher.prepare import build_plan
    from launcher.redact import redact_obj
    from launcher.runtime.lease import around_for

    v = options.values(settings)
    p = build_plan(model, options.plan_request(v), options.target(v),
                   around=around_for(options.text(v, "lease_dir")))
    p = replace(p, settings=_settings_json(settings))
    if p.feasible and p.engine is not None:  # what serve fetches before the engine starts
        from launcher.models.download import plan_statement

        e = p.engine
        p = replace(p, notes=(*p.notes, *plan_statement(model, e.flag("--model"), e.flag("--revision"),
                                                         e.flag("--download-dir"))))
    out = redact_obj(p.to_json(), _secrets(settings))
    if json_out:
        _print_json(out)
    else:
        from rich.console import Console

        from launcher.render.plan import plan_view

        if explain:
            _print_settings(settings)
        Console().print(plan_view(out))
    raise typer.Exit(0 if p.feasible else DoesNotFitError.exit_code)


@_command(app, "plan")
def plan(**given: Any) -> None:
    """The launch plan for MODEL on these GPUs, with every decision explained (starts nothing)."""
    model = options.model_argument(given["model"])
    settings = _settle("plan", given, model)
    if settings["emit"].value != "none":
        _plan_and_emit(model, settings, json_out=given["json"], explain=given["explain"])
    if settings["nodes"].source != "default":  # would be silently ignored without --emit
        raise InputError(f"--nodes only spreads a plan for --emit; plan for nodes with --gpus "
                         f"2x8xTYPE (variable {options.env_var('nodes')} counts too)",
                         fix="Drop --nodes, add --emit lws|shell|kuberay, or plan on nodes: "
                             "--gpus NODESxGPUSxTYPE.",
                         hint=f"launcher plan {model} --gpus 2x8xH100-80GB")
    _plan_and_print(model, settings, json_out=given["json"], explain=given["explain"])


def _plan_and_emit(model: str, settings: dict[str, Setting], *, json_out: bool,
                   explain: bool) -> None:
    """`plan --emit`: the plan as usual (on stderr when the file goes to stdout), then the
    deployment file from it (launcher.deploy), written whole."""
    import contextlib
    from dataclasses import replace

    from rich.console import Console

    from launcher import deploy
    from launcher.prepare import build_plan
    from launcher.redact import redact_obj

    v = options.values(settings)
    kind, path = str(v["emit"]), options.text(v, "emit_file")
    if json_out and path is None:
        raise InputError("--json and --emit without --emit-file would both write stdout",
                         fix="Give --emit-file for the deployment file.",
                         hint=f"launcher plan {model} --emit {kind} --emit-file deploy.yaml --json")
    # The image's interpreter and an API the Service can reach; for shell, the interpreter on
    # each node's PATH (this machine's own path may not exist there) unless --engine-python.
    forced = ((("engine_python", deploy.CONTAINER_PYTHON), ("host", deploy.CONTAINER_HOST))
              if deploy.in_container(kind) else (("engine_python", deploy.NODE_PYTHON),))
    for name, value in forced:
        if settings[name].source == "default":
            settings[name] = Setting(name, value, f"default for --emit {kind}")
    v = options.values(settings)
    p = build_plan(model, options.plan_request(v), options.target(v))
    p = replace(p, settings=_settings_json(settings))
    out = redact_obj(p.to_json(), _secrets(settings))
    if json_out:
        _print_json(out)
    else:
        from launcher.render.plan import plan_view

        console = Console(stderr=path is None)
        if explain:  # stdout may be the deployment file
            with contextlib.redirect_stdout(sys.stderr if path is None else sys.stdout):
                _print_settings(settings)
        console.print(plan_view(out))
    nodes = v["nodes"]
    text = deploy.emit(p, deploy.EmitRequest(
        kind=kind, model_arg=model, nodes=nodes if isinstance(nodes, int) else None,
        ifname=options.text(v, "emit_ifname"), image=options.text(v, "emit_image"),
        launcher_env=deploy.launcher_env(settings)))
    if path is None:
        sys.stdout.write(text)
    else:
        from launcher.deploy.files import write_atomic

        print(f"wrote {write_atomic(path, text)} (--emit {kind})", file=sys.stderr)
    raise typer.Exit(0)


@_command(app, "fit")
def fit(**given: Any) -> None:
    """MODEL on every catalog GPU type × 1/2/4/8: fits or not, precision, parallelism,
    capacity, predicted speed (and cost with --price-file), best first by --objective."""
    from launcher.prepare import fit_rows
    from launcher.render.fit import sort_rows

    model = options.model_argument(given["model"])
    v = options.values(_settle("fit", given, model))
    req = options.plan_request(v)
    price_file = options.text(v, "price_file")
    if req.objective == "cost" and not price_file:
        raise InputError("--objective cost needs prices to compare GPU types",
                         fix="Pass --price-file with USD per GPU-hour per GPU type.",
                         hint=f"launcher fit {model} --objective cost --price-file "
                              "profiles/prices.example.yaml")
    rows, notes = fit_rows(model, req, engine_version=options.text(v, "engine_version"),
                           price_file=price_file)
    rows = sort_rows(rows, req.objective)
    fits = any(r.fits for r in rows)
    if given["json"]:
        _print_json({"model": model, "objective": req.objective,
                     "workload": req.workload.to_json(), "price_file": price_file,
                     "rows": [r.to_json() for r in rows], "notes": notes})
        raise typer.Exit(0 if fits else DoesNotFitError.exit_code)
    from rich.console import Console

    from launcher.planner.explain import workload_text
    from launcher.render.fit import fit_table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(fit_table(rows, model=model, objective=req.objective,
                            workload=workload_text(req.workload), priced=bool(price_file)))
    for n in notes:
        console.print(f"note: {n}", style="dim")
    raise typer.Exit(0 if fits else DoesNotFitError.exit_code)


@_command(app, "speed")
def speed(**given: Any) -> None:
    """Predicted TTFT, inter-token latency and throughput of MODEL on these GPUs for a
    workload (plans the memory first; starts nothing)."""
    from launcher.speed_io import forecast

    model = options.model_argument(given["model"])
    result = forecast(model, options.values(_settle("speed", given)))
    if given["json"]:
        _print_json(result.to_json())
        return
    from rich.console import Console

    from launcher.render.speed import speed_view

    Console(highlight=False).print(speed_view(result.to_json()))


@app.command("demo-model")
def demo_model(
    directory: Annotated[str | None, typer.Argument(
        help="Where to build it (default: $LAUNCHER_CACHE_DIR/demo-model, or "
             "demo-model-large).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if it is already there.")] = False,
    size: Annotated[str, typer.Option(
        help="small: the tiny demo (profile `demo`); large: a 0.49 B model shaped like "
             "Qwen2.5-0.5B (0.92 GiB of bf16 weights).")] = "small",
) -> None:
    """Build a demo model (random weights, trained BPE tokenizer; no download)."""
    from pathlib import Path

    from launcher.models.demo import SIZES, build_demo_model, default_dir, is_built

    if size not in SIZES:
        raise InputError(f"--size {size!r} is not {' or '.join(SIZES)}",
                         fix="Use --size small or --size large.")
    path = Path(directory).expanduser() if directory else default_dir(size)
    if force or not is_built(path, size):
        build_demo_model(path, size)
        print(f"built {path}")
    else:
        print(f"already built: {path}")


calibration_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                              pretty_exceptions_enable=False,
                              help="What earlier verified starts on this host measured (the "
                                   "boot store plans learn from).")
app.add_typer(calibration_app, name="calibration")


@_command(calibration_app, "calibration", name="show")
def calibration_show(**given: Any) -> None:
    """The boots stored on this host: planned vs measured, under their fingerprint."""
    from launcher.calibration.boot_store import BootStore

    store = BootStore()
    found = store.load()
    if found.problem:
        print(f"warning: {found.problem}", file=sys.stderr)
    if given["json"]:
        _print_json({"path": str(store.path), "problem": found.problem,
                     "boots": [b.to_json() for b in found.boots]})
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from launcher.units import fmt_gib

    # one row per boot, unwrapped also when piped (a pipe has no width; rich assumes 80)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    if not found.boots:
        console.print(f"no boots stored in {store.path}")
        return
    t = Table(title=f"Boots on this host ({store.path}), oldest first", title_justify="left",
              box=box.SIMPLE_HEAD)
    for col in ("when", "model", "engine · device", "shape · batch", "planned", "measured",
                "over the model"):
        t.add_column(col, justify="right" if col in ("planned", "measured", "over the model")
                     else "left")
    for b in found.boots:
        f = b.fingerprint
        over, frac = b.overshoot_bytes, b.overshoot_fraction
        t.add_row(b.at.replace("T", " ")[:16],
                  f"{b.model_name} {f.dtype}"
                  + ("" if f.quantization == "none" else f" {f.quantization}"),
                  f"{f.engine} {f.device_name}" + (f" ({f.driver})" if f.driver else ""),
                  f.shape, fmt_gib(b.engine_planned_bytes), fmt_gib(b.engine_measured_bytes),
                  "–" if over is None else
                  f"{'+' if over >= 0 else '-'}{fmt_gib(abs(over))}"
                  + ("" if frac is None else f" ({frac:+.0%})"))
    console.print(t)
    console.print("planned, measured: the engine's memory on its worst device, KV cache "
                  "included; over the model: measured − what the memory model planned "
                  "(share of its non-KV memory). Plans on this host add what these call for.")


@calibration_app.command("clear")
def calibration_clear() -> None:
    """Empty the boot store (asks nothing); prints what it removed."""
    from launcher.calibration.boot_store import BootStore

    store = BootStore()
    removed = store.clear()
    if not removed:
        print(f"nothing to remove: no boot store at {store.path}")
    for what in removed:
        print(f"removed {what}")


def _click_exceptions() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(usage-error types, abort types) of click and of typer's vendored copy of it."""
    usage: list[type[Exception]] = []
    abort: list[type[Exception]] = []
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
        if os.environ.get(options.env_var("debug")) == "1":
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
                        help="Serve a model with a memory plan that keeps "
                             f"{policy.DEFAULT_HEADROOM:.0%} of each GPU free.")


@_command(serve_app, "serve")
def serve(**given: Any) -> None:
    """Plan, launch, warm up, verify and serve MODEL (`--dry-run`: print the plan only)."""
    model = options.model_argument(given["model"])
    settings = _settle("serve", given, model)
    if given["dry_run"]:
        _plan_and_print(model, settings, json_out=given["json"], explain=given["explain"])
    if given["json"]:
        raise InputError("--json goes with --dry-run", fix="serve prints progress; its JSON "
                         "record is the --report file.")
    from rich.console import Console

    from launcher.runtime.serve import run_serve

    if given["explain"]:
        _print_settings(settings)
    v = options.values(settings)
    opts = options.serve_options(v, _settings_json(settings))
    raise typer.Exit(run_serve(model, options.plan_request(v), options.target(v), opts,
                               Console(highlight=False), control=_start_control_api))


def _start_control_api(state: ControlState, host: str, port: int) -> ControlApi:
    """The control API (FastAPI), imported only when `serve` starts one."""
    from launcher.api.app import start_control_api

    return start_control_api(state, host, port)


def serve_main(argv: list[str] | None = None) -> None:
    _run(argv, "serve", serve_app)
