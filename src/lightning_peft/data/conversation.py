"""Conversations (`messages`: a list of `{"role", "content"}`) written through the tokenizer's chat template,
with a mask that marks the assistant replies: SFT learns the replies, never the user or system turns.

Finding the replies: the chat template is rendered for each prefix of the conversation. The text of
the assistant turn `i` is what `messages[: i + 1]` adds to `messages[:i]` with the generation prompt
(e.g. `<|im_start|>assistant\\n`), so the reply is its content plus the template's end-of-turn
token (`<|im_end|>`), which the model must learn to stop; whitespace after that is not learned.
This needs a template that writes a conversation turn by turn (each prefix's text begins the next
one's), which ChatML-style templates such as SmolLM2's do; one that rewrites earlier turns (e.g.
drops an earlier turn's reasoning) is refused in one sentence. Transformers' own
`return_assistant_tokens_mask` needs `{% generation %}` markers that most templates lack.

The pieces (context, reply, context, ...) are tokenized one by one, exactly as `generate` later
tokenizes a prompt that ends with the generation prompt and lets the model continue.
"""

from __future__ import annotations

from typing import Any

from lightning_peft.data.errors import DataConfigError

Message = dict[str, str]


def check_messages(value: Any, where: str) -> list[Message]:
    """`value` as a conversation, or one `DataConfigError` saying how `where` (e.g. "example 3 of 'x'") is malformed."""
    if not isinstance(value, list) or not value:
        raise DataConfigError(f"The messages of {where} must be a non-empty list of {{\"role\", \"content\"}} objects, "
                              f"got {str(value)[:60]!r}.")
    for turn, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise DataConfigError(f"Message {turn} of {where} must be an object with string 'role' and 'content', "
                                  f"got {str(message)[:60]!r}; text-only content is supported.")
    return value


def has_reply(messages: list[Message]) -> bool:
    """True when some assistant turn has non-blank content (else the example teaches nothing)."""
    return any(m["role"] == "assistant" and m["content"].strip() for m in messages)


def _render(tokenizer: Any, messages: list[Message], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def pieces(messages: list[Message], tokenizer: Any, where: str) -> list[tuple[str, bool]]:
    """The chat-template text of a conversation cut into `(text, is_reply)` pieces, in order."""
    full = _render(tokenizer, messages)
    result: list[tuple[str, bool]] = []
    done = 0
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if turn == 0:
            raise DataConfigError(f"{where} starts with an assistant turn, which has no prompt to answer; begin it "
                                  "with a system or user turn.")
        before = _render(tokenizer, messages[:turn], generation_prompt=True)
        through = _render(tokenizer, messages[: turn + 1])
        if not (full.startswith(through) and through.startswith(before) and done <= len(before)):
            raise DataConfigError(
                f"The tokenizer's chat template does not write {where} turn by turn (the text before assistant turn "
                f"{turn} changes when later turns are added), so its replies cannot be located; use a model whose "
                f"template writes each turn once, such as a ChatML one."
            )
        end = len(before) + len(full[len(before):len(through)].rstrip())
        result += [(full[done:len(before)], False), (full[len(before):end], True)]
        done = end
    result.append((full[done:], False))
    return [(text, is_reply) for text, is_reply in result if text]


def encode(conversations: list[list[Message]], tokenizer: Any, names: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of each conversation and its loss mask (1 on reply tokens), `names[i]` naming it in errors."""
    cut = [pieces(messages, tokenizer, name) for messages, name in zip(conversations, names)]
    flat = [text for conversation in cut for text, _ in conversation]
    encoded = iter(tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter(())
    all_ids, all_masks = [], []
    for conversation in cut:
        ids, mask = [], []
        for _, is_reply in conversation:
            piece = list(next(encoded))
            ids += piece
            mask += [int(is_reply)] * len(piece)
        all_ids.append(ids)
        all_masks.append(mask)
    return all_ids, all_masks


def truncate(ids: list[int], mask: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit a conversation into `max_length` tokens, keeping at least part of a reply.

    The end is cut first (later turns go). When the first reply starts beyond `max_length`, the
    context before it is cut from the left instead, keeping at most half the budget when the reply
    itself is long, as `sft.truncate_pair` does for a prompt and its response.
    """
    if len(ids) <= max_length:
        return ids, mask
    first = mask.index(1) if 1 in mask else len(ids)
    if first < max_length:
        return ids[:max_length], mask[:max_length]
    reply_end = next((k for k in range(first, len(mask)) if not mask[k]), len(mask))
    reply = reply_end - first
    keep_context = min(first, max(max_length - reply, max_length // 2))
    start = first - keep_context
    return ids[start:start + max_length], mask[start:start + max_length]
