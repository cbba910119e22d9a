"""Byte units. vLLM prints GiB (2**30); keep every internal figure in bytes."""

GiB = 1 << 30
MiB = 1 << 20


def gib(n_bytes: float) -> float:
    return n_bytes / GiB
