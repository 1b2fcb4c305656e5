"""Instruction robustness: how much a classifier's accuracy depends on the wording of its instruction.

As in the robust soft prompt line of work, a model (or prompt) is robust when accuracy stays put
across paraphrased instructions. We report the mean and standard deviation over templates, split
into phrasings seen in training and unseen ones, so a gap between the two shows over-fitting to
the training wording.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from torch import nn
from transformers import PreTrainedTokenizerBase

from .probes import ProbeTask, evaluation_mode, prepare_probe, verbalizer_accuracy


def _summary(accuracies: list[float]) -> dict[str, float]:
    if not accuracies:
        return {}
    return {"mean": statistics.fmean(accuracies), "std": statistics.pstdev(accuracies), "count": len(accuracies)}


def instruction_robustness(model: nn.Module, tokenizer: PreTrainedTokenizerBase, task: ProbeTask,
                           seen: list[str], unseen: list[str] = (), batch_size: int = 16,
                           max_tokens: int | None = None) -> dict:
    """Accuracy of `task` (its template replaced by each phrasing) per template, with mean/std per group.

    Every template is scored on the same seeded examples, so the spread is due to wording alone.
    `max_tokens` is the model's input limit (prompts keep their last `max_tokens` tokens).
    Returns {"templates": {template: acc}, "seen": {mean, std, count}, "unseen": {...}, "all": {...}}.
    """
    if not seen and not unseen:
        raise ValueError("instruction_robustness needs at least one template (seen or unseen).")
    for template in [*seen, *unseen]:
        if "{text}" not in template:
            raise ValueError(f"Template {template!r} has no {{text}} slot; put {{text}} where the input goes.")
    accuracies = {}
    with evaluation_mode(model):
        for template in [*seen, *unseen]:
            probe = prepare_probe(replace(task, template=template), tokenizer, max_tokens)
            accuracies[template] = verbalizer_accuracy(model, probe, tokenizer.pad_token_id, batch_size)
    return {
        "templates": accuracies,
        "seen": _summary([accuracies[t] for t in seen]),
        "unseen": _summary([accuracies[t] for t in unseen]),
        "all": _summary(list(accuracies.values())),
    }
