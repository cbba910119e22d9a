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
import reprlib
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
# The largest published checkpoints have a few hundred shards (Llama 3.1 405B: 191).
MAX_SHARDS = 100_000
# A tensor has a handful of dimensions (torch allows 64); a longer shape is corruption.
MAX_DIMS = 64

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60

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


def _short(e: BaseException) -> str:
    """An exception's text, cut: a hostile file must not make the message itself huge."""
    text = str(e)
    return text if len(text) <= 200 else text[:197] + "..."


def _show(value: object) -> str:
    """A bounded repr of a value read from the header (it may be huge or deeply nested)."""
    return _REPR.repr(value)


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
    if n < 2:  # the smallest JSON object, `{}`, is 2 bytes
        raise _error(path, f"header length {n} bytes is too short for a JSON header")

    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:
        # ValueError covers bad UTF-8, invalid JSON and integer literals too long to convert;
        # RecursionError a header nested deeper than the parser's stack.
        raise _error(path, f"header is not valid JSON ({type(e).__name__}: {_short(e)})") from e
    if not isinstance(header, dict):
        raise _error(path, "header is not a JSON object")

    data_size = file_size - 8 - n
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise _error(path, "__metadata__ is not an object of strings")
            continue
        tensors.append(_parse_entry(path, name, entry, data_size))
    return tensors


def _parse_entry(path: Path, name: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _error(path, f"tensor {_show(name)}: entry is not a JSON object")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if missing:
        raise _error(path, f"tensor {_show(name)}: missing {', '.join(missing)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise _error(
            path,
            f"tensor {_show(name)}: unknown dtype {_show(dtype)} (known: {', '.join(DTYPE_BYTES)})",
        )
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _error(path, f"tensor {_show(name)}: shape {_show(shape)} is not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _error(path,
                     f"tensor {_show(name)}: data_offsets {_show(offsets)} is not [begin, end]")
    info = TensorInfo(name=name, dtype=dtype, shape=tuple(shape))
    bits = info.numel * _bits(dtype)
    begin, end = offsets
    if bits % 8 or end - begin != bits // 8:
        raise _error(
            path,
            f"tensor {_show(name)}: data_offsets span {_show(end - begin)} bytes but "
            f"{dtype}{_show(shape)} needs {_show(bits // 8) if bits % 8 == 0 else _show(bits) + ' bits'}",
        )
    if end > data_size:
        raise _error(
            path,
            f"tensor {_show(name)} ends at byte {_show(end)} of the data but the file holds only "
            f"{data_size} (truncated file)",
        )
    return info


def _listed_shards(model_dir: Path) -> list[str] | None:
    """Shard names the index lists, or None when the directory has no index.

    Each name must be a plain file name in the directory: an index is data from the internet,
    and `../` or an absolute path would make the launcher read files outside the model.
    """
    index = model_dir / INDEX_FILE
    if not index.is_file():
        return None

    def invalid(problem: str) -> CheckpointError:
        return CheckpointError(f"{index} is not a valid safetensors index ({problem})",
                               fix=_FIX.format(name=INDEX_FILE),
                               hint=f"python -m json.tool {index}")

    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        # ValueError: bad UTF-8, invalid JSON, an integer literal too long to convert.
        raise invalid(f"{type(e).__name__}: {_short(e)}") from e
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise invalid("no `weight_map` object")
    names = set()
    for tensor, shard in weight_map.items():
        if (not isinstance(shard, str) or not shard or shard != Path(shard).name
                or shard in (".", "..") or "\0" in shard):
            raise invalid(f"`weight_map.{_show(tensor)}` is {_show(shard)}, expected the file "
                          "name of a shard in the model directory")
        names.add(shard)
    if len(names) > MAX_SHARDS:
        raise invalid(f"it lists {len(names)} shards, more than {MAX_SHARDS:,}")
    return sorted(names)


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
        if count > MAX_SHARDS:
            raise CheckpointError(
                f"{model_dir / (prefix + '-…-of-' + str(count))}: the shard names claim "
                f"{_show(count)} shards, more than {MAX_SHARDS:,}",
                fix="Rename or remove the file; checkpoints have at most a few hundred shards.",
                hint=f"ls {model_dir}")
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
