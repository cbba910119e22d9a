"""Every option of the launcher, declared once.

One `Option` per setting gives its flag spellings, its `LAUNCHER_<NAME>` variable, type,
default (the named policy values of `launcher.policy`), unit, choices, help text and the
commands that take it. From this table come:

    the Typer parameters of `gpus`, `models`, `estimate`, `plan`, `serve` and
    `calibration show` (`launcher.cli`)
    one parser per kind, for the command line, the environment and profile defaults alike
    the settled values with their source (`launcher.settings`: CLI > env > profile > default)
    the objects the core receives: PlanRequest, Target, ServeOptions, EngineFlags
    the options tables of README.md and docker/PLATFORM.md and the variables of
    docker/platform-template.json (`scripts/gen-docs`; a test fails when they drift)

A value that is not given is `None` ("plan it", "vLLM's default"), never a sentinel number.
Bad values fail with `InputError` (exit 2) naming the flag and the variable, and the fix.
Pure: no I/O but the environment mapping it is handed; core objects are imported lazily.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from launcher import policy
from launcher.errors import InputError
from launcher.models.spec import TORCH_DTYPES
from launcher.settings import Setting, env_name, settle

if TYPE_CHECKING:
    from launcher.memory.estimate import EngineFlags
    from launcher.planner import PlanRequest
    from launcher.prepare import Target
    from launcher.runtime.cluster import ClusterOptions
    from launcher.runtime.serve import ServeOptions

Value = str | int | float | bool | None
Kind = Literal["text", "path", "int", "float", "size", "choice", "bool", "switch", "args"]
Form = Literal["basic", "advanced"]

COMMANDS = ("gpus", "models", "estimate", "plan", "serve", "fit", "speed", "calibration")
INVENTORY = ("gpus", "estimate", "plan", "serve", "speed")
ENGINE = ("estimate", "plan", "serve", "speed")
PLANNING = ("plan", "serve")
SIZING = ("plan", "serve", "fit")  # what sizes a plan: `fit` plans over the whole catalog
MODEL_COMMANDS = ("estimate", "plan", "serve", "fit", "speed")
SERVE = ("serve",)
WORKLOAD = ("speed", "plan", "serve", "fit")  # the workload a speed prediction is for
WORKLOAD_OPTIONS = ("input_len", "output_len", "concurrency", "request_rate", "num_prompts")
ESTIMATE = ("estimate",)
AUTO = "auto"
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    """One setting. `default` is the built-in value (None: not given); `default_doc` says what
    an unset value means where that is not a value of its own."""

    name: str
    kind: Kind
    help: str
    commands: tuple[str, ...]
    default: Value = None
    flags: tuple[str, ...] = ()  # first is the main spelling; empty: --<name>
    unit: str | None = None
    choices: tuple[str, ...] = ()
    # Per command, the values accepted instead of `choices` (None: any text, passed to vLLM).
    command_choices: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)  # other spellings → a choice
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    default_doc: str | None = None
    example: str | None = None
    argument: bool = False  # positional (MODEL)
    cli: bool = True  # False: a variable only, read by its own module
    secret: bool = False
    form: Form | None = None  # shown on the hosting form (docker/PLATFORM.md)
    label: str | None = None  # the form's label

    @property
    def env_var(self) -> str | None:
        """`LAUNCHER_<NAME>`; switches (--json, --explain, --dry-run) have none."""
        return None if self.kind == "switch" else env_name(self.name)

    @property
    def cli_flags(self) -> tuple[str, ...]:
        if not self.cli or self.argument:
            return ()
        return self.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def flag(self) -> str:
        """How messages name it: the main flag, MODEL, or the variable."""
        if self.argument:
            return self.name.upper()
        return self.cli_flags[0] if self.cli_flags else str(self.env_var)

    @property
    def setting(self) -> bool:
        """Settled with provenance (not an output switch, the model or a variable only)."""
        return self.cli and not self.argument and self.kind != "switch"

    def accepted(self, command: str) -> tuple[str, ...] | None:
        """The values this command accepts (None: any text)."""
        if command in self.command_choices:
            return self.command_choices[command]
        return self.choices

    @property
    def range_text(self) -> str | None:
        """Click's notation: x>=1, 0<=x<=0.9, 0<x<=1."""
        lo, hi = self.minimum, self.maximum
        if lo is None and hi is None:
            return None
        if hi is None:
            return f"x{'>' if self.exclusive_minimum else '>='}{_num(lo)}"
        if lo is None:
            return f"x<={_num(hi)}"
        return f"{_num(lo)}{'<' if self.exclusive_minimum else '<='}x<={_num(hi)}"

    @property
    def bounds(self) -> str | None:
        """In words: in [0, 0.9], in (0, 1], ≥ 1, > 0."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"in {'(' if self.exclusive_minimum else '['}{_num(lo)}, {_num(hi)}]"
        if lo is not None:
            return f"{'>' if self.exclusive_minimum else '≥'} {_num(lo)}"
        return None if hi is None else f"≤ {_num(hi)}"

    @property
    def metavar(self) -> str:
        if self.kind == "size":
            return "<auto|N>"
        if self.kind == "choice":
            return "<" + "|".join(self.choices) + ">"
        return {"int": "<int>", "float": "<float>", "path": "<path>", "args": "<flags>",
                "bool": "<bool>", "switch": ""}.get(self.kind, "<str>")

    @property
    def default_text(self) -> str | None:
        """The default as a user would type it, or what unset means; None: nothing to say."""
        if self.default is None:
            return self.default_doc
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return _num(self.default) if isinstance(self.default, float) else str(self.default)


def _num(x: float | None) -> str:
    """1200.0 → 1200, 0.2 → 0.2."""
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


OPTIONS: tuple[Option, ...] = (
    Option("model", "text", "What to serve: a profile alias (`launcher models`), a local model "
           "directory or a Hugging Face repo id.", MODEL_COMMANDS, argument=True, form="basic", label="Model",
           example="Qwen/Qwen3-8B"),
    Option("gpus", "text", "Simulated GPUs to plan for instead of the ones NVML sees, e.g. "
           "2xH100-80GB, 8xA100-40GB, 1xRTX4090 (see profiles/gpus.yaml); nodes as "
           "NODESxGPUSxTYPE, e.g. 2x8xH100-80GB (TP inside a node, PP across).", INVENTORY,
           example="2xH100-80GB", default_doc="the GPUs NVML sees"),
    Option("inventory_file", "path", "Replay a GPU snapshot written by `launcher gpus --json`; "
           "several nodes: one snapshot per node joined by ':' (node0.json:node1.json), or a "
           "cluster file (YAML/JSON, format launcher-cluster/1, see launcher/hardware/"
           "cluster.py).", INVENTORY),
    Option("dry_run", "switch", "Plan only; start nothing.", SERVE),
    Option("headroom", "float", "Fraction of each GPU's memory that stays free while serving "
           "(verified after warm-up).", SIZING, default=policy.DEFAULT_HEADROOM,
           unit="fraction", minimum=0, maximum=policy.MAX_HEADROOM, example="0.15",
           form="basic", label="GPU memory headroom"),
    Option("max_model_len", "int", "Context cap per request, in tokens.", MODEL_COMMANDS,
           unit="tokens", minimum=1,
           default_doc="the model's maximum", example="32768", form="basic",
           label="Max context (tokens)"),
    Option("min_context", "int", "Shortest context the planner may step down to.", SIZING,
           unit="tokens", minimum=1,
           default_doc=f"{policy.DEFAULT_MIN_CONTEXT} or the model's maximum", example="8192",
           form="advanced", label="Min context (tokens)"),
    Option("min_concurrency", "int", "Full-length sequences each replica must hold at once; "
           "the plan fails (exit 3) rather than go below.", SIZING,
           default=policy.DEFAULT_MIN_CONCURRENCY, unit="sequences", minimum=1, example="16",
           form="basic", label="Min concurrency"),
    Option("tp", "size", "Tensor-parallel size: auto or a number of GPUs (estimate: auto is "
           "vLLM's 1).", ENGINE, default=AUTO,
           flags=("--tp", "--tensor-parallel-size"), example="2", form="advanced",
           label="Tensor parallel size"),
    Option("pp", "size", "Pipeline stages: auto or a number (estimate: auto is vLLM's 1).",
           ENGINE, default=AUTO,
           flags=("--pp", "--pipeline-parallel-size"), example="1", form="advanced",
           label="Pipeline parallel size"),
    Option("dp", "size", "Data-parallel replicas: auto (vLLM's default, 1) or a number.",
           ESTIMATE, default=AUTO, flags=("--dp", "--data-parallel-size"), example="2"),
    Option("dtype", "choice", "Activation and weight dtype of unquantized layers (vLLM's "
           "--dtype); auto: the model's own.", ESTIMATE, default=AUTO,
           choices=("auto", "bfloat16", "float16", "float32"), aliases=TORCH_DTYPES),
    Option("quantization", "choice", "Weight precision: auto (the highest that fits: bf16, then fp8, "
           "then 4-bit; estimate: the checkpoint's own), none (16-bit) or one to force. "
           "estimate also takes any vLLM --quantization method.",
           MODEL_COMMANDS, default=AUTO, choices=policy.QUANTIZATION_CHOICES,
           command_choices={"estimate": None}, form="basic", label="Quantization"),
    Option("kv_cache_dtype", "choice", "KV cache precision: auto (the planner may step down to fp8 "
           "before shortening the context; estimate: the model's dtype) or fp8 (estimate "
           "also fp8_e4m3, fp8_e5m2).", MODEL_COMMANDS, default=AUTO,
           choices=policy.KV_CACHE_DTYPE_CHOICES,
           command_choices={"estimate": (*policy.KV_CACHE_DTYPE_CHOICES, "fp8_e4m3",
                                         "fp8_e5m2")},
           form="advanced", label="KV cache dtype"),
    Option("objective", "choice", "What the plan chooses by among the configurations that "
           "fit, from the predicted speed for the workload: throughput (most output tokens/s), "
           "latency (shortest request: TTFT + output × ITL) or cost (fewest GPU-hours per "
           "million output tokens; USD with --price-file).", SIZING,
           default=policy.OBJECTIVES[0], choices=policy.OBJECTIVES, form="basic",
           label="Objective"),
    Option("max_ttft_ms", "float", "Service level: configurations predicted to take longer "
           "to the first token lose; when none meets it the plan says by how much the best "
           "misses (exit 3).", SIZING, unit="ms", minimum=0, exclusive_minimum=True,
           example="500", default_doc="no limit", form="advanced", label="Max TTFT (ms)"),
    Option("max_itl_ms", "float", "Service level: configurations predicted slower between "
           "tokens lose (as --max-ttft-ms).", SIZING, unit="ms", minimum=0,
           exclusive_minimum=True, example="50", default_doc="no limit", form="advanced",
           label="Max inter-token latency (ms)"),
    Option("price_file", "path", "YAML/JSON file: GPU name → {usd_per_gpu_hour, date, "
           "source}; adds cost per hour and per million output tokens (example: "
           "profiles/prices.example.yaml).", SIZING, example="profiles/prices.example.yaml"),
    Option("input_len", "int", "Prompt length of the workload, in tokens.", WORKLOAD,
           default=policy.CHAT_INPUT_LEN, unit="tokens", minimum=1, example="2048"),
    Option("output_len", "int", "Answer length of the workload, in tokens.", WORKLOAD,
           default=policy.CHAT_OUTPUT_LEN, unit="tokens", minimum=1, example="512"),
    Option("concurrency", "int", "Requests kept in flight (a closed loop, like vllm bench "
           "serve --max-concurrency); not with --request-rate.", WORKLOAD,
           unit="requests", minimum=1, example="32",
           default_doc="all prompts at once, unless --request-rate"),
    Option("request_rate", "text", "Requests per second arriving (Poisson), or inf: every "
           "prompt at once; not with --concurrency.", WORKLOAD, unit="requests/s",
           example="4", default_doc="all prompts at once"),
    Option("num_prompts", "int", "Requests the run sends (with --request-rate or all at "
           "once).", WORKLOAD, unit="requests", minimum=1, example="1000",
           default_doc="1000, as vllm bench serve"),
    Option("max_num_seqs", "int", "vLLM's --max-num-seqs.", ESTIMATE, unit="sequences",
           minimum=1, default_doc="vLLM's default for the GPU", example="256"),
    Option("max_num_batched_tokens", "int", "vLLM's --max-num-batched-tokens.", ESTIMATE,
           unit="tokens", minimum=1, default_doc="vLLM's default for the GPU", example="8192"),
    Option("gpu_memory_utilization", "float", "Fraction of each GPU vLLM may use (vLLM's "
           "--gpu-memory-utilization); not with --kv-cache-memory-bytes.", ESTIMATE,
           unit="fraction", minimum=0, exclusive_minimum=True, maximum=1,
           default_doc="vLLM's default (0.9)", example="0.9"),
    Option("kv_cache_memory_bytes", "int", "KV cache size per GPU (vLLM's "
           "--kv-cache-memory-bytes); not with --gpu-memory-utilization.", ESTIMATE,
           unit="bytes", minimum=1, example="17179869184"),
    Option("engine_version", "text", "vLLM version to model.", MODEL_COMMANDS, example="0.19",
           default_doc="the installed vLLM, else the newest calibrated"),
    Option("enforce_eager", "bool", "No CUDA graphs: less memory, slower decode.", MODEL_COMMANDS,
           default=False, form="advanced", label="Disable CUDA graphs"),
    Option("engine_python", "path", "Python interpreter with vLLM.", PLANNING,
           default_doc="this one"),
    Option("host", "text", "Address vLLM's OpenAI API binds.", PLANNING, default=policy.DEFAULT_HOST,
           form="advanced", label="API bind address"),
    Option("port", "int", "Port of vLLM's OpenAI-compatible API (/v1/...).", PLANNING,
           default=policy.DEFAULT_PORT, minimum=1, maximum=65535, form="basic",
           label="API port"),
    Option("device", "choice", "auto: the GPUs NVML finds, else vLLM's CPU backend; cuda: "
           "GPUs only (exit 6 without them); cpu: the CPU backend (small models). The plan uses "
           "every GPU the process sees.", PLANNING,
           default=policy.DEVICE_CHOICES[0], choices=policy.DEVICE_CHOICES, form="basic",
           label="Device"),
    Option("engine_args", "args", "Extra vLLM flags, checked against the plan before anything "
           "starts.", PLANNING, example="--enable-prefix-caching", form="advanced",
           label="Extra vLLM flags"),
    Option("report", "path", "Also write the launch report (plan, every attempt, measured vs "
           "planned, verdict) as JSON here.", SERVE, example="/models/launcher/report.json",
           form="advanced", label="Launch report path"),
    Option("fit_report", "path", "Where every run writes its fit report.", SERVE,
           default_doc="$LAUNCHER_CACHE_DIR/fit-report.json", form="advanced",
           label="Fit report path"),
    Option("max_attempts", "int", "Launches to try, one rung down after each failed start or "
           "failed verification.", SERVE, default=policy.DEFAULT_MAX_ATTEMPTS, minimum=1, form="advanced",
           label="Launch attempts"),
    Option("log_dir", "path", "Where the engine's full logs go.", SERVE,
           default_doc="a new directory under $LAUNCHER_CACHE_DIR/logs", form="advanced",
           label="Engine log directory"),
    Option("ready_timeout", "float", "Seconds one engine start may take until /health answers "
           "(the model download counts): raise it for large models.", SERVE,
           default=policy.DEFAULT_READY_TIMEOUT,
           unit="s", minimum=0, exclusive_minimum=True, example="3000", form="advanced",
           label="Engine start timeout (s)"),
    Option("control_host", "text", "Address the control API binds.", SERVE,
           default=policy.DEFAULT_CONTROL_HOST, form="advanced", label="Control bind address"),
    Option("control_port", "int", "Port of the launcher's control API (/livez, /readyz, "
           "/plan, /report, /speed, /gpus, /metrics, /); 0: no control API.", SERVE,
           default=policy.DEFAULT_CONTROL_PORT,
           minimum=0, maximum=65535, form="basic", label="Control port"),
    Option("monitor_interval", "float", "Seconds between live memory samples while serving "
           "(/metrics, headroom warnings).", SERVE,
           default=policy.DEFAULT_MONITOR_INTERVAL, unit="s", minimum=0,
           exclusive_minimum=True, example="10", form="advanced",
           label="Memory sample interval (s)"),
    Option("measure_speed", "bool", "After verification, before the engine is reported ready, "
           "stream requests at the planned concurrency for --measure-seconds and record the "
           "measured TTFT, inter-token latency and tokens/s beside the prediction.", SERVE,
           default=True, form="advanced", label="Measure speed at start"),
    Option("measure_seconds", "float", "How long the speed measurement runs.", SERVE,
           default=5.0, unit="s", minimum=0, exclusive_minimum=True, maximum=300,
           example="10", form="advanced", label="Speed measurement (s)"),
    Option("nnodes", "int", "Nodes one engine spans (vLLM's native multi-node, no Ray): "
           "every node runs the same command with its own --node-rank; node 0 plans, serves "
           "the API and verifies every node.", SERVE, default=1, unit="nodes", minimum=1,
           maximum=1024, example="2", form="advanced", label="Nodes"),
    Option("node_rank", "int", "This node's rank, 0 to --nnodes − 1 (0: the node that plans "
           "and serves).", SERVE, default=0, minimum=0, maximum=1023, example="1",
           form="advanced", label="Node rank"),
    Option("master_addr", "text", "Address of node 0 as the other nodes reach it (its control "
           "API and vLLM's rendezvous).", SERVE, default="127.0.0.1", example="10.0.0.1",
           form="advanced", label="Node 0 address"),
    Option("master_port", "int", "Port of vLLM's rendezvous on node 0 (torch.distributed).",
           SERVE, default=29501, minimum=1, maximum=65535, example="29501",
           form="advanced", label="Rendezvous port"),
    Option("node_deadline", "float", "Seconds a node waits for its peers (to join, to start "
           "their engine part, to answer) before it stops the whole group (exit 4).", SERVE,
           default=600.0, unit="s", minimum=0, exclusive_minimum=True, example="300",
           form="advanced", label="Peer deadline (s)"),
    Option("lease_dir", "path", "Directory of the host lease: every serve on this host records "
           "there what it planned per device, and plans around what the others planned but "
           "have not yet allocated; off: no lease. Containers share it through one mounted "
           "host directory. `plan` reads it without adding an entry.", PLANNING,
           example="/run/vllm-headroom",
           default_doc="/dev/shm/vllm-headroom (else /tmp/vllm-headroom)", form="advanced",
           label="Host lease directory"),
    Option("emit", "choice", "Also write deployment files from the plan: lws (a Kubernetes "
           "LeaderWorkerSet, one pod per node, and a Service), shell (one command per node) "
           "or kuberay (a RayService, vLLM under Ray); none: the plan only.", ("plan",),
           default="none", choices=("none", "lws", "shell", "kuberay"), example="lws"),
    Option("emit_file", "path", "Where --emit writes (replaced whole, never half-written).",
           ("plan",), default_doc="stdout (the plan then goes to stderr)",
           example="model-lws.yaml"),
    Option("nodes", "int", "Nodes the plan's GPUs are spread over for --emit (only with "
           "--emit); each gets TP × PP × DP / nodes of them, and a TP group must fit on one.",
           ("plan",), unit="nodes", minimum=1, maximum=1024,
           default_doc="the plan's own node count, else 1", example="2"),
    Option("emit_ifname", "text", "Network interface the nodes reach each other on "
           "(GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME) in emitted files.", ("plan",),
           default_doc="eth0 in pods; unset in --emit shell", example="eth0"),
    Option("emit_image", "text", "Container image for --emit lws/kuberay.", ("plan",),
           default_doc="launcher-vllm:<launcher version> (docker/Dockerfile); kuberay: "
                       "rayproject/ray-llm", example="registry.example.com/launcher-vllm:0.1.0"),
    Option("explain", "switch", "Also show where every option's value came from.", PLANNING),
    Option("json", "switch", "Print one JSON object on stdout.",
           ("gpus", "models", "estimate", "plan", "serve", "fit", "speed", "calibration")),
    # Variables only: read where they are used.
    Option("api_token", "text", "Bearer token every control-API endpoint except /livez and "
           "/readyz requires. Without it the control API is open: keep its port private. "
           "Never printed.", SERVE, cli=False, secret=True, form="basic",
           label="Control API token"),
    Option("cache_dir", "path", "The launcher's cache: demo model, Hub metadata, engine logs, "
           "fit report.", COMMANDS, cli=False, default_doc="$XDG_CACHE_HOME/launcher or "
           "~/.cache/launcher", form="advanced", label="Launcher cache"),
    Option("debug", "text", "1: show the traceback of expected errors too.", COMMANDS,
           cli=False),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def options_for(command: str) -> tuple[Option, ...]:
    """The command's parameters, in the registry's order (the order of its --help)."""
    return tuple(o for o in OPTIONS if command in o.commands and o.cli)


def env_var(name: str) -> str:
    var = BY_NAME[name].env_var
    assert var is not None, name
    return var


def prog(command: str) -> str:
    return "serve" if command == "serve" else f"launcher {command}"


# ---- one parser per kind ------------------------------------------------------------------

def parse(opt: Option, raw: object, command: str, origin: str = "cli") -> Value:
    """A value from the command line or the environment (text) or a profile (YAML) → its
    type. `origin` is "cli", "env" or "profile:<key>", for the message."""
    if opt.kind in ("switch", "bool"):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise _bad(opt, raw, command, origin, "is not true or false", "true or false")
    if isinstance(raw, bool):  # YAML's yes/no where a number or a word belongs
        raise _bad(opt, raw, command, origin, "is a boolean", _expected(opt))
    text = str(raw).strip()
    if opt.kind in ("text", "path"):
        return text or None
    if opt.kind == "args":
        try:
            shlex.split(text)
        except ValueError as e:
            raise _bad(opt, raw, command, origin, f"cannot be parsed: {e}",
                       "flags quoted as a shell would, e.g. --engine-args '--seed 1'") from None
        return text or None
    if opt.kind == "choice":
        return _choice(opt, text, command, origin)
    if opt.kind == "size" and text.lower() == AUTO:
        return AUTO
    number: int | float
    try:
        if not text.isascii():  # int() and float() also read Arabic-Indic and other digits
            raise ValueError(text)
        number = float(text) if opt.kind == "float" else int(text)
        if not math.isfinite(number):
            raise ValueError(text)
    except ValueError:
        what = "auto or a whole number" if opt.kind == "size" else \
            "a number" if opt.kind == "float" else "a whole number"
        raise _bad(opt, raw, command, origin, f"is not {what}", _expected(opt)) \
            from None
    if opt.kind == "size" and number < 1:
        raise _bad(opt, raw, command, origin, "is below 1", _expected(opt))
    lo, hi = opt.minimum, opt.maximum
    if (lo is not None and (number < lo or (opt.exclusive_minimum and number == lo))) or \
            (hi is not None and number > hi):
        raise _bad(opt, raw, command, origin, _out_of_range(opt), _expected(opt))
    return number


def _choice(opt: Option, text: str, command: str, origin: str) -> str:
    accepted = opt.accepted(command)
    word = opt.aliases.get(text.lower(), text.lower())
    if accepted is None or word in accepted:
        return word
    words = " or ".join(accepted) if len(accepted) == 2 else f"one of {', '.join(accepted)}"
    raise _bad(opt, text, command, origin, f"is not {words}", words)


def _out_of_range(opt: Option) -> str:
    """In words: is outside [0, 0.9], is outside (0, 1], is below 1, is not above 0."""
    lo, hi = opt.minimum, opt.maximum
    if lo is not None and hi is not None:
        return f"is outside {'(' if opt.exclusive_minimum else '['}{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f"is not above {_num(lo)}" if opt.exclusive_minimum else f"is below {_num(lo)}"
    return f"is above {_num(hi)}"


def _expected(opt: Option) -> str:
    if opt.kind == "size":
        return "auto or a whole number ≥ 1"
    kind = "a number" if opt.kind == "float" else "a whole number"
    return f"{kind} {opt.bounds}" if opt.bounds else kind


def _bad(opt: Option, raw: object, command: str, origin: str, problem: str,
         expected: str) -> InputError:
    """What failed (naming the flag and the variable), how to fix it, a runnable hint."""
    if opt.kind == "bool":
        flag = opt.cli_flags[0]
        fix = (f"Set {opt.env_var} to true or false (or 1/0, yes/no, on/off), or pass {flag} "
               f"/ --no-{flag[2:]}.")
    else:
        example = opt.example or str(opt.default)
        fix = f"Give {expected}, e.g. {opt.flag} {example} or {opt.env_var}={example}."
    if origin == "env":
        return InputError(f"{opt.env_var}={raw} (the variable of {opt.flag}) {problem}",
                          fix=fix, hint=f"unset {opt.env_var}")
    if origin.startswith("profile:"):
        return InputError(f"launcher_defaults {opt.name}: {raw!r} in the model profile "
                          f"{origin.split(':', 1)[1]} {problem} ({opt.flag}, {opt.env_var})",
                          fix=f"Correct the profile. {fix}", hint=f"{prog(command)} --help")
    return InputError(f"{opt.flag} {raw!r} {problem} (variable {opt.env_var})", fix=fix,
                      hint=f"{prog(command)} --help")


# ---- settling: CLI > environment > profile > default --------------------------------------

def model_argument(given: object, environ: Mapping[str, str] | None = None) -> str:
    """MODEL from the command line, else LAUNCHER_MODEL."""
    env = os.environ if environ is None else environ
    model = str(given or "").strip() or env.get(env_var("model"), "").strip()
    if not model:
        raise InputError("no model given",
                         fix="Pass MODEL (a profile alias, local directory or HF repo id) or "
                             f"set {env_var('model')}.", hint="launcher models")
    return model


def settle_command(command: str, given: Mapping[str, object],
                   environ: Mapping[str, str] | None = None,
                   profile_defaults: Mapping[str, object] | None = None,
                   profile_key: str | None = None) -> dict[str, Setting]:
    """Each setting of `command` with its value and source. `given` holds the command line
    (None: not given); an empty variable counts as unset."""
    env = os.environ if environ is None else environ
    params: dict[str, Value] = {}
    sources: dict[str, str] = {}
    for opt in options_for(command):
        if not opt.setting:
            continue
        raw = given.get(opt.name)
        var = opt.env_var or ""
        if raw is not None:
            params[opt.name], sources[opt.name] = parse(opt, raw, command, "cli"), "cli"
        elif env.get(var, "").strip():
            params[opt.name], sources[opt.name] = parse(opt, env[var], command, "env"), "env"
        else:
            params[opt.name], sources[opt.name] = opt.default, "default"
    profile = {name: parse(BY_NAME[name], raw, command, f"profile:{profile_key}")
               for name, raw in (profile_defaults or {}).items() if name in params}
    return settle(params, sources, profile, profile_key)


def values(settings: Mapping[str, Setting]) -> dict[str, Value]:
    return {name: s.value for name, s in settings.items()}


# ---- the objects the core receives --------------------------------------------------------

def _int(v: Mapping[str, Value], name: str) -> int:
    x = v[name]
    assert isinstance(x, int) and not isinstance(x, bool), (name, x)
    return x


def _opt_int(v: Mapping[str, Value], name: str) -> int | None:
    return None if v[name] is None else _int(v, name)


def _float(v: Mapping[str, Value], name: str) -> float:
    x = v[name]
    assert isinstance(x, int | float) and not isinstance(x, bool), (name, x)
    return float(x)


def _opt_float(v: Mapping[str, Value], name: str) -> float | None:
    return None if v[name] is None else _float(v, name)


def _str(v: Mapping[str, Value], name: str) -> str:
    x = v[name]
    assert isinstance(x, str), (name, x)
    return x


def text(v: Mapping[str, Value], name: str) -> str | None:
    """A text setting, None when unset."""
    return None if v[name] is None else _str(v, name)


def _bool(v: Mapping[str, Value], name: str) -> bool:
    return bool(v[name])


def _size(v: Mapping[str, Value], name: str) -> int | None:
    """auto → None (the caller's default: the planner's choice, or vLLM's 1)."""
    return None if v[name] == AUTO else _int(v, name)


def plan_request(v: Mapping[str, Value]) -> PlanRequest:
    from dataclasses import replace

    from launcher.planner import PlanRequest
    from launcher.speed.workload import workload_from

    req = PlanRequest(headroom=_float(v, "headroom"), max_model_len=_opt_int(v, "max_model_len"),
                      min_context=_opt_int(v, "min_context"),
                      min_concurrency=_int(v, "min_concurrency"),
                      quantization=_str(v, "quantization"),
                      kv_cache_dtype=_str(v, "kv_cache_dtype"),
                      tp=_size(v, "tp") if "tp" in v else None,
                      pp=_size(v, "pp") if "pp" in v else None, objective=_str(v, "objective"),
                      enforce_eager=_bool(v, "enforce_eager"),
                      max_ttft_ms=_opt_float(v, "max_ttft_ms"),
                      max_itl_ms=_opt_float(v, "max_itl_ms"))
    if "input_len" not in v:
        return req
    return replace(req, workload=workload_from({k: v[k] for k in WORKLOAD_OPTIONS if k in v}))


def engine_args(v: Mapping[str, Value]) -> tuple[str, ...]:
    return tuple(shlex.split(text(v, "engine_args") or ""))


def target(v: Mapping[str, Value]) -> Target:
    from launcher.prepare import Target

    return Target(gpus=text(v, "gpus"), inventory_file=text(v, "inventory_file"),
                  engine_version=text(v, "engine_version"),
                  engine_python=text(v, "engine_python"), host=_str(v, "host"),
                  port=_int(v, "port"), device=_str(v, "device"), engine_args=engine_args(v),
                  price_file=text(v, "price_file"))


def serve_options(v: Mapping[str, Value],
                  settings_json: dict[str, Any] | None = None) -> ServeOptions:
    from pathlib import Path

    from launcher.runtime.serve import ServeOptions

    def path(name: str) -> Path | None:
        p = text(v, name)
        return Path(p).expanduser() if p else None

    return ServeOptions(report=path("report"), max_attempts=_int(v, "max_attempts"),
                        log_dir=path("log_dir"), ready_timeout=_float(v, "ready_timeout"),
                        control_host=_str(v, "control_host"),
                        control_port=_int(v, "control_port"), fit_report=path("fit_report"),
                        monitor_interval=_float(v, "monitor_interval"),
                        measure_speed=_bool(v, "measure_speed"),
                        measure_seconds=_float(v, "measure_seconds"), settings=settings_json,
                        cluster=cluster_options(v) if "nnodes" in v else None,
                        lease_dir=text(v, "lease_dir") or "auto")


def cluster_options(v: Mapping[str, Value]) -> ClusterOptions:
    """The multi-node settings, checked together (a rank past the last node, an address that
    is not a host name or IP address)."""
    from launcher.runtime.cluster import ClusterOptions, check_address

    nnodes, rank = _int(v, "nnodes"), _int(v, "node_rank")
    if rank >= nnodes:
        raise InputError(f"--node-rank {rank} is not below --nnodes {nnodes} "
                         f"(variables {env_var('node_rank')}, {env_var('nnodes')})",
                         fix=f"Number the nodes 0 to {nnodes - 1}; node 0 serves the API.",
                         hint="serve --help")
    addr = text(v, "master_addr") or ""
    problem = check_address(addr)
    if problem:
        raise InputError(f"--master-addr {addr[:80]!r} {problem} (variable "
                         f"{env_var('master_addr')})",
                         fix="Give node 0's host name or IP address, e.g. --master-addr "
                             "10.0.0.1.", hint="serve --help")
    return ClusterOptions(nnodes=nnodes, node_rank=rank, master_addr=addr,
                          master_port=_int(v, "master_port"),
                          node_deadline=_float(v, "node_deadline"))


def engine_flags(v: Mapping[str, Value]) -> EngineFlags:
    """vLLM's own flags for `estimate`: auto sizes are vLLM's 1, auto/none quantization is
    no --quantization flag."""
    from launcher.memory.estimate import EngineFlags

    # Both may be given, as vLLM takes them (and every GPU plan passes both): the byte count
    # sizes the KV cache, the fraction is then only the start-up gate free ≥ U·T.
    util, kv_bytes = _opt_float(v, "gpu_memory_utilization"), _opt_int(v, "kv_cache_memory_bytes")
    quant = _str(v, "quantization")
    return EngineFlags(tensor_parallel_size=_size(v, "tp") or 1,
                       pipeline_parallel_size=_size(v, "pp") or 1,
                       data_parallel_size=_size(v, "dp") or 1, dtype=_str(v, "dtype"),
                       quantization=None if quant in (AUTO, "none") else quant,
                       kv_cache_dtype=_str(v, "kv_cache_dtype"),
                       max_model_len=_opt_int(v, "max_model_len"),
                       max_num_seqs=_opt_int(v, "max_num_seqs"),
                       max_num_batched_tokens=_opt_int(v, "max_num_batched_tokens"),
                       gpu_memory_utilization=util, kv_cache_memory_bytes=kv_bytes,
                       enforce_eager=_bool(v, "enforce_eager"))
