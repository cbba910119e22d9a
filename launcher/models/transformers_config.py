"""config.json of a model_type the launcher's own table does not know → read through transformers.

The alias table in `launcher.models.config` reads the families it lists the way vLLM does.
For any other `model_type`, vLLM itself would load transformers' config class for it, whose
class defaults and `attribute_map` aliases fill in what the file leaves out. This module does
the same, and only then: importing transformers (and torch behind it) costs seconds, so the
planning path for a known family never comes here (a test checks `sys.modules`).

Which model types transformers knows is read first from its generated table
(`transformers/models/auto/auto_mappings.py`, plain data), without importing transformers: a
model_type neither table knows fails at once, naming the `architectures` entry, the
model_type, and the closest architecture the launcher supports (STYLE 12: no silent default).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import ModelConfigError
from launcher.models.fields import MAX_LAYERS, config_error

# Normalized config keys (the first spelling of each in config.ALIASES) read from the class's
# attributes, so its defaults and attribute_map aliases land where the alias table looks first.
_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
           "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings")
_MODEL_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# Layer counts in any spelling (num_hidden_layers, n_layer, decoder_layers, num_decoder_layers).
_LAYER_COUNT = re.compile(r"(num|n)_(\w+_)?layers?|(\w+_)?(encoder|decoder)_layers|depth")
_MAX_DEPTH = 32
_MAX_ITEMS = 100_000
_MAX_INT = 2**53  # beyond any size, id or count a config holds (token ids, vocab, positions)


@dataclass(frozen=True)
class ViaTransformers:
    """The config as transformers' class reads it, and what the plan should say about that."""

    config: dict[str, Any]
    provenance: str  # "transformers 5.19.0 Foo2Config"
    note: str  # the assumption shown with the plan


def unknown_architecture(config: dict[str, Any], model_type: str, origin: str,
                         supported: dict[str, tuple[str, ...]],
                         why: str = "") -> ModelConfigError:
    """Exit 2 naming the `architectures` entry and model_type, with the closest supported."""
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    names = sorted({a for group in supported.values() for a in group})
    asked = arch or model_type
    close = difflib.get_close_matches(asked, names, n=1, cutoff=0.0) if names else []
    closest = close[0] if close else None
    what = (f"`architectures` {arch[:80]!r} (`model_type` {model_type[:80]!r})" if arch
            else f"`model_type` {model_type[:80]!r} (no `architectures` entry)")
    return ModelConfigError(
        f"{origin}: {what} is not a model the launcher can size: neither its own table nor "
        f"transformers knows it{why}",
        fix=(f"The closest supported architecture is {closest}; " if closest else "")
        + "use a built-in profile, or a model whose architecture vLLM and transformers support "
          "(a model that needs trust_remote_code cannot be sized from its config alone).",
        hint="launcher models   (built-in profiles)")


def normalize(config: dict[str, Any], model_type: str, origin: str,
              supported: dict[str, tuple[str, ...]]) -> ViaTransformers:
    """The config rewritten from transformers' config class for `model_type`: every field the
    alias table reads comes from the class's attributes (defaults and attribute_map applied).

    Raises ModelConfigError when transformers does not know the model_type either, or when
    its config class rejects the file.
    """
    if model_type == "unknown" or not _MODEL_TYPE.fullmatch(model_type):
        raise unknown_architecture(config, model_type, origin, supported)
    names = _config_names()
    if names is None:
        raise unknown_architecture(config, model_type, origin, supported,
                                   " (transformers is not installed)")
    if model_type not in names:
        raise unknown_architecture(config, model_type, origin, supported)
    _precheck(config, origin)
    return _load(config, model_type, origin)


