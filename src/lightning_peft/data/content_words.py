"""Which response tokens begin a content word: where possibility exploration's unlikelihood applies.

"Improving Linguistic Diversity of Large Language Models with Possibility Exploration Fine-Tuning"
(Mai et al. 2024, https://arxiv.org/abs/2412.03343) pushes down a mismatched response only on its
content words, so that the function words every reply shares ("I", "the", "you") stay likely.

Our definition (the reference code uses NLTK's English stop-word list and punctuation, and the
first sub-token of each remaining word): a *word* is a run of letters, digits and underscores,
with inner apostrophes kept ("don't"); it is a *content word* unless its lowercase form is in
`STOP_WORDS` (English function words: pronouns, articles, auxiliaries, prepositions,
conjunctions, contractions); its *lead token* is the token whose character span holds the word's
first character. Punctuation is never a content word. Needs a fast tokenizer (character offsets).
"""

from __future__ import annotations

import re
from typing import Any

from lightning_peft.data.errors import DataConfigError

_WORD = re.compile(r"\w+(?:'\w+)*")

STOP_WORDS = frozenset("""
a about above after again against ain all am an and any are aren't as at be because been before being below between
both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few for from
further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his how
how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more most mustn't my myself no nor not
now of off on once only or other ought our ours ourselves out over own same shan't she she'd she'll she's should
shouldn't so some such than that that's the their theirs them themselves then there there's these they they'd
they'll they're they've this those through to too under until up very was wasn't we we'd we'll we're we've were
weren't what what's when when's where where's which while who who's whom why why's will with won't would wouldn't
you you'd you'll you're you've your yours yourself yourselves oh yes yeah okay ok well
""".split())


def content_words(text: str) -> list[tuple[int, str]]:
    """(start character, word) of every content word of `text`, in order."""
    return [(m.start(), m.group()) for m in _WORD.finditer(text) if m.group().lower() not in STOP_WORDS]


def lead_token_mask(texts: list[str], tokenizer: Any) -> list[list[int]]:
    """Per text, 1 on each token that begins a content word and 0 elsewhere; the tokens are
    `tokenizer(text, add_special_tokens=False)`'s, so the mask lines up with those ids."""
    if not getattr(tokenizer, "is_fast", False):  # a transformers tokenizer, not one of our objects
        raise DataConfigError("Finding content-word tokens needs character offsets, which only fast tokenizers give; "
                              "load the model's tokenizer with use_fast=True.")
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    masks = []
    for text, offsets in zip(texts, encoded["offset_mapping"]):
        mask = [0] * len(offsets)
        position = 0
        for start, _ in content_words(text):
            while position < len(offsets) and offsets[position][1] <= start:
                position += 1
            if position < len(offsets):
                mask[position] = 1
        masks.append(mask)
    return masks
