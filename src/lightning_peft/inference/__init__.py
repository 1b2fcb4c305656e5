"""Apply what was trained: classify records and generate text with a trained model.

`loading` turns an exported adapter folder, a merged folder or a plain model name into a
`Runnable` (model, tokenizer, task, input format); `classify` and `generation` run it in batches.
The CLI's `predict`, `generate` and `chat` commands are thin shells around these functions, which
also work from Python on any `transformers` model.
"""

from .classify import classify
from .generation import GenerationSettings, generate_texts, prompt_for, prompt_for_record
from .loading import Runnable, load_folder, load_model
from .decoding import AttributeClassifier, ConditionalBeamProcessor, NgramPriorProcessor, ngram_counts, optimised_cache

__all__ = ["AttributeClassifier", "ConditionalBeamProcessor", "NgramPriorProcessor", "ngram_counts", "optimised_cache",
           "GenerationSettings", "Runnable", "classify", "generate_texts", "load_folder", "load_model", "prompt_for", "prompt_for_record"]
