"""Instruction / dialogue SFT data: prompt + response + EOS, loss on the response tokens only; or whole
conversations (`messages_column`) through the chat template, loss on the assistant replies only."""

from __future__ import annotations

from typing import Any, Optional, Union

from lightning_peft.data import conversation, edits
from lightning_peft.data.base import Record, TokenizedDataModule, require_columns
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.formats import InputFormat
from lightning_peft.data.packing import PackingCollator, TokenBudgetBatchSampler
from lightning_peft.data.tokenized import Store, flatten


def truncate_pair(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit prompt + response into `max_length`, cutting the prompt from the left first.

    If the response alone is too long, the prompt keeps at most half the budget (its end) and the
    response is cut at the right, so some response tokens (the training signal) always remain.
    """
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    keep_prompt = min(len(prompt), max(max_length - len(response), max_length // 2))
    prompt = prompt[len(prompt) - keep_prompt:]
    return prompt, response[: max_length - keep_prompt]


class SFTData(TokenizedDataModule):
    """Causal-LM SFT batches `{"input_ids", "attention_mask", "labels"}`; `labels` is -100 on prompt and padding.

    With `messages_column` each record is a conversation (a list of `{"role", "content"}`, as in
    chat datasets on the Hub), written whole through the tokenizer's chat template; `labels` is -100
    everywhere except on the assistant replies (each reply's content and end-of-turn token), see
    `lightning_peft.data.conversation`.

    With `packing: true` each batch is one padding-free row `{"input_ids", "position_ids", "labels"}` of
    shape `[1, total tokens]` instead (see `lightning_peft.data.packing`); count its tokens as
    `input_ids.numel()`, since there is no `attention_mask`.

    Args:
        dataset: Catalog name of an SFT dataset (e.g. movie_dialog), of a classification set used as
            instructions (set prompt_column: text, response_column: label), a local .jsonl/.json/.csv/.parquet
            file, a Hub dataset name, or a `datasets.Dataset`/`DatasetDict` (see `TokenizedDataModule`).
        tokenizer: Model name or tokenizer object; may be null here if the CLI links it from the model.
        prompt_column: Column holding the prompt; the template sees it as `{prompt}`.
        response_column: Column holding the response the model learns to produce.
        prompt_template: Python format string for the prompt, filled from the record (ignored with chat_template).
        chat_template: Wrap the prompt as a user turn with the tokenizer's chat template plus the generation prompt.
        max_length: Maximum tokens per example; the prompt is cut from the left first.
        **shared: batch_size, eval_batch_size, val_size, test_size, max_train_examples, max_eval_examples,
            split_seed, order_seed, bucket_by_length, num_workers (see `TokenizedDataModule`).
        packing: Concatenate each batch's examples into one row without padding (position ids restart per
            example; attention and loss never cross examples). Needs a model whose attention honours packed
            position ids (transformers >= 4.53 decoder-only models with sdpa, eager, flex or flash attention);
            with sdpa/eager a row's attention costs its length squared, so on a CPU lightning-peft's modules pick
            "packed_sdpa", which attends per example (see lightning_peft.attention).
        max_tokens_per_batch: With packing, fill each training batch up to this many tokens instead of taking
            batch_size examples (at least max_length); null keeps batch_size examples per batch.
        messages_column: Column holding each record's conversation (e.g. "messages"); then prompt_column,
            response_column, prompt_template and chat_template are not used: the tokenizer's chat template
            writes the conversation, and a conversation longer than max_length loses its last turns first.
            Null (default): prompt/response records. `predict` and `generate` later wrap their input as a
            user turn through the same chat template.
        edit_targets: Rewriting tasks (Kaneko & Okazaki 2023, see `lightning_peft.data.edits`): "from_rewrite" turns
            each response (the rewrite of the prompt) into word-span edits over the prompt, serialised as
            "start end replacement|..." ("none" for no change), which the model learns instead of the whole rewrite;
            "given": the responses already hold such edits, checked against their prompts. Null: plain responses.
        end_with_eos: Append EOS to each response, so the model learns to stop; false for text that continues
            (e.g. code chunks cut at arbitrary lines).

    Example::

        dm = SFTData("movie_dialog", tokenizer="smollm2-135m", chat_template=True, max_train_examples=2000)
    """

    accepted_kinds = ("sft", "classification")  # a labelled set as instructions: text -> label word
    collate_kind = "sft"

    def __init__(
        self,
        dataset: Union[str, Any] = "movie_dialog",
        tokenizer: Union[str, Any, None] = None,
        prompt_column: str = "prompt",
        response_column: str = "response",
        prompt_template: str = "{prompt}\n",
        chat_template: bool = False,
        max_length: int = 256,
        packing: bool = False,
        max_tokens_per_batch: Optional[int] = None,
        messages_column: Optional[str] = None,
        edit_targets: Optional[str] = None,
        end_with_eos: bool = True,
        **shared: Any,
    ) -> None:
        super().__init__(dataset, tokenizer, **shared)
        if not isinstance(max_length, int) or max_length < 2:
            raise DataConfigError(f"max_length must be an integer >= 2 (prompt and response), got {max_length!r}.")
        self.prompt_column = prompt_column
        self.response_column = response_column
        self.prompt_template = prompt_template
        self.chat_template = chat_template
        self.max_length = max_length
        if max_tokens_per_batch is not None:
            if not packing:
                raise DataConfigError("max_tokens_per_batch applies to packed batches only; set packing: true or "
                                      "remove max_tokens_per_batch.")
            if not isinstance(max_tokens_per_batch, int) or max_tokens_per_batch < max_length:
                raise DataConfigError(f"max_tokens_per_batch={max_tokens_per_batch!r} must be an integer >= max_length "
                                      f"({max_length}), so every example fits in a batch.")
        self.packing = packing
        self.max_tokens_per_batch = max_tokens_per_batch
        if messages_column is not None and (not isinstance(messages_column, str) or not messages_column):
            raise DataConfigError(f"messages_column must be a column name or null, got {messages_column!r}.")
        self.messages_column = messages_column
        if edit_targets is not None and edit_targets not in edits.EDIT_TARGETS:
            raise DataConfigError(f"edit_targets must be one of {', '.join(edits.EDIT_TARGETS)} or null, got {edit_targets!r}.")
        if edit_targets is not None and messages_column is not None:
            raise DataConfigError("edit_targets applies to prompt/response records, not to messages_column; remove one.")
        self.edit_targets = edit_targets
        self.end_with_eos = end_with_eos


    @property
    def input_length_limit(self) -> int:
        return self.max_length

    @property
    def input_format(self) -> InputFormat:
        return InputFormat(column=self.prompt_column, template=self.prompt_template, slot="prompt",
                           chat_template=self.chat_template or self.messages_column is not None,
                           max_length=self.max_length)

    def collator(self) -> Any:
        return PackingCollator() if self.packing else super().collator()

    def batch_sampler(self, data: Any, train: bool) -> Any:
        if train and self.max_tokens_per_batch is not None:
            return TokenBudgetBatchSampler(data.lengths(), self.max_tokens_per_batch, shuffle=True, seed=self.order_seed)
        return super().batch_sampler(data, train)

    def prepare_records(self, records: list[Record]) -> list[Record]:
        if self.messages_column is None:
            pairs = self.pair_records(records, (self.prompt_column, "prompt_column"),
                                      (self.response_column, "response_column"))
            if self.edit_targets is None:
                return pairs
            return edits.edit_records(pairs, self.prompt_column, self.response_column, self.edit_targets, self.dataset)
        if not records:
            raise DataConfigError(f"Dataset {self.dataset!r} is empty; point dataset at a file with examples.")
        require_columns(records, [self.messages_column], self.dataset, "messages_column")
        for number, record in enumerate(records):
            conversation.check_messages(record[self.messages_column], f"example {number} of {self.dataset!r}")
        return [r for r in records if conversation.has_reply(r[self.messages_column])]  # nothing to learn otherwise

    def cache_fields(self) -> dict[str, Any]:
        if self.messages_column is not None:
            return {"kind": "sft-messages", "column": self.messages_column, "max_length": self.max_length,
                    "chat_template": self.resolve_tokenizer().chat_template}
        chat = getattr(self.tokenizer, "chat_template", None) if self.chat_template else None
        return {"kind": "sft", "columns": [self.prompt_column, self.response_column],
                "template": self.prompt_template, "chat_template": chat, "max_length": self.max_length,
                "eos": getattr(self.tokenizer, "eos_token_id", None), "edit_targets": self.edit_targets,
                "end_with_eos": self.end_with_eos}

    def tokenize(self, records: list[Record], tokenizer: Any) -> Store:
        import torch

        if self.messages_column is not None:
            return self.tokenize_conversations(records, tokenizer)
        if self.end_with_eos and tokenizer.eos_token_id is None:
            raise DataConfigError("SFT needs an EOS token to end responses; use a tokenizer that defines one.")
        texts = [self.input_format.text(r, tokenizer, "prompt_template") for r in records]
        prompts = tokenizer(texts, add_special_tokens=not self.chat_template)
        responses = tokenizer([str(r[self.response_column]) for r in records], add_special_tokens=False)
        input_ids, prompt_lengths = [], []
        eos = [tokenizer.eos_token_id] if self.end_with_eos else []
        for prompt, response in zip(prompts["input_ids"], responses["input_ids"]):
            prompt, response = truncate_pair(list(prompt), list(response) + eos, self.max_length)
            input_ids.append(prompt + response)
            prompt_lengths.append(len(prompt))
        return {**flatten(input_ids, "input_ids"), "prompt_length": torch.tensor(prompt_lengths, dtype=torch.long)}

    def tokenize_conversations(self, records: list[Record], tokenizer: Any) -> Store:
        """`input_ids` and `loss_mask` (1 on assistant replies) of each record's conversation."""
        if not tokenizer.chat_template:
            raise DataConfigError("messages_column needs a tokenizer with a chat template, and this one has none; "
                                  "use a chat model's tokenizer or prompt/response records.")
        names = [f"the conversation of {self.dataset!r} that begins {r[self.messages_column][0]['content'][:40]!r}"
                 for r in records]
        ids, masks = conversation.encode([r[self.messages_column] for r in records], tokenizer, names)
        cut = [conversation.truncate(i, m, self.max_length) for i, m in zip(ids, masks)]
        return {**flatten([i for i, _ in cut], "input_ids"), **flatten([m for _, m in cut], "loss_mask")}
