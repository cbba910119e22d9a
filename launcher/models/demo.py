"""The built-in demo model: a tiny Llama with random weights and a real trained tokenizer.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on text that ships with
Python (the standard library's docstrings), the weights are seeded random numbers. It is big
enough to exercise the whole serving path (GQA, two layers, head_dim 64 as the CPU attention
kernels require) and small enough to build in a second and load in vLLM's CPU backend.
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
VOCAB = 2048


def default_dir() -> Path:
    return cache_dir() / "demo-model"


def is_built(path: Path) -> bool:
    marker = path / "launcher-demo.json"
    try:
        return json.loads(marker.read_text()).get("format") == FORMAT_VERSION
    except (OSError, ValueError):
        return False


def ensure_demo_model(path: Path | None = None) -> Path:
    """The demo model's directory, built on first use."""
    path = (path or default_dir()).expanduser()
    if not is_built(path):
        build_demo_model(path)
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


def _tokenizer(vocab: int) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
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


def build_demo_model(path: Path) -> Path:
    """Write the demo model to `path` (replacing an older build there)."""
    from safetensors.numpy import save_file

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
        tok = _tokenizer(VOCAB)
        config = dict(CONFIG, vocab_size=tok.get_vocab_size())
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
        save_file(_weights(config), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "launcher-demo.json").write_text(json.dumps(
            {"format": FORMAT_VERSION, "what": "launcher demo model: random weights, BPE "
             "tokenizer trained on Python's docstrings"}))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
