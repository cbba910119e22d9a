"""Test hygiene: no user environment leaks into a test (LAUNCHER_*, CUDA/NVIDIA device lists, HF_*)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT.parent / "shared" / "calibration"
CONFIGS = ROOT / "tests" / "data" / "configs"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("LAUNCHER_", "HF_", "HUGGING_FACE")) or key in (
                "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
            monkeypatch.delenv(key, raising=False)


def run_cli(*args: str, env: dict[str, str] | None = None, prog: str = "launcher"):
    """Run the installed CLI in a real subprocess; returns CompletedProcess."""
    import subprocess

    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("LAUNCHER_", "HF_"))}
    full_env.update(env or {})
    code = f"from launcher.cli import {'main' if prog == 'launcher' else 'serve_main'} as m; m()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)