def _precheck(value: Any, origin: str, path: str = "", depth: int = 0) -> None:
    """Refuse what would make a config class loop or explode before it is instantiated: some
    build per-layer lists in __post_init__ (`range(num_hidden_layers)`), so a layer count of
    2**62 must not reach them. The launcher's own range checks run on the result afterwards.
    """
    if depth > _MAX_DEPTH:
        raise config_error(origin, path, "…", f"nesting at most {_MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for k, v in value.items():
            _precheck(v, origin, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(value, list):
        if len(value) > _MAX_ITEMS:
            raise config_error(origin, path, f"a list of {len(value):,} items",
                               f"at most {_MAX_ITEMS:,} items")
        for i, v in enumerate(value[:64]):
            _precheck(v, origin, f"{path}[{i}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        hi = MAX_LAYERS if _LAYER_COUNT.fullmatch(path.rsplit(".", 1)[-1]) else _MAX_INT
        if abs(value) > hi:
            raise config_error(origin, path, value, f"at most {hi:,} (plausibility limit)")
    elif isinstance(value, float) and _LAYER_COUNT.fullmatch(path.rsplit(".", 1)[-1]) and (
            not math.isfinite(value) or abs(value) > MAX_LAYERS):
        raise config_error(origin, path, value, f"at most {MAX_LAYERS:,} (plausibility limit)")


def _load(config: dict[str, Any], model_type: str, origin: str) -> ViaTransformers:
    """Instantiate the config class (the slow part: imports transformers and torch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers warns about fields it ignores
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        transformers.logging.set_verbosity_error()
        try:
            cls = CONFIG_MAPPING[model_type]
            # a copy: the class must not change the caller's dict
            cfg = cls.from_dict(dict(config))
        except Exception as e:  # any rejection of outside data is bad input
            reason = str(e).replace("\n", " ")
            raise ModelConfigError(
                f"{origin}: transformers {transformers.__version__} cannot read it as "
                f"model_type {model_type!r} ({type(e).__name__}: {reason[:200]})",
                fix="Correct config.json (compare it with the model's published one).") from e
        out = _plain(cfg.to_dict())
        text_cfg = cfg.get_text_config(decoder=True)
        if "_heterogeneity_spec" in vars(text_cfg):
            # A config whose layers differ (transformers' heterogeneity): read the global values,
            # as the table does; per-layer differences are beyond the fallback (see the note).
            text_cfg.allow_global_per_layer_attribute_access = True
        text: dict[str, Any] = out
        if text_cfg is not cfg:
            key = next((k for k in getattr(cfg, "sub_configs", {})
                        if getattr(cfg, k, None) is text_cfg), "text_config")
            text = _plain(text_cfg.to_dict())
            out.pop(key, None)
            out["text_config"] = text  # where the alias table looks for the language model
        for field in _FIELDS:
            value = getattr(text_cfg, field, None)
            if value is not None:
                text[field] = value
        # vLLM copies a multimodal config's own tie_word_embeddings onto its text config
        # (vllm/config/vllm.py, "In Transformers v5, tie_word_embeddings belongs to ...").
        tie = getattr(cfg, "tie_word_embeddings", None)
        if tie is None:
            tie = getattr(text_cfg, "tie_word_embeddings", None)
        if isinstance(tie, bool):
            text["tie_word_embeddings"] = tie
        which = f"transformers {transformers.__version__} {type(cfg).__name__}"
    note = (f"{origin}: model_type {model_type!r} is not in the launcher's table; read through "
            f"{which} (its class defaults and attribute aliases applied). Anything beyond standard "
            "attention, a gated MLP and MoE (recurrent state, sparse indexers, other MLPs) is "
            "not modelled.")
    return ViaTransformers(out, which, note)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """to_dict() output without transformers-internal keys the alias table does not read."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


@functools.cache
def _config_names() -> frozenset[str] | None:
    """model_types transformers has a config class for, or None without transformers.

    Read from its generated table without importing transformers (seconds, with torch);
    only if that file is missing (another layout) is transformers imported to ask.
    """
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    table = Path(next(iter(spec.submodule_search_locations))) / "models/auto/auto_mappings.py"
    try:
        loader = importlib.util.spec_from_file_location("_launcher_tf_auto_mappings", table)
        if loader is None or loader.loader is None:
            raise FileNotFoundError(table)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        return frozenset(module.CONFIG_MAPPING_NAMES)
    except (OSError, AttributeError, SyntaxError, ImportError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        return frozenset(CONFIG_MAPPING_NAMES)
