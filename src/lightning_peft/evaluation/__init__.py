"""Evaluation layer (plain functions on a model, no Trainer needed): forgetting probes, conjugate prompting, robustness, plots."""

from .conjugate import (ICL_TASKS, Identity, IclPrompt, Leetspeak, PigLatin, PromptTransform, Rot13, Translation,
                        conjugate_report, get_transform, icl_accuracy, icl_suite, is_in_context_answer)
from .probes import (DEFAULT_PROBE_TASKS, ForgettingProbes, ProbeTask, TextStats, adapters_disabled, coarse_kl, compare,
                     evaluation_mode)
from .diversity import DistinctN, PairwiseEmbeddingDistance, SelfBLEU, SentenceEncoder
from .robustness import instruction_robustness

__all__ = ["DEFAULT_PROBE_TASKS", "DistinctN", "PairwiseEmbeddingDistance", "SelfBLEU", "SentenceEncoder", "ICL_TASKS", "ForgettingProbes", "IclPrompt", "Identity", "Leetspeak", "PigLatin",
           "ProbeTask", "PromptTransform", "Rot13", "TextStats", "Translation", "adapters_disabled", "coarse_kl",
           "compare", "conjugate_report", "evaluation_mode", "get_transform", "icl_accuracy", "icl_suite",
           "instruction_robustness", "is_in_context_answer"]
