"""Planner: pure, data in → `Plan` out (DESIGN §4). No I/O, no torch, no vllm."""

from launcher.planner.plan import Plan
from launcher.planner.planner import plan
from launcher.planner.request import PlanRequest

__all__ = ["Plan", "PlanRequest", "plan"]
