"""Generate text with a trained model: prompts written as in training, batched, with the KV cache.

Decoding is `transformers`' own `generate` (greedy, sampling or beam search, KV cache on), with the
decoding-time methods of `decoding` (style prior, conditional beam search, hidden-state optimisation); this module only
writes the prompts the way the model was trained to read them (`prompt_for`), batches them with
left padding, and returns the new text alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from .decoding import Decoding, check_decoding_options
from .errors import GenerationError
from .loading import Runnable


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode.

    Args:
        max_new_tokens: The most tokens to generate per prompt.
        do_sample: Sample from the distribution (with temperature / top_p / top_k) instead of greedy decoding.
        temperature: Sampling temperature (> 0; lower is more deterministic).
        top_p: Nucleus sampling: keep the smallest token set with this much probability (0 < top_p <= 1).
        top_k: Keep only the k most likely tokens when sampling (0: no limit).
        repetition_penalty: > 1 discourages repeating tokens (1: off).
        seed: Seed of the sampler, so a sampled answer can be reproduced.
        num_beams: Beam search with this many beams (1: greedy or sampling).
        style_corpus: n-gram style prior: a text file or dataset (catalog name, data file) whose style to push
            toward (`ngram_prior`); None: off.
        style_lambda: Weight of the style prior's log-probabilities added to the logits (>= 0; the paper: 0.1).
        style_order: The style prior's highest n-gram order.
        beam_classifier: Conditional beam search: a folder saved by `beam_classifier_training`; its
            log p(attribute | text so far) is added to the beam score (`beam_classifier`). Needs num_beams >= 2.
        beta: Weight of the beam classifier's log-probability (>= 0).
        hso_steps: Hidden-state optimisation: gradient steps on the prompt's cached keys/values before
            generating (`hidden_state_opt`); 0: off.
        hso_lr: Adam's learning rate for those steps.
    """

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int = 0
    num_beams: int = 1
    style_corpus: str | None = None
    style_lambda: float = 0.1
    style_order: int = 3
    beam_classifier: str | None = None
    beta: float = 1.0
    hso_steps: int = 0
    hso_lr: float = 0.01

    def __post_init__(self) -> None:
        check_decoding_options(self)
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if not self.temperature > 0:
            raise GenerationError(f"temperature must be > 0 (e.g. 0.7), got {self.temperature!r}; for greedy decoding "
                                  "leave do_sample false.")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p!r}.")
        if self.top_k < 0 or self.repetition_penalty <= 0:
            raise GenerationError(f"top_k must be >= 0 and repetition_penalty > 0, got {self.top_k!r} and "
                                  f"{self.repetition_penalty!r}.")

    def kwargs(self, pad_token_id: int) -> dict[str, Any]:
        """Keyword arguments for `model.generate`."""
        chosen: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "use_cache": True,
                                  "pad_token_id": pad_token_id, "repetition_penalty": self.repetition_penalty}
        if self.num_beams > 1:
            chosen["num_beams"] = self.num_beams
        if self.do_sample:
            chosen.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # the model's generation_config may carry sampling defaults; greedy ignores them, say so to transformers
            chosen.update(temperature=None, top_p=None, top_k=None)
        return chosen


def uses_chat_template(runnable: Runnable) -> bool:
    """Prompts go through the chat template: the run trained with it, or a plain model whose tokenizer has one."""
    fmt = runnable.input_format
    return fmt.chat_template if fmt is not None else bool(runnable.tokenizer.chat_template)


def prompt_for(runnable: Runnable, text: str, system: str | None = None,
               history: Sequence[dict[str, str]] = ()) -> str:
    """The text the model reads for a user's `text`, written as the model was trained to read it.

    With a chat template: `system`, the earlier turns (`history`, role/content dicts) and `text`
    as the user's turn, plus the generation prompt. Otherwise the training template filled with
    `text` (or `text` itself for a plain model).
    """
    if uses_chat_template(runnable):
        if not runnable.tokenizer.chat_template:
            raise GenerationError("The run trained with a chat template but this tokenizer has none; load the "
                                  "tokenizer saved with the export.")
        messages = [*([{"role": "system", "content": system}] if system else []), *history,
                    {"role": "user", "content": text}]
        return runnable.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if system or history:
        raise GenerationError("A system message and earlier turns need a chat template, which this model was not "
                              "trained with; drop --system, or use a model whose tokenizer has a chat template.")
    fmt = runnable.input_format
    return fmt.text({fmt.column: text}) if fmt is not None else text


def chat_prompt(runnable: Runnable, text: str, system: str | None, history: list[dict[str, str]],
                max_tokens: int) -> str:
    """`prompt_for` with the earlier turns, dropping the oldest exchanges (in place) until it fits in `max_tokens`.

    The system message and the new turn always stay; with no history left the prompt is returned
    as it is (generation then cuts it like any over-long prompt).
    """
    while True:
        prompt = prompt_for(runnable, text, system, history)
        if not history or len(runnable.tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= max_tokens:
            return prompt
        del history[:2]  # one user turn and its answer


def prompt_for_record(runnable: Runnable, record: dict[str, Any]) -> str:
    """The text the model reads for a whole input record, written with the training format (every field
    its template names filled from the record); a record's `text` as it is for a plain model."""
    fmt = runnable.input_format
    if fmt is None:
        return prompt_for(runnable, str(record["text"]))
    return fmt.text(record, runnable.tokenizer)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def generate_texts(runnable: Runnable, prompts: Sequence[str], settings: GenerationSettings = GenerationSettings(),
                   batch_size: int = 8, streamer: Any = None) -> Iterator[str]:
    """The generated continuation of each prompt (already written by `prompt_for`), in order.

    Args:
        runnable: The model and tokenizer.
        prompts: Texts as the model reads them.
        settings: Decoding settings.
        batch_size: Prompts decoded together (left-padded, one KV cache per batch; 1 with hidden-state optimisation).
        streamer: A `transformers` streamer (e.g. `TextStreamer`) that receives tokens as they are
            made; only with one prompt.
    """
    if streamer is not None and len(prompts) != 1:
        raise GenerationError("Streaming shows one answer as it is written; give one prompt, or no streamer.")
    tokenizer, model = runnable.tokenizer, runnable.model
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    add_special = not uses_chat_template(runnable)  # a chat template writes its own special tokens
    torch.manual_seed(settings.seed)
    # The training length limit: a longer prompt loses its beginning, as in training (SFT cuts prompts from the left).
    limit = runnable.input_format.max_length if runnable.input_format is not None else None
    side, cut = tokenizer.padding_side, tokenizer.truncation_side
    decoding = Decoding.build(runnable, settings)
    tokenizer.padding_side = tokenizer.truncation_side = "left"  # every row ends at the last column, where decoding continues
    try:
        # hidden-state optimisation splits each prompt in half: one at a time, so left padding cannot move the split
        for chunk in _chunks(list(prompts), 1 if settings.hso_steps else batch_size):
            inputs = tokenizer(list(chunk), return_tensors="pt", padding=True, add_special_tokens=add_special,
                               truncation=limit is not None, max_length=limit).to(device)
            extra = decoding.batch_kwargs(inputs)  # hidden-state optimisation needs gradients: outside inference mode
            with torch.inference_mode():
                out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                     streamer=streamer, **settings.kwargs(pad_id), **extra)
            new = out if runnable.encoder_decoder else out[:, inputs["input_ids"].shape[1]:]
            yield from tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, cut
        decoding.close()
