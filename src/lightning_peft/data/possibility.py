"""Contexts with several distinct responses, for Possibility Exploration Fine-Tuning.

"Improving Linguistic Diversity of Large Language Models with Possibility Exploration Fine-Tuning"
(Mai et al. 2024, https://arxiv.org/abs/2412.03343; reference code mailong25/peft_diversity) trains
on contexts that each have several valid responses: the prompt asks for "the response that
corresponds to possibility number #k", with a different k (drawn without replacement from 1..9) for
each of the context's responses. `PossibilityData` groups (context, response) records by their
context (e.g. `movie_dialog` statements that occur with several distinct replies, such as "hi." or
"where've you been?"), draws the possibility numbers, and serves one context per example; the
rows each context becomes are in `data/possibility_batches.py`. Splits are by context, so held-out
replies belong to held-out contexts.

Our choices: the draw of possibility numbers (and of which responses a context with more than
`responses_per_context` keeps) is seeded per context and fixed for the run (the reference draws
anew for each batch; over one epoch, its setting, each context is seen once either way); two
responses are the same when equal after lowercasing and stripping.
"""

from __future__ import annotations

import random
from typing import Any, Union

from lightning_peft.data.base import Record, TokenizedDataModule, require_columns
from lightning_peft.data.content_words import lead_token_mask
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.formats import InputFormat, fill, template_fields
from lightning_peft.data.possibility_batches import PAIR_COLUMNS, ContextGroups, PossibilityCollator
from lightning_peft.data.tokenized import Store, flatten

MAX_POSSIBILITY = 9  # the paper's range of possibility numbers, 1..9
DEFAULT_TEMPLATE = ("Given this line of a movie dialogue:\n\n{context}\n\nThink about all the different ways the other "
                    "person might reply, and then give the reply that corresponds to possibility number #{possibility}.")


def check_template(template: str) -> None:
    """A possibility prompt must place the context and the possibility number, else k could not steer anything."""
    fields = template_fields(template)
    if "possibility" not in fields:
        raise DataConfigError(f"prompt_template {template!r} has no {{possibility}} slot, so every response would get "
                              "the same prompt; put '... possibility number #{possibility}' in it.")
    if fields - {"possibility", "context"} or "context" not in fields:
        raise DataConfigError(f"prompt_template {template!r} must fill exactly {{context}} and {{possibility}} (it "
                              f"names {', '.join(sorted(fields))}).")


def group_responses(records: list[Record], context_column: str, response_column: str) -> dict[str, list[str]]:
    """Context -> its distinct responses, both stripped, in order of first appearance."""
    groups: dict[str, dict[str, str]] = {}
    for record in records:
        context, response = str(record[context_column]).strip(), str(record[response_column] or "").strip()
        if context and response:
            groups.setdefault(context, {}).setdefault(response.lower(), response)
    return {context: list(responses.values()) for context, responses in groups.items()}


