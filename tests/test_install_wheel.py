"""An installed (non-editable) copy finds its data: the wheel ships profiles/ as
launcher/_profiles, and every reader resolves it through launcher.paths. Built from the
checkout without the network (hatchling comes with the test extra), unzipped, and run from
another directory so nothing of the checkout is on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

pytest.importorskip("hatchling")


def test_unzipped_wheel_plans_a_gpu(tmp_path: Path) -> None:
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "cwd"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    assert (site / "launcher" / "_profiles" / "engines" / "speed.yaml").is_file()
    assert not (site / "profiles").exists()
    env = {**os.environ, "PYTHONPATH": str(site), "LAUNCHER_CACHE_DIR": str(tmp_path / "c")}
    r = subprocess.run([sys.executable, "-c", "from launcher.cli import main; main()", "plan",
                        "llama-3.1-8b", "--gpus", "1xH100-80GB", "--json"], cwd=elsewhere,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["feasible"] is True
    # the import came from the wheel, not the checkout
    probe = subprocess.run([sys.executable, "-c", "import launcher; print(launcher.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(site))
