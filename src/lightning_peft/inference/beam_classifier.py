"""Conditional beam search: beam score = log p(y|x) + beta * log p(attribute | x, y<=t).

Paper: Davis Yoshida, "Making the Most of your Model: Methods for Finetuning and Applying
Pretrained Transformers" (PhD thesis, TTIC, 2023), conditional beam search. A small classifier
reads the LM's own hidden state (the input of its LM head) and says how likely the attribute
(here: "not degenerate", i.e. not looping) is for the text so far; beam search ranks beams by
the LM's log-likelihood plus beta times the classifier's log-probability.

Our choices: the classifier is logistic regression on the final hidden state of the last token;
the hidden state comes from a forward pre-hook on the LM head, so no second forward pass is run.
The classifier term is added as a telescoping increment per step, so the accumulated beam score
carries beta * log p(attribute | x, y<=t) once (not a sum over steps); because the hidden state
of a candidate token exists only after the step that chooses it, the term judges y<=t when
y_{t+1} is chosen (one step behind).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LogitsProcessor

from ..atomic import write_file_atomically
from .errors import GenerationError

WEIGHTS, META = "classifier.safetensors", "classifier.json"


class AttributeClassifier(nn.Module):
    """log p(attribute | hidden state): logistic regression on the LM's final hidden state."""

    def __init__(self, hidden_size: int, attribute: str = "not_degenerate") -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        self.hidden_size, self.attribute = hidden_size, attribute

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """log p(attribute) for each hidden state (..., hidden_size) -> (...)."""
        return nn.functional.logsigmoid(self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_file_atomically(folder / WEIGHTS, lambda tmp: save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                                                                      str(tmp)))
        meta = json.dumps({"hidden_size": self.hidden_size, "attribute": self.attribute})
        write_file_atomically(folder / META, lambda tmp: tmp.write_text(meta))

    @classmethod
    def load(cls, folder: str | Path, hidden_size: int | None = None) -> "AttributeClassifier":
        """The classifier saved in `folder`; one sentence if it is missing or made for another hidden size."""
        folder = Path(folder)
        if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
            raise GenerationError(f"{folder} holds no beam classifier ({META} and {WEIGHTS}); train one with "
                                  "`python -m lightning_peft.inference.beam_classifier_training`.")
        meta = json.loads((folder / META).read_text())
        if hidden_size is not None and meta["hidden_size"] != hidden_size:
            raise GenerationError(f"The beam classifier in {folder} reads hidden states of size {meta['hidden_size']}, "
                                  f"but this model's are {hidden_size}; train one on this model.")
        classifier = cls(meta["hidden_size"], meta["attribute"])
        classifier.load_state_dict(load_file(str(folder / WEIGHTS)))
        return classifier.eval()


class LastHiddenState:
    """Keeps the last position's input of the LM head (the final hidden state) from each forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self._handle = model.get_output_embeddings().register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.value = inputs[0][:, -1].detach()

    def remove(self) -> None:
        self._handle.remove()


class ConditionalBeamProcessor(LogitsProcessor):
    """Adds beta * [log p(a | x, y<=t) - log p(a | x, y<t)] to every candidate of each beam, so beam search's
    running sum holds log p(y|x) + beta * log p(a | x, y<=t).

    Rows are matched to their parent at the previous step by their token prefix (beam search reorders
    rows between steps and does not tell a logits processor how).
    """

    def __init__(self, classifier: AttributeClassifier, hidden: LastHiddenState, beta: float) -> None:
        if not beta >= 0:
            raise GenerationError(f"beta (the classifier's weight in the beam score) must be >= 0, got {beta!r}.")
        self.classifier, self.hidden, self.beta = classifier, hidden, beta
        self._previous: dict[tuple[int, ...], float] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.beta == 0 or self.hidden.value is None:
            return scores
        with torch.no_grad():
            current = self.classifier(self.hidden.value.to(self.classifier.linear.weight.device)).tolist()
        rows = [tuple(row) for row in input_ids.tolist()]
        before = [self._previous.get(row[:-1], value) for row, value in zip(rows, current)]
        self._previous = dict(zip(rows, current))
        increment = torch.tensor([now - then for now, then in zip(current, before)], dtype=scores.dtype,
                                 device=scores.device)
        return scores + self.beta * increment[:, None]
