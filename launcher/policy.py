"""The launcher's policy constants, named and in one place (DESIGN §4, §6).

These are choices, not measurements: how much to keep free, which batch sizes to try, how
far to step down after a failure. Facts about vLLM (block sizes, defaults, overheads of a
version) are data in `profiles/engines/vllm.yaml`; arithmetic lives in `launcher/memory/`.
Pure constants: every layer may import this module.
"""

from __future__ import annotations

from launcher.units import GiB, MiB

# ---- what the user may ask for ------------------------------------------------------------
DEFAULT_HEADROOM = 0.2  # fraction of each GPU's memory kept free while serving
MAX_HEADROOM = 0.9
DEFAULT_MIN_CONCURRENCY = 8  # full-length sequences each replica must hold
DEFAULT_MIN_CONTEXT = 4096  # shortest context the planner steps down to (or the model max)
QUANTIZATION_CHOICES = ("auto", "none", "fp8", "awq", "gptq", "bitsandbytes", "4bit")
KV_CACHE_DTYPE_CHOICES = ("auto", "fp8")
OBJECTIVES = ("throughput", "latency", "cost")
# The workload plans are predicted for unless told (`--input-len`, `--output-len`, …): a chat
# turn, a 1k-token prompt (history included) and a 256-token answer, all prompts at once.
CHAT_INPUT_LEN = 1024
CHAT_OUTPUT_LEN = 256
DEVICE_CHOICES = ("auto", "cuda", "cpu")

# ---- the search ---------------------------------------------------------------------------
# (max_num_batched_tokens, max_num_seqs), tried in order inside each shape: a smaller
# activation peak is cheaper than a lower precision.
BATCH_TIERS = ((8192, 256), (2048, 64))
# The CPU backend computes on a few cores: smaller steps keep time-to-first-token sane.
CPU_BATCH_TIERS = ((2048, 32), (512, 8))
MAX_PIPELINE_STAGES = 8
KV_ROUNDING_BYTES = MiB  # the KV budget is passed in whole MiB
MIN_START_UTILIZATION = 0.05  # below this the GPU is taken by others: no room to start
SUGGESTION_GPU_COUNTS = (1, 2, 4, 8, 16)  # "would fit on N× …" tries these counts
# Predictions this close are a tie (the speed model is not that exact): fewer pipeline
# stages, then fewer GPUs per replica, win it.
SPEED_TIE = 0.05
SUGGESTION_OTHER_GPU_TYPES = 3  # "or N× <bigger GPU>": the next larger catalog types tried
SUGGESTION_MEMORY_STEP = 1.15  # each of them with at least this much more memory
FIT_GPU_COUNTS = (1, 2, 4, 8)  # `launcher fit`: GPU counts per catalog type

# ---- serving ------------------------------------------------------------------------------
MIN_RESERVE_STEP = int(0.5 * GiB)  # smallest extra reserve per device after a memory failure
RESERVE_GUESS_FRACTION = 0.05  # of the device, when the failure did not say how much was short
OVERSHOOT_MARGIN = 1.1  # measured overshoot × this is reserved on the next attempt
CPU_ENGINE_NICE = 5  # a CPU engine saturates every core; the control API must still answer
STOP_GRACE_SECONDS = 20.0  # SIGTERM → SIGKILL for the engine's process group
DEFAULT_HOST = "127.0.0.1"  # vLLM's OpenAI API binds loopback unless told otherwise
DEFAULT_PORT = 8000
DEFAULT_CONTROL_HOST = "127.0.0.1"
DEFAULT_CONTROL_PORT = 8001  # 0: no control API
DEFAULT_MAX_ATTEMPTS = 3  # launches, one rung down after each failure
DEFAULT_READY_TIMEOUT = 1200.0  # seconds until /health (a large model loads for minutes)
DEFAULT_MONITOR_INTERVAL = 5.0  # seconds between live memory samples
