"""How a record becomes the text a model reads, declared once and saved with what was trained.

Training, `lightning-peft predict` and `lightning-peft generate` must build a model's input the
same way: the same template around the same column, or the same chat template, cut to the same
length. A data module states its `InputFormat`; fit records it in checkpoints and exports
(`lightning_peft.json`), so applying a trained adapter needs no copy of the training config.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from lightning_peft.data.errors import DataConfigError

Record = dict[str, Any]


def fill(template: str, record: Record, argument: str) -> str:
    """`template` filled from `record`; a field the records lack is one `DataConfigError` naming `argument`."""
    try:
        return template.format(**record)
    except (KeyError, IndexError) as err:
        raise DataConfigError(
            f"{argument} {template!r} uses the field {err} that the records lack (they have "
            f"{', '.join(record)}); use only those names in braces."
        ) from None


def template_fields(template: str) -> set[str]:
    """The record fields a format string fills (`"{text} {title.upper}"` -> {"text", "title"}).

    A malformed template (an unmatched brace) is one `DataConfigError`.
    """
    if not isinstance(template, str):
        raise DataConfigError(f"template must be a string with a {{text}} slot, got {template!r}.")
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as error:
        raise DataConfigError(f"template {template!r} is not a valid format string ({error}); write literal braces "
                              "as {{ and }}.") from None


def check_text_slot(template: str, argument: str = "template") -> None:
    """A classification template must place the input with `{text}`, else every input would be the same text."""
    if "text" not in template_fields(template):
        raise DataConfigError(f"{argument} {template!r} has no {{text}} slot, so every input would be the same text; "
                              "put {text} where the input goes (e.g. 'Question: {text}\\nAnswer:').")


def check_no_label_slot(template: str, label_column: str, argument: str = "template") -> None:
    """A classification template must not fill in the answer: `{label}` would put the true class into every input."""
    if label_column != "text" and label_column in template_fields(template):  # {text} is always the input
        raise DataConfigError(f"{argument} {template!r} fills {{{label_column}}}, the class being predicted, into every "
                              "input (training, pool and test alike), so any score would be fake; remove it and keep "
                              "{text} and the records' other fields.")


@dataclass(frozen=True)
class InputFormat:
    """The input side of a task, as the data module built it for training.

    Args:
        column: The record field holding the input (a classification text, an SFT prompt, a seq2seq source).
        template: Python format string around it; the input fills `{<slot>}`, other fields fill their own names.
        slot: The placeholder the input fills in `template` ("text", or "prompt" for SFT data).
        chat_template: The input is the user turn of the tokenizer's chat template, with the generation
            prompt after it; `template` is not used.
        max_length: The most tokens of input the model was trained on (None: no limit).
    """

    column: str = "text"
    template: str = "{text}"
    slot: str = "text"
    chat_template: bool = False
    max_length: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "InputFormat":
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})  # older exports may add fields

    def with_template(self, template: str) -> "InputFormat":
        return replace(self, template=template)

    def fields(self) -> list[str]:
        """The record fields an input needs: the input column, plus the other names the template fills."""
        if self.chat_template:
            return [self.column]
        named = sorted(template_fields(self.template) - {self.slot})
        return list(dict.fromkeys([self.column, *named]))

    def missing_column(self, record: Record) -> Optional[str]:
        """One sentence saying which fields `record` lacks for this format, or None when it has them all."""
        missing = [name for name in self.fields() if name not in record]
        if not missing:
            return None
        return (f"the record has no {', '.join(map(repr, missing))} field (it has {', '.join(map(repr, record)) or 'none'}); "
                f"give each input with the fields {', '.join(map(repr, self.fields()))}.")

    def text(self, record: Record, tokenizer: Any = None, argument: str = "template") -> str:
        """The text the model reads for `record` (a chat-formatted string when `chat_template`)."""
        value = str(record[self.column])
        if not self.chat_template:
            return fill(self.template, {**record, self.slot: value}, argument)
        if tokenizer is None or not tokenizer.chat_template:
            raise DataConfigError("chat_template=true but the tokenizer has no chat template; set it to false.")
        return tokenizer.apply_chat_template([{"role": "user", "content": value}], tokenize=False,
                                             add_generation_prompt=True)

    def encode_keeping_cue(self, records: list[Record], tokenizer: Any, argument: str = "template") -> list[list[int]]:
        """Token ids of every record; one longer than `max_length` loses the end of its input, never the template.

        The cue after the input (e.g. "Answer type:") is where a verbalizer reads its answer, so
        it must survive truncation.
        """
        texts = [self.text(r, tokenizer, argument) for r in records]
        ids = tokenizer(texts, add_special_tokens=not self.chat_template, verbose=False)["input_ids"]
        if self.max_length is None:
            return ids
        for i, sequence in enumerate(ids):
            if len(sequence) > self.max_length:
                ids[i] = self._shorten(records[i], tokenizer, argument, len(sequence))
        return ids

    def _shorten(self, record: Record, tokenizer: Any, argument: str, length: int) -> list[int]:
        """The record's ids with as much of its input as fits in `max_length` around the template."""
        text_ids = tokenizer(str(record[self.column]), add_special_tokens=False, verbose=False)["input_ids"]
        keep = max(0, len(text_ids) - (length - self.max_length))
        while True:
            shortened = {**record, self.column: tokenizer.decode(text_ids[:keep], skip_special_tokens=True)}
            ids = tokenizer(self.text(shortened, tokenizer, argument), add_special_tokens=not self.chat_template,
                            verbose=False)["input_ids"]
            if len(ids) <= self.max_length:
                return ids
            if keep == 0:
                raise DataConfigError(
                    f"The {argument} {self.template!r} alone takes {len(ids)} tokens, more than max_length={self.max_length}; "
                    "raise max_length or shorten the template."
                )
            keep = max(0, keep - (len(ids) - self.max_length))
