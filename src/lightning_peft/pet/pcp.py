"""PCP's arithmetic between stages (pure torch): the adapter handed from continued pre-training to fine-tuning,
and the paired comparison of prompt-based fine-tuning with and without PCP.

Shi & Lipani 2023, "Don't Stop Pretraining? Make Prompt-based Fine-tuning Powerful Learner" (NeurIPS;
reference code ZhengxiangShi/PowerfulPromptFT). PCP pseudo-labels the task's unlabelled text with a
prompt-based teacher, writes each text into the template with its pseudo-label word in the answer slot,
continues pre-training on those texts, and fine-tunes with prompts again from there. The stages run from
`lightning-peft pet` with `pet.pcp: true` (`lightning_peft.cli.pet`).
"""

from __future__ import annotations

import torch
from torch import nn

from .ensemble import mean_std


def trained_state(groups: dict[str, dict[str, nn.Parameter]]) -> dict[str, torch.Tensor]:
    """Every trained parameter of a method's named groups, by name (on the CPU, contiguous: ready for safetensors)."""
    return {name: parameter.detach().cpu().contiguous() for group in groups.values() for name, parameter in group.items()}


def load_trained_state(groups: dict[str, dict[str, nn.Parameter]], state: dict[str, torch.Tensor]) -> None:
    """Start from `state` (what `trained_state` saved from the same method on the same backbone): copied in place."""
    parameters = {name: parameter for group in groups.values() for name, parameter in group.items()}
    if parameters.keys() != state.keys():
        missing = sorted(parameters.keys() - state.keys())[:1] or sorted(state.keys() - parameters.keys())[:1]
        raise ValueError(f"The continued pre-training's adapter does not fit this method (e.g. {missing}); rerun PCP "
                         "with the same method, in a new pet.output_dir.")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name].to(parameter.device, parameter.dtype))


def paired_gain(without: list[float], with_pcp: list[float]) -> dict[str, float]:
    """Mean ± std of a metric without and with PCP over paired runs (same pattern, seed and shots), and of the gain."""
    if len(without) != len(with_pcp):
        raise ValueError(f"paired_gain needs one run with PCP per run without, got {len(with_pcp)} and {len(without)}.")
    summary = {}
    for name, values in (("without", without), ("with", with_pcp),
                         ("gain", [after - before for before, after in zip(without, with_pcp)])):
        summary[f"{name}_mean"], summary[f"{name}_std"] = mean_std(values)
    return summary
