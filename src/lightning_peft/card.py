"""What an exported adapter or merged model says about itself, so it can be applied without its training config.

`lightning-peft export` and `merge` write `lightning_peft.json` beside the weights: the base model
by the name it was given (zoo short name or hub id, never a cache path) and its fingerprint, the
task, the method and its settings, the label names and verbalizer, how inputs were written
(`InputFormat`), the dataset and the final metrics. `README.md` says the same for people
(a Hugging Face model card). `predict`, `generate` and `evaluate` read the JSON, so a folder alone
is enough to use what was trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

CARD_NAME = "lightning_peft.json"
CARD_VERSION = 1


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The single-number entries of a metrics dict (e.g. `trainer.callback_metrics`), as floats."""
    import torch

    return {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor) or v.numel() == 1}


class CardError(ValueError):
    """A folder's `lightning_peft.json` is missing or unreadable (one sentence: what and what to do)."""


@dataclass
class RunCard:
    """The facts of a trained adapter or merged model.

    Args:
        backbone: The base model as the run named it: zoo short name, hub id or folder.
        kind: "adapter" (the trained part alone; load the base, then it) or "merged" (a whole model).
        base_fingerprint: `checkpoint.fingerprint` of the base, so an adapter refuses another base.
        task: The task's config, `{"class_path": ..., "init_args": {...}}`; None when the module was
            built in Python from objects (then only the weights are portable).
        method: The method's config in the same form (or None, as for `task`).
        label_names: Class names in label-index order (classification tasks).
        verbalizer: Label -> the word scored for it (verbalizer classification).
        input_format: `InputFormat.to_dict()` of the training data; None when the data did not say.
        dataset: The catalog name or file trained on.
        quantization: "int8" or "nf4" when the base was loaded quantized (QLoRA): the adapter goes back onto a base
            quantized the same way.
        metrics: Final scalar metrics of the run (e.g. "test/acc").
    """

    backbone: str
    kind: str = "adapter"
    base_fingerprint: Optional[str] = None
    task: Optional[dict[str, Any]] = None
    method: Optional[dict[str, Any]] = None
    label_names: Optional[list[str]] = None
    verbalizer: Optional[dict[str, str]] = None
    input_format: Optional[dict[str, Any]] = None
    dataset: Optional[str] = None
    quantization: Optional[str] = None
    metrics: dict[str, float] = field(default_factory=dict)
    version: int = CARD_VERSION

    def write(self, folder: str | Path) -> None:
        """Write `lightning_peft.json` and a model card `README.md` into `folder`."""
        folder = Path(folder)
        (folder / CARD_NAME).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        (folder / "README.md").write_text(model_card(self))

    @classmethod
    def read(cls, folder: str | Path) -> "RunCard":
        path = Path(folder) / CARD_NAME
        if not path.is_file():
            raise CardError(f"{folder} has no {CARD_NAME}, so it does not say its base model, task or input format; "
                            "export it again with `lightning-peft export` (or `merge`) from its checkpoint.")
        try:
            values = json.loads(path.read_text())
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as error:
            raise CardError(f"{path} is not a {CARD_NAME} this version reads ({error}); export the model again.") from None


def _class_name(spec: Optional[dict[str, Any]]) -> str:
    return str(spec.get("class_path", "?")).rpartition(".")[2] if spec else "unknown (built in Python)"


def _settings(spec: Optional[dict[str, Any]]) -> str:
    args = (spec or {}).get("init_args") or {}
    return ", ".join(f"{k}={v!r}" for k, v in sorted(args.items())) or "defaults"


def model_card(card: RunCard) -> str:
    """A Hugging Face model card (`README.md`): what was trained, on what, how, and how well."""
    method, task = _class_name(card.method), _class_name(card.task)
    library = "peft" if card.kind == "adapter" else "transformers"
    lines = [
        "---",
        f"base_model: {card.backbone}",
        f"library_name: {library}",
        "tags: [lightning-peft, " + method.lower() + "]",
        "---",
        "",
        f"# {method} {'adapter' if card.kind == 'adapter' else 'merged model'} on {card.backbone}",
        "",
        f"Trained with lightning-peft: method **{method}** ({_settings(card.method)}), task **{task}** "
        f"({_settings(card.task)}), on {card.dataset or 'data not recorded'}.",
        "",
    ]
    if card.label_names:
        words = card.verbalizer or {}
        lines += ["Labels: " + ", ".join(f"`{n}`" + (f" (word `{words[n]}`)" if n in words else "") for n in card.label_names), ""]
    if card.input_format:
        shown = "the tokenizer's chat template" if card.input_format.get("chat_template") else repr(card.input_format.get("template"))
        lines += [f"Input: column `{card.input_format.get('column')}` written as {shown}, "
                  f"at most {card.input_format.get('max_length')} tokens.", ""]
    if card.metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in sorted(card.metrics.items())] + [""]
    source = "--adapter" if card.kind == "adapter" else "--model"
    lines += ["## Use", "", "```bash", f"lightning-peft predict {source} <this folder> --input inputs.jsonl --output predictions.jsonl",
              f"lightning-peft generate {source} <this folder> --prompt \"...\"", "```", ""]
    return "\n".join(lines)
