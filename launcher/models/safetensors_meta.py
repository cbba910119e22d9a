"""Checkpoint tensor tables read from safetensors headers, without touching tensor data.

Exact weight bytes per dtype decide whether a model fits (DESIGN §3, `W`), and a 400 GB
checkpoint must be measured in milliseconds, so only the header is read: an 8-byte
little-endian length N, then N bytes of JSON mapping each tensor name to its dtype, shape and
`data_offsets` (relative to the data buffer that follows the header).

A header that lies (truncated download, corrupt copy, unknown dtype) is an error naming the
file, never a plausible-looking number (STYLE 12).
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path

from launcher.errors import CheckpointError
from launcher.models.spec import DTYPE_BYTES, TensorInfo

INDEX_FILE = "model.safetensors.index.json"
# transformers' shard names: model-00001-of-00003.safetensors.
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<i>\d+)-of-(?P<n>\d+)\.safetensors$")
# Real headers are a few MB at most (DeepSeek-V3 shards: ~100 KB). Anything bigger is corruption,
# and reading it would waste memory before failing.
MAX_HEADER_BYTES = 100 * 1024 * 1024

_FIX = (
    "re-download the file (`hf download REPO {name}`, or `huggingface-cli download REPO {name}` "
    "with older huggingface_hub) or check the copy (size and sha256 against the Hub's file page)"
)


def _error(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"safetensors file {path} is unreadable: {problem}",
        fix=_FIX.format(name=path.name),
        hint=f"ls -l {path}",
    )


def _bits(dtype: str) -> int:
    # DTYPE_BYTES holds fractions for sub-byte formats (F4 = 0.5); bits are always whole.
    return round(DTYPE_BYTES[dtype] * 8)


def read_header(path: Path) -> list[TensorInfo]:
    """Return the tensors declared in one safetensors file, in header order.

    Reads only the 8-byte length and the JSON header, then checks every entry against the
    file's real size so a truncated or corrupt file fails here rather than inside vLLM after
    minutes of loading.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size < 8:
                raise _error(
                    path, f"file is {file_size} bytes, shorter than the 8-byte header length"
                )
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES:
                raise _error(path, f"header length {n} bytes is absurd (limit {MAX_HEADER_BYTES})")
            if 8 + n > file_size:
                raise _error(
                    path, f"header length {n} bytes exceeds the file size ({file_size} bytes)"
                )
            raw = f.read(n)
    except OSError as e:
        raise _error(path, f"cannot read it ({e.strerror or e})") from e

    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(path, f"header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise _error(path, "header is not a JSON object")

    data_size = file_size - 8 - n
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors.append(_parse_entry(path, name, entry, data_size))
    return tensors


def _parse_entry(path: Path, name: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _error(path, f"tensor {name!r}: entry is not a JSON object")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if missing:
        raise _error(path, f"tensor {name!r}: missing {', '.join(missing)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise _error(
            path, f"tensor {name!r}: unknown dtype {dtype!r} (known: {', '.join(DTYPE_BYTES)})"
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _error(path, f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _error(path, f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
    info = TensorInfo(name=name, dtype=dtype, shape=tuple(shape))
    bits = info.numel * _bits(dtype)
    begin, end = offsets
    if bits % 8 or end - begin != bits // 8:
        raise _error(
            path,
            f"tensor {name!r}: data_offsets span {end - begin} bytes but {dtype}{list(shape)} "
            f"needs {bits / 8:g}",
        )
    if end > data_size:
        raise _error(
            path,
            f"tensor {name!r} ends at byte {end} of the data but the file holds only {data_size} "
            "(truncated file)",
        )
    return info


def _listed_shards(model_dir: Path) -> list[str] | None:
    """Shard names the index lists, or None when the directory has no index."""
    index = model_dir / INDEX_FILE
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
            AttributeError) as e:
        raise CheckpointError(
            f"{index} is not a valid safetensors index ({type(e).__name__}: {e})",
            fix=_FIX.format(name=INDEX_FILE),
            hint=f"python -m json.tool {index}",
        ) from e


def _unindexed_files(model_dir: Path) -> list[Path]:
    files = sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())
    # Mistral repos ship the same weights twice: consolidated*.safetensors (mistral format) and
    # model*.safetensors (HF format). Counting both would double the weights.
    if any(p.name.startswith("model") for p in files):
        files = [p for p in files if not p.name.startswith("consolidated")]
    return files


def missing_shards(model_dir: Path) -> list[str]:
    """Shard files the checkpoint in `model_dir` declares but lacks (empty when complete).

    With an index, the shards it lists; without one, the `-NNNNN-of-MMMMM` names transformers
    writes say how many there should be. A partial download must not pass for a smaller model.
    """
    model_dir = Path(model_dir)
    listed = _listed_shards(model_dir)
    if listed is not None:
        return [s for s in listed if not (model_dir / s).is_file()]
    expected: dict[str, tuple[int, int]] = {}  # prefix -> (width, count)
    present: set[str] = set()
    for p in _unindexed_files(model_dir):
        present.add(p.name)
        m = _SHARD_NAME.match(p.name)
        if m:
            expected[m["prefix"]] = (len(m["i"]), int(m["n"]))
    missing = []
    for prefix, (width, count) in sorted(expected.items()):
        for i in range(1, count + 1):
            name = f"{prefix}-{i:0{width}d}-of-{count:0{width}d}.safetensors"
            if name not in present:
                missing.append(name)
    return missing


def _shard_files(model_dir: Path) -> list[Path]:
    missing = missing_shards(model_dir)
    if missing:
        where = INDEX_FILE if (model_dir / INDEX_FILE).is_file() else "the shard names"
        raise CheckpointError(
            f"{model_dir} lacks shard(s) that {where} declare(s): {', '.join(missing)}",
            fix=_FIX.format(name=missing[0]) + "; an interrupted download leaves shards out",
            hint=f"ls {model_dir}",
        )
    listed = _listed_shards(model_dir)
    if listed is not None:
        return [model_dir / s for s in listed]
    return _unindexed_files(model_dir)


def read_checkpoint(model_dir: Path) -> list[TensorInfo] | None:
    """Return every tensor of the checkpoint in `model_dir`, or None when it has no safetensors.

    The index (when present) is authoritative: it names exactly the shards vLLM will load, so
    a shard it lists but the directory lacks is an error, not a smaller model.
    """
    files = _shard_files(Path(model_dir))
    if not files:
        return None
    tensors: list[TensorInfo] = []
    for f in files:
        tensors.extend(read_header(f))
    return tensors


def summarize(tensors: Iterable[TensorInfo]) -> dict[str, int]:
    """Bytes per dtype (keys are dtype names, e.g. "BF16"), plus "total_bytes" and "params".

    Dtype keys are upper-case safetensors names, so the two lower-case totals never collide.
    """
    by_dtype: dict[str, int] = {}
    params = 0
    for t in tensors:
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
        params += t.numel
    return {**dict(sorted(by_dtype.items())), "total_bytes": sum(by_dtype.values()),
            "params": params}
