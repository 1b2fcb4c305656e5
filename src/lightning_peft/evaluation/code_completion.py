"""Exact match of single-line code completions on held-out files.

Paper: Zlotchevski et al. 2022, "Exploring and Evaluating Personalized Models for Code Generation"
(https://arxiv.org/abs/2208.13928), which scores personalised models on code of the same project
that training never saw. Ours: the model continues the lines before a held-out line greedily, and
the line it starts must equal that line (trailing whitespace ignored, indentation counted).
The pairs come from `CodeCompletionData.test_completions()`.

The prompt ends *before* the newline(s) that precede the line: BPE tokenizers of the GPT-2 kind write a
newline together with the next line's indentation as one token (SmolLM2: `"\n    "` is `ĊĠĠĠ`), so a
prompt ending in a bare newline asks for a token sequence the model never saw in training, and
SmolLM2-135M then mostly answers with another blank line (0 of 40 lines matched in a first run, base
and fine-tuned alike). The model has to write the newline itself; a continuation of the previous line
does not count.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedTokenizerBase

from .conjugate import greedy_outputs


def first_line(generated: str) -> str:
    """The generated text up to its first newline, without trailing whitespace."""
    return generated.split("\n", 1)[0].rstrip()


def started_line(generated: str) -> str | None:
    """The first non-blank line a continuation starts after the newline(s) it begins with; None if it does not
    begin with a newline (it continued the previous line instead)."""
    if not generated.startswith("\n"):
        return None
    return first_line(generated.lstrip("\n"))


def line_exact_match(model: nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[tuple[str, str]],
                     max_new_tokens: int = 32, batch_size: int = 8, max_tokens: int | None = None) -> dict[str, float]:
    """`{"exact_match": share of lines reproduced exactly, "count": examples}` for (prefix, line) pairs.

    Each prefix ends in a newline (see the module docstring for why it is cut off before generating). A line
    longer than `max_new_tokens` tokens (with its newline) cannot match; `max_tokens` keeps the last tokens of a
    longer prefix (the training `max_length`, as the data module cuts test prefixes).
    """
    if not examples:
        raise ValueError("No completion examples to score; check the test files (test_size) and completions_per_file.")
    outputs = greedy_outputs(model, tokenizer, [prefix.rstrip("\n") for prefix, _ in examples], max_new_tokens,
                             batch_size, max_tokens)
    hits = sum(started_line(output) == line.rstrip() for output, (_, line) in zip(outputs, examples))
    return {"exact_match": hits / len(examples), "count": float(len(examples))}
