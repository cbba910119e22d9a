"""Memory-aware launcher for vLLM.

The pipeline runs one way: inventory + model spec → memory model → planner → engine → verify.
`memory/` and the planner are pure; hardware, hub and engine access live at the edges.
"""

__version__ = "0.1.0"
