"""Byte units. vLLM prints GiB (2**30); keep every internal figure in bytes."""

GiB = 1 << 30
MiB = 1 << 20


def gib(n_bytes: float) -> float:
    return n_bytes / GiB


def fmt_gib(n_bytes: float | None, digits: int = 2, unit: bool = True) -> str:
    """Bytes as people read them ("12.34 GiB"); "–" for a figure that is not known."""
    if n_bytes is None:
        return "–"
    return f"{n_bytes / GiB:.{digits}f}" + (" GiB" if unit else "")