class PossibilityData(TokenizedDataModule):
    """Batches of contexts with several responses, each response under its own possibility number.

    Batch: `{"input_ids", "attention_mask", "labels", "unlikelihood_labels"}` (see
    `lightning_peft.data.possibility_batches`); the task is `lightning_peft.tasks.PossibilityExploration`.
    With `max_negatives: 0` the rows are the matching pairs only, which `CausalLMSFT` trains as plain SFT.

    Args:
        dataset: Catalog name (default `movie_dialog`), a local file or Hub dataset of (context, response) records.
        tokenizer: Model name or tokenizer (a fast one); may be null if the CLI links it from the model.
        context_column: Column holding the context (the prompt's `{context}`).
        response_column: Column holding a response.
        prompt_template: Format string with `{context}` and `{possibility}` (the number k).
        chat_template: Write the filled template as the user turn of the tokenizer's chat template.
        min_responses: Keep only contexts with at least this many distinct responses (>= 2).
        responses_per_context: Use at most this many responses per context (a seeded sample), each with its own
            possibility number, so at most 9.
        max_negatives: Cap on mismatched (prompt_k, response_j) rows per context (the paper's cap on negatives).
        max_length: Longest row in tokens; the prompt is cut from the left first.
        **shared: batch_size (contexts per batch), eval_batch_size, val_size, test_size, max_train_examples,
            max_eval_examples, split_seed, order_seed, ... (see `TokenizedDataModule`); sizes count contexts.

    Example::

        dm = PossibilityData("movie_dialog", tokenizer="smollm2-135m", min_responses=3, batch_size=2)
    """

    accepted_kinds = ("sft",)

    def __init__(
        self,
        dataset: Union[str, Any] = "movie_dialog",
        tokenizer: Union[str, Any, None] = None,
        context_column: str = "prompt",
        response_column: str = "response",
        prompt_template: str = DEFAULT_TEMPLATE,
        chat_template: bool = True,
        min_responses: int = 3,
        responses_per_context: int = 4,
        max_negatives: int = 6,
        max_length: int = 128,
        **shared: Any,
    ) -> None:
        super().__init__(dataset, tokenizer, **shared)
        check_template(prompt_template)
        if not isinstance(min_responses, int) or min_responses < 2:
            raise DataConfigError(f"min_responses must be an integer >= 2 (a context with one response has nothing to "
                                  f"tell possibilities apart), got {min_responses!r}.")
        if not isinstance(responses_per_context, int) or not 2 <= responses_per_context <= MAX_POSSIBILITY:
            raise DataConfigError(f"responses_per_context must be an integer from 2 to {MAX_POSSIBILITY} (possibility "
                                  f"numbers are 1..{MAX_POSSIBILITY}), got {responses_per_context!r}.")
        if not isinstance(max_negatives, int) or max_negatives < 0:
            raise DataConfigError(f"max_negatives must be an integer >= 0 (0: no mismatched rows), got {max_negatives!r}.")
        if not isinstance(max_length, int) or max_length < 2:
            raise DataConfigError(f"max_length must be an integer >= 2 (prompt and response), got {max_length!r}.")
        self.context_column, self.response_column = context_column, response_column
        self.prompt_template, self.chat_template = prompt_template, chat_template
        self.min_responses, self.responses_per_context = min_responses, responses_per_context
        self.max_negatives, self.max_length = max_negatives, max_length

    @property
    def input_length_limit(self) -> int:
        return self.max_length

    @property
    def input_format(self) -> InputFormat:
        """The model reads the filled possibility prompt (`prompt_text`) as its input."""
        return InputFormat(column="prompt", template="{prompt}", slot="prompt", chat_template=self.chat_template,
                           max_length=self.max_length)

    def prompt_text(self, context: str, possibility: int) -> str:
        """The prompt (before any chat template) that asks for possibility number `possibility` of `context`."""
        return fill(self.prompt_template, {"context": context, "possibility": possibility}, "prompt_template")

    def prepare_records(self, records: list[Record]) -> list[Record]:
        if not records:
            raise DataConfigError(f"Dataset {self.dataset!r} is empty; point dataset at a file with examples.")
        require_columns(records, [self.context_column], self.dataset, "context_column")
        require_columns(records, [self.response_column], self.dataset, "response_column")
        groups = group_responses(records, self.context_column, self.response_column)
        kept = {c: responses for c, responses in groups.items() if len(responses) >= self.min_responses}
        if not kept:
            most = max((len(r) for r in groups.values()), default=0)
            raise DataConfigError(f"No context of {self.dataset!r} has {self.min_responses} or more distinct responses "
                                  f"(the most is {most}); lower min_responses (>= 2) or use data with repeated contexts.")
        return [self._drawn(context, responses) for context, responses in kept.items()]

    def _drawn(self, context: str, responses: list[str]) -> Record:
        draw = random.Random(f"{self.split_seed}:{context}")
        chosen = draw.sample(responses, min(len(responses), self.responses_per_context))
        return {"context": context, "responses": chosen,
                "possibilities": draw.sample(range(1, MAX_POSSIBILITY + 1), len(chosen))}

    def cache_fields(self) -> dict[str, Any]:
        chat = getattr(self.tokenizer, "chat_template", None) if self.chat_template else None
        return {"kind": "possibility", "columns": [self.context_column, self.response_column],
                "template": self.prompt_template, "chat_template": chat, "min": self.min_responses,
                "per_context": self.responses_per_context, "seed": self.split_seed,
                "eos": getattr(self.tokenizer, "eos_token_id", None)}

    def _prompt_ids(self, texts: list[str], tokenizer: Any) -> list[list[int]]:
        if self.chat_template:
            texts = [self.input_format.text({"prompt": text}, tokenizer) for text in texts]
        return tokenizer(texts, add_special_tokens=not self.chat_template)["input_ids"]

    def tokenize(self, records: list[Record], tokenizer: Any) -> Store:
        import torch

        if tokenizer.eos_token_id is None:
            raise DataConfigError("Possibility data needs an EOS token to end responses; use a tokenizer that defines one.")
        prompts = [self.prompt_text(r["context"], k) for r in records for k in r["possibilities"]]
        responses = [response for r in records for response in r["responses"]]
        response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
        leads = lead_token_mask(responses, tokenizer)
        columns = {"prompt_ids": self._prompt_ids(prompts, tokenizer),
                   "response_ids": [list(ids) + [tokenizer.eos_token_id] for ids in response_ids],
                   "lead_mask": [mask + [0] for mask in leads]}
        offsets = torch.tensor([0] + [len(r["responses"]) for r in records], dtype=torch.long).cumsum(0)
        store: Store = {"pair_offsets": offsets}
        for column in PAIR_COLUMNS:
            store.update(flatten(columns[column], column))
        return store

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.datasets = {name: data if isinstance(data, ContextGroups) else ContextGroups(data.store, data.indices)
                         for name, data in self.datasets.items()}

    def collator(self) -> PossibilityCollator:
        return PossibilityCollator(self.pad_token_id, self.max_length, self.max_negatives)
