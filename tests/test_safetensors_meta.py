"""Safetensors header reading against real files written by the safetensors library.

numpy cannot make BF16/F8 arrays, so those files are written byte for byte the way the format
defines them (8-byte length, JSON header, data) and checked with safetensors' own parser.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from launcher.errors import CheckpointError
from launcher.models.safetensors_meta import (
    missing_shards,
    read_checkpoint,
    read_header,
    summarize,
)
from launcher.models.spec import DTYPE_BYTES, TensorInfo


def write_raw(path: Path, tensors: dict[str, tuple[str, list[int]]], *, metadata=None) -> Path:
    """Write a valid safetensors file of zeros: what any writer produces, minus the values."""
    header: dict = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = int(n * DTYPE_BYTES[dtype])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer pads the header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def write_index(model_dir: Path, weight_map: dict[str, str]) -> None:
    """The index transformers' save_pretrained writes next to sharded checkpoints."""
    (model_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )


def test_numpy_file_exact_bytes_and_params(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "embed.weight": np.zeros((10, 4), dtype=np.float16),
            "norm.weight": np.zeros((4,), dtype=np.float32),
            "q.weight": np.zeros((3, 5), dtype=np.int8),
            "q.scales": np.zeros((7,), dtype=np.uint8),
        },
        str(path),
        metadata={"format": "pt"},
    )
    tensors = read_header(path)
    by_name = {t.name: t for t in tensors}
    assert by_name["embed.weight"] == TensorInfo("embed.weight", "F16", (10, 4))
    assert by_name["q.weight"] == TensorInfo("q.weight", "I8", (3, 5))
    assert summarize(tensors) == {
        "F16": 80, "F32": 16, "I8": 15, "U8": 7, "total_bytes": 118, "params": 40 + 4 + 15 + 7,
    }


def test_crafted_bf16_fp8_file_is_valid_and_counted(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "model.safetensors",
        {
            "w.bf16": ("BF16", [128, 64]),
            "w.fp8": ("F8_E4M3", [64, 32]),
            "w.scale": ("F32", []),
            "w.fp4": ("F4", [16, 8]),
        },
        metadata={"format": "pt"},
    )
    # safetensors' own parser accepts the hand-written file: it is the real format.
    with safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == {"w.bf16", "w.fp8", "w.scale", "w.fp4"}
    tensors = read_checkpoint(tmp_path)
    assert tensors is not None
    s = summarize(tensors)
    assert s["BF16"] == 128 * 64 * 2
    assert s["F8_E4M3"] == 64 * 32
    assert s["F32"] == 4  # a scalar has shape [] and one element
    assert s["F4"] == 16 * 8 // 2
    assert s["params"] == 128 * 64 + 64 * 32 + 1 + 16 * 8
    assert s["total_bytes"] == 16384 + 2048 + 4 + 64


def test_sharded_with_index(tmp_path: Path) -> None:
    save_file({"a": np.zeros((2, 3), np.float32), "b": np.zeros((5,), np.float16)},
              str(tmp_path / "model-00001-of-00002.safetensors"))
    write_raw(tmp_path / "model-00002-of-00002.safetensors", {"c": ("BF16", [4, 4])})
    write_index(tmp_path, {"a": "model-00001-of-00002.safetensors",
                           "b": "model-00001-of-00002.safetensors",
                           "c": "model-00002-of-00002.safetensors"})
    # A stray file the index does not list is not part of the checkpoint vLLM loads.
    write_raw(tmp_path / "extra.safetensors", {"x": ("F32", [1000])})
    tensors = read_checkpoint(tmp_path)
    assert tensors is not None
    assert sorted(t.name for t in tensors) == ["a", "b", "c"]
    assert summarize(tensors) == {"BF16": 32, "F16": 10, "F32": 24, "total_bytes": 66,
                                  "params": 6 + 5 + 16}


def test_unindexed_files_are_read_in_name_order(tmp_path: Path) -> None:
    write_raw(tmp_path / "b.safetensors", {"second": ("F16", [2])})
    write_raw(tmp_path / "a.safetensors", {"first": ("F16", [3])})
    tensors = read_checkpoint(tmp_path)
    assert tensors is not None
    assert [t.name for t in tensors] == ["first", "second"]


