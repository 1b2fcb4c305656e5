"""The decoding-time methods a `GenerationSettings` asks for, turned into `model.generate` arguments.

n-gram style prior (`ngram_prior`), conditional beam search (`beam_classifier`) and hidden-state
optimisation (`hidden_state_opt`) change how the model decodes, never its weights. `Decoding` builds
each once per `generate_texts` call and gives every batch its logits processors and, with
hidden-state optimisation, its optimised cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .beam_classifier import AttributeClassifier, ConditionalBeamProcessor, LastHiddenState
from .errors import GenerationError
from .hidden_state_opt import HiddenStateOptimisation, optimised_cache
from .loading import Runnable
from .ngram_prior import NgramCounts, NgramPriorProcessor, check_order, ngram_counts
from .style_corpus import corpus_text


class DecodingOptions(Protocol):
    """The fields of `GenerationSettings` that pick decoding-time methods."""

    num_beams: int
    style_corpus: str | None
    style_lambda: float
    style_order: int
    beam_classifier: str | None
    beta: float
    hso_steps: int
    hso_lr: float


def check_decoding_options(options: DecodingOptions) -> None:
    """What can be checked before a model loads: ranges, combinations, a readable non-empty corpus, a classifier file."""
    if not isinstance(options.num_beams, int) or options.num_beams < 1:
        raise GenerationError(f"num_beams must be an integer >= 1, got {options.num_beams!r}.")
    if not options.style_lambda >= 0:
        raise GenerationError(f"The style prior's lambda must be >= 0 (the paper: about 0.1), got {options.style_lambda!r}.")
    check_order(options.style_order)
    if not options.beta >= 0:
        raise GenerationError(f"beta (the classifier's weight in the beam score) must be >= 0, got {options.beta!r}.")
    HiddenStateOptimisation(options.hso_steps, options.hso_lr)
    if options.beam_classifier is not None:
        if options.num_beams < 2:
            raise GenerationError("A beam classifier reorders beams; give num_beams >= 2 with it.")
        AttributeClassifier.load(options.beam_classifier)  # a missing file fails here, before any model loads
    if options.hso_steps and options.num_beams > 1:
        raise GenerationError("Hidden-state optimisation works with greedy or sampled decoding; give num_beams 1 with it.")


def check_style_corpus(options: DecodingOptions) -> None:
    """The style corpus can be read and has text (reads it; the n-gram counts are made later, on the tokenizer)."""
    if options.style_corpus is not None:
        corpus_text(options.style_corpus)


@dataclass
class Decoding:
    """Per-call state of the decoding-time methods: counts, classifier and the hook that feeds it."""

    runnable: Runnable
    options: DecodingOptions
    counts: NgramCounts | None = None
    classifier: AttributeClassifier | None = None
    hidden: LastHiddenState | None = None

    @classmethod
    def build(cls, runnable: Runnable, options: DecodingOptions) -> "Decoding":
        check_decoding_options(options)
        if options.hso_steps and runnable.encoder_decoder:
            raise GenerationError("Hidden-state optimisation is for decoder-only models; set hso_steps 0 for this one.")
        decoding = cls(runnable, options)
        if options.style_corpus is not None:
            decoding.counts = ngram_counts(options.style_corpus, runnable.tokenizer, options.style_order)
        if options.beam_classifier is not None:
            hidden_size = runnable.model.get_output_embeddings().weight.shape[1]
            device = next(runnable.model.parameters()).device
            decoding.classifier = AttributeClassifier.load(options.beam_classifier, hidden_size).to(device)
            decoding.hidden = LastHiddenState(runnable.model)
        return decoding

    def processors(self) -> LogitsProcessorList:
        """Fresh processors for one batch (the beam processor remembers its batch's beams)."""
        chosen: list[LogitsProcessor] = []
        if self.counts is not None:
            chosen.append(NgramPriorProcessor(self.counts, self.options.style_lambda))
        if self.classifier is not None and self.hidden is not None:
            chosen.append(ConditionalBeamProcessor(self.classifier, self.hidden, self.options.beta))
        return LogitsProcessorList(chosen)

    def batch_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Extra `model.generate` arguments for one batch: logits processors, and the optimised cache."""
        extra: dict[str, Any] = {"logits_processor": self.processors()}
        if self.options.hso_steps:
            settings = HiddenStateOptimisation(self.options.hso_steps, self.options.hso_lr)
            extra["cache"], _ = optimised_cache(self.runnable.model, inputs["input_ids"],
                                                          inputs["attention_mask"], settings)
        return extra

    def close(self) -> None:
        if self.hidden is not None:
            self.hidden.remove()
