"""Parity of our bottleneck adapters with AdapterHub's `adapters` library: same BERT weights, same adapter
weights -> the same outputs.

`adapters` 1.3 needs transformers ~=4.57, so it runs in a second virtual environment; the two halves
exchange files only:

    python benchmarks/adapters_parity.py write --folder /tmp/parity           # this project's venv
    <venv with adapters==1.3.0, transformers==4.57.6>/bin/python benchmarks/adapters_parity.py check --folder /tmp/parity

`write` builds a random 2-layer BERT (d=64), applies `BottleneckAdapter` at the Houlsby and the Pfeiffer
placement with random adapter weights, and saves the base, the adapter weights and the final hidden states.
`check` rebuilds the same BERT under transformers 4.57, adds an `adapters.BnConfig` adapter
(`mh_adapter` for Houlsby, `output_adapter`; relu; reduction factor 16; `original_ln_before=False`,
`residual_before_ln=True`, `original_ln_after=True`: the adapter reads the sublayer's output before the
residual and layer norm, as ours does), copies the same weights in, and prints the largest difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG = {"vocab_size": 120, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "max_position_embeddings": 64}
PLACEMENTS = ("houlsby", "pfeiffer")
OURS_TO_THEIRS = {"attention.output.dense.bottleneck.task.": "attention.output.adapters.parity.",
                  "output.dense.bottleneck.task.": "output.adapters.parity."}
PROJECTION = {"down.": "adapter_down.0.", "up.": "adapter_up."}


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, CONFIG["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.tensor([[1] * 9, [1] * 6 + [0] * 3])}


def theirs_name(ours: str) -> str:
    """Our parameter name (`...output.dense.bottleneck.task.down.weight`) as `adapters` names it."""
    for source, target in OURS_TO_THEIRS.items():  # the attention entry first: it contains the other
        if source in ours:
            head, tail = ours.split(source)
            return head + target + next(PROJECTION[k] + tail[len(k):] for k in PROJECTION if tail.startswith(k))
    raise KeyError(ours)


def write(folder: Path) -> None:
    from transformers import BertConfig, BertModel

    from lightning_peft.methods import BottleneckAdapter

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    base = BertModel(BertConfig(**CONFIG)).eval()
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(folder / "base.safetensors"))
    outputs = {}
    with torch.no_grad():
        outputs["base"] = base(**_inputs()).last_hidden_state
    for placement in PLACEMENTS:
        model = BertModel(BertConfig(**CONFIG)).eval()
        model.load_state_dict(load_file(str(folder / "base.safetensors")))
        adapted = BottleneckAdapter(placement=placement, reduction_factor=16).apply(model)
        generator = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for parameter in adapted.groups["adapter"].values():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            outputs[placement] = adapted.model.eval()(**_inputs()).last_hidden_state
        save_file({theirs_name(n): p.detach().contiguous() for n, p in adapted.groups["adapter"].items()},
                  str(folder / f"{placement}.safetensors"))
    save_file(outputs, str(folder / "outputs.safetensors"))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    print(f"wrote {folder}")


def check(folder: Path) -> None:
    import adapters
    import transformers
    from adapters import BnConfig
    from transformers import BertConfig, BertModel

    expected = load_file(str(folder / "outputs.safetensors"))
    report = {"adapters": adapters.__version__, "transformers": transformers.__version__}
    for placement in ("base", *PLACEMENTS):
        model = BertModel(BertConfig(**json.loads((folder / "config.json").read_text())))
        model.load_state_dict(load_file(str(folder / "base.safetensors")))
        if placement != "base":
            adapters.init(model)
            model.add_adapter("parity", config=BnConfig(
                mh_adapter=placement == "houlsby", output_adapter=True, reduction_factor=16, non_linearity="relu",
                original_ln_before=False, residual_before_ln=True, original_ln_after=True))
            model.set_active_adapters("parity")
            weights = load_file(str(folder / f"{placement}.safetensors"))
            missing = set(weights) - dict(model.named_parameters()).keys()
            assert not missing, f"names not in the adapters model: {sorted(missing)[:3]}"
            model.load_state_dict(weights, strict=False)
        with torch.no_grad():
            got = model.eval()(**_inputs()).last_hidden_state
        report[placement] = float((got - expected[placement]).abs().max())
        if placement != "base":  # how far the adapters move the outputs: what a missed adapter would show
            report[f"{placement}_vs_base"] = float((expected[placement] - expected["base"]).abs().max())
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["write", "check"])
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args()
    (write if args.part == "write" else check)(args.folder)


if __name__ == "__main__":
    main()
