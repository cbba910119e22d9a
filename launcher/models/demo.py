"""The built-in demo models: Llamas with random weights and a real trained tokenizer.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on text that ships with
Python (the standard library's docstrings), the weights are seeded random numbers.

    small  the tiny demo (profile `demo`): GQA, two layers, head_dim 64 as the CPU attention
           kernels require; builds in a second, loads in vLLM's CPU backend in seconds
    large  a 0.49 B model with the shape of Qwen2.5-0.5B (24 layers, hidden 896, 14 heads,
           2 KV heads, head_dim 64, a 151,936-row tied embedding; 0.92 GiB of bf16 weights):
           the second size the CPU backend's constants are fitted on. Built in ~15 s,
           streamed tensor by tensor into a bf16 safetensors file (0.92 GiB on disk).

The build is atomic (a temporary directory renamed into place), so an interrupted build never
leaves a half-written model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import InputError
from launcher.paths import cache_dir

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

FORMAT_VERSION = 1
SPECIAL = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "num_hidden_layers": 2,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 1,
    "eos_token_id": 2, "attention_bias": False, "mlp_bias": False,
}
VOCAB = 2048  # the tokenizer's; a config may have more embedding rows than tokens
# Qwen2.5-0.5B's shape as a Llama (no q/k/v bias): what a new user tries first on the CPU.
LARGE = dict(CONFIG, hidden_size=896, intermediate_size=4864, num_attention_heads=14,
             num_key_value_heads=2, head_dim=64, num_hidden_layers=24,
             max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
             tie_word_embeddings=True)
LARGE_VOCAB = 151936  # Qwen2.5's embedding rows; the tokenizer is padded to match
SIZES = ("small", "large")


def default_dir(size: str = "small") -> Path:
    return cache_dir() / ("demo-model" if size == "small" else f"demo-model-{size}")


def is_built(path: Path, size: str = "small") -> bool:
    marker = path / "launcher-demo.json"
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("format") == FORMAT_VERSION and info.get("size", "small") == size


def ensure_demo_model(path: Path | None = None, size: str = "small") -> Path:
    """The demo model's directory, built on first use."""
    path = (path or default_dir(size)).expanduser()
    if not is_built(path, size):
        build_demo_model(path, size)
    return path


def _corpus() -> list[str]:
    """Deterministic English-and-code text from the standard library's docstrings."""
    import importlib
    import inspect
    import warnings

    texts: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases (typing.io) warn when touched
        for name in _CORPUS_MODULES:
            mod = importlib.import_module(name)
            texts.append(inspect.getdoc(mod) or "")
            for _, obj in sorted(vars(mod).items()):
                doc = inspect.getdoc(obj) if callable(obj) else None
                if doc:
                    texts.append(doc)
    return texts


_CORPUS_MODULES = ("json", "pathlib", "argparse", "collections", "functools", "itertools", "os",
                   "re", "string", "textwrap", "http.client", "email.message", "csv", "random",
                   "statistics", "datetime", "logging", "subprocess", "threading", "typing")


def _tokenizer(vocab: int, fill_to: int | None = None) -> Tokenizer:
    """A BPE trained to `vocab` tokens; `fill_to` pads its vocabulary with plain filler
    tokens (never produced by encoding) so that every id the model can sample decodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if fill_to is not None and fill_to > tok.get_vocab_size():
        data = json.loads(tok.to_str())
        ids = data["model"]["vocab"]
        data["model"]["vocab"] = ids | {f"<x{i}>": i for i in range(len(ids), fill_to)}
        tok = Tokenizer.from_str(json.dumps(data))
    return tok


def _weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(seed)
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd, nh, kvh = config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {"model.embed_tokens.weight": w(v, h), "lm_head.weight": w(v, h),
         "model.norm.weight": np.ones(h, np.float32)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t |= {p + "self_attn.q_proj.weight": w(nh * hd, h),
              p + "self_attn.k_proj.weight": w(kvh * hd, h),
              p + "self_attn.v_proj.weight": w(kvh * hd, h),
              p + "self_attn.o_proj.weight": w(h, nh * hd),
              p + "mlp.gate_proj.weight": w(inter, h), p + "mlp.up_proj.weight": w(inter, h),
              p + "mlp.down_proj.weight": w(h, inter),
              p + "input_layernorm.weight": np.ones(h, np.float32),
              p + "post_attention_layernorm.weight": np.ones(h, np.float32)}
    return t


def _bf16(x: np.ndarray) -> bytes:
    """float32 → bfloat16 bytes (round to nearest even), little-endian."""
    bits = x.astype("<f4").view("<u4")
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()


def _tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the Llama checkpoint, in file order (no lm_head when tied)."""
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd, nh, kvh = config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    if not config["tie_word_embeddings"]:
        out["lm_head.weight"] = (v, h)
    out["model.norm.weight"] = (h,)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out |= {p + "self_attn.q_proj.weight": (nh * hd, h),
                p + "self_attn.k_proj.weight": (kvh * hd, h),
                p + "self_attn.v_proj.weight": (kvh * hd, h),
                p + "self_attn.o_proj.weight": (h, nh * hd),
                p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                p + "mlp.down_proj.weight": (h, inter),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,)}
    return out


def _write_bf16_safetensors(config: dict[str, Any], path: Path, seed: int = 0) -> None:
    """A bf16 safetensors file written one tensor at a time (numpy has no bfloat16, and the
    large demo's float32 copy would not fit the size it stands for): norms 1, the rest
    N(0, 0.02)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shapes = _tensor_shapes(config)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format aligns the data to 8 bytes
    with path.open("wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for name, shape in shapes.items():
            if name.endswith("norm.weight"):
                f.write(_bf16(np.ones(shape, np.float32)))
                continue
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= 0.02
            f.write(_bf16(x))


def build_demo_model(path: Path, size: str = "small") -> Path:
    """Write the demo model of `size` to `path` (replacing an older build there)."""
    from safetensors.numpy import save_file

    if size not in SIZES:
        raise InputError(f"demo model size {size!r} is not {' or '.join(SIZES)}",
                         fix="Use --size small (the tiny demo) or --size large (0.49 B).")
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a directory",
                         fix="Pass a directory path for the demo model.")
    if path.is_dir() and any(path.iterdir()) and not (path / "launcher-demo.json").exists():
        raise InputError(f"{path} is a non-empty directory that is not a demo model",
                         fix="Pass an empty or new directory; nothing there was changed.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-model-", dir=path.parent))
    try:
        tok = _tokenizer(VOCAB, None if size == "small" else LARGE_VOCAB)
        config = dict(CONFIG if size == "small" else LARGE, vocab_size=tok.get_vocab_size())
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
            "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>",
            "model_max_length": config["max_position_embeddings"],
            "chat_template": CHAT_TEMPLATE, "add_bos_token": False}, indent=2))
        (tmp / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
             "pad_token": "</s>"}, indent=2))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 64}, indent=2))
        if size == "small":
            save_file(_weights(config), str(tmp / "model.safetensors"),
                      metadata={"format": "pt"})
        else:
            _write_bf16_safetensors(config, tmp / "model.safetensors")
        (tmp / "launcher-demo.json").write_text(json.dumps(
            {"format": FORMAT_VERSION, "size": size, "what": "launcher demo model: random "
             "weights, BPE tokenizer trained on Python's docstrings"}))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
