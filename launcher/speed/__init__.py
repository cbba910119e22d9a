"""Serving speed: time to first token, inter-token latency and throughput of a plan.

Pure core (no I/O): `workload` (what clients send), `calibration` (fitted efficiency factors),
`hardware` (a GPU's bandwidth, tensor peaks and links), `model` (the physics and `predict`).
The edges live outside: `launcher.speed_io` reads profiles/engines/speed.yaml and plans
memory for a command line, then predicts (`launcher speed`); `launcher.render.speed` draws it.
"""

from launcher.speed.calibration import EngineSpeed, GpuPeak, SpeedCalibration, gpu_class
from launcher.speed.hardware import GpuSpeed, gpu_speed
from launcher.speed.model import Bound, ModelCosts, SpeedPrediction, SpeedTerm, predict, roofline
from launcher.speed.workload import DEFAULT_NUM_PROMPTS, Workload

__all__ = ["DEFAULT_NUM_PROMPTS", "Bound", "EngineSpeed", "GpuPeak", "GpuSpeed", "ModelCosts",
           "SpeedCalibration", "SpeedPrediction", "SpeedTerm", "Workload", "gpu_class",
           "gpu_speed", "predict", "roofline"]