def test_consolidated_skipped_beside_model_files(tmp_path: Path) -> None:
    write_raw(tmp_path / "consolidated.safetensors", {"tok_embeddings.weight": ("BF16", [8, 4])})
    write_raw(tmp_path / "model.safetensors", {"model.embed_tokens.weight": ("BF16", [8, 4])})
    tensors = read_checkpoint(tmp_path)
    assert tensors is not None
    assert [t.name for t in tensors] == ["model.embed_tokens.weight"]


def test_consolidated_alone_is_read(tmp_path: Path) -> None:
    write_raw(tmp_path / "consolidated.safetensors", {"tok_embeddings.weight": ("BF16", [8, 4])})
    tensors = read_checkpoint(tmp_path)
    assert tensors is not None
    assert summarize(tensors)["BF16"] == 64


def test_no_safetensors_is_none(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 16)
    assert read_checkpoint(tmp_path) is None
    assert summarize([]) == {"total_bytes": 0, "params": 0}


def test_many_shards_all_counted(tmp_path: Path) -> None:
    n_shards, per_shard = 20, 50
    weight_map = {}
    for s in range(n_shards):
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        entries = {f"layers.{s}.t{i}": ("BF16", [16, 8]) for i in range(per_shard)}
        write_raw(tmp_path / name, entries)
        weight_map.update(dict.fromkeys(entries, name))
    write_index(tmp_path, weight_map)
    tensors = read_checkpoint(tmp_path)
    assert tensors is not None
    assert len(tensors) == n_shards * per_shard
    assert summarize(tensors)["BF16"] == n_shards * per_shard * 16 * 8 * 2


# --- corrupt files ------------------------------------------------------------------------


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model-00001-of-00001.safetensors"
    save_file({"w": np.zeros((64, 64), np.float32)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError) as exc:
        read_header(path)
    err = exc.value
    assert path.name in err.message
    assert "truncated" in err.message
    assert err.fix is not None and "re-download" in err.fix and path.name in err.fix
    with pytest.raises(CheckpointError, match="model-00001-of-00001"):
        read_checkpoint(tmp_path)


def test_garbage_json_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    junk = b"{not json at all"
    path.write_bytes(struct.pack("<Q", len(junk)) + junk + bytes(64))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*not valid JSON"):
        read_header(path)


def test_non_utf8_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    junk = bytes(range(200, 256))
    path.write_bytes(struct.pack("<Q", len(junk)) + junk)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_header(path)


def test_header_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    raw = b"[1, 2, 3]"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_header(path)


def test_absurd_header_length(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(CheckpointError, match="absurd"):
        read_header(path)


def test_header_length_beyond_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 5000) + b"{}")
    with pytest.raises(CheckpointError, match="exceeds the file size"):
        read_header(path)


def test_file_shorter_than_length_prefix(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointError, match="shorter than the 8-byte"):
        read_header(path)


def test_unknown_dtype(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "model.safetensors", {"w": ("F16", [2])})
    raw = path.read_bytes().replace(b'"F16"', b'"Q16"')  # same length
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="unknown dtype 'Q16'"):
        read_header(path)


def test_entry_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    raw = json.dumps({"w": {"dtype": "F16", "shape": [2]}}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4))
    with pytest.raises(CheckpointError, match="'w': missing data_offsets"):
        read_header(path)


def test_offsets_disagree_with_shape(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    raw = json.dumps({"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(32))
    with pytest.raises(CheckpointError, match=r"span 16 bytes but BF16.*needs 32"):
        read_header(path)


def test_missing_shard_listed_in_index(tmp_path: Path) -> None:
    write_raw(tmp_path / "model-00001-of-00002.safetensors", {"a": ("BF16", [2])})
    write_index(tmp_path, {"a": "model-00001-of-00002.safetensors",
                           "b": "model-00002-of-00002.safetensors"})
    assert missing_shards(tmp_path) == ["model-00002-of-00002.safetensors"]
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors") as exc:
        read_checkpoint(tmp_path)
    assert exc.value.fix is not None and "re-download" in exc.value.fix


def test_missing_shard_without_index_from_names(tmp_path: Path) -> None:
    write_raw(tmp_path / "model-00001-of-00003.safetensors", {"a": ("BF16", [2])})
    write_raw(tmp_path / "model-00003-of-00003.safetensors", {"c": ("BF16", [2])})
    assert missing_shards(tmp_path) == ["model-00002-of-00003.safetensors"]
    with pytest.raises(CheckpointError, match="model-00002-of-00003"):
        read_checkpoint(tmp_path)


def test_invalid_index(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json is not a valid"):
        read_checkpoint(tmp_path)
