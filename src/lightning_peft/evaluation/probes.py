"""Catastrophic-forgetting probes on a causal LM, without Lightning.

What a fine-tuned model loses relative to its base (methods.md, "Forgetting and evaluation"):
perplexity on held-out general text, KL from the base's next-token distributions on that text,
and zero-/few-shot accuracy on classification tasks unrelated to the fine-tuning task, scored by
verbalizer (`tasks.VerbalizerClassification`, PET-style). The base's distributions are kept as
top-k log-probabilities, so full fine-tuning needs no second model copy either.
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data import load_records
from ..data.catalog import CATALOG
from ..tasks import VerbalizerClassification


@dataclass(frozen=True)
class ProbeTask:
    """A classification set scored by verbalizer, unrelated to the fine-tuning task.

    Attributes:
        dataset: Catalog name or local file with `text` and `label` columns.
        template: Prompt with `{text}`; the label word is scored right after it.
        label_words: Label -> word (labels not listed use their own name).
        num_examples: How many examples to score (seeded sample; small keeps probing cheap).
        shots: Demonstrations (prompt + word) prepended to each example, drawn from the rest of the set.
        seed: Seed of the sample.
        max_text_chars: Longer texts are cut, so one long SMS cannot dominate the cost.
    """

    dataset: str
    template: str
    label_words: dict[str, str] | None = None
    num_examples: int = 64
    shots: int = 0
    seed: int = 0
    max_text_chars: int = 300


DEFAULT_PROBE_TASKS = (
    ProbeTask("sentiment_movies", "Review: {text}\nIs this review positive or negative? Answer:"),
    ProbeTask("sms_spam", "Message: {text}\nIs this message spam? Answer:", {"ham": "no", "spam": "yes"}),
)


@dataclass
class PreparedProbe:
    """A probe task tokenized once: prompts (unpadded), gold label indices and the bound verbalizer."""

    name: str
    prompts: list[list[int]]
    labels: torch.Tensor
    scorer: VerbalizerClassification


def keep_last(ids: list[int], max_tokens: int | None) -> list[int]:
    """The last `max_tokens` ids (all of them when there is no limit)."""
    return ids[-max_tokens:] if max_tokens else ids


def prepare_probe(task: ProbeTask, tokenizer: PreTrainedTokenizerBase, max_tokens: int | None = None) -> PreparedProbe:
    """Tokenize `task`'s seeded sample; a prompt longer than `max_tokens` (the probed model's input
    limit, e.g. DePT's offset length) keeps its last `max_tokens` tokens, where the answer follows."""
    records = load_records(task.dataset, kind="classification")
    entry = CATALOG.get(task.dataset)
    label_names = list(entry.labels) if entry and entry.labels else sorted({r["label"] for r in records})
    scorer = VerbalizerClassification(label_words=task.label_words)
    scorer.bind(tokenizer, label_names)
    picked = random.Random(task.seed).sample(records, min(len(records), task.num_examples + task.shots))
    demos, examples = picked[: task.shots], picked[task.shots:]

    def render(record: dict, with_answer: bool) -> str:
        prompt = task.template.format(text=str(record["text"])[: task.max_text_chars])
        word = scorer.words[label_names.index(record["label"])]
        return f"{prompt} {word}\n\n" if with_answer else prompt

    context = "".join(render(d, True) for d in demos)
    prompts = [keep_last(tokenizer.encode(context + render(r, False)), max_tokens) for r in examples]
    labels = torch.tensor([label_names.index(r["label"]) for r in examples])
    return PreparedProbe(task.dataset, prompts, labels, scorer)


def _right_padded(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return {"input_ids": ids, "attention_mask": mask}


def verbalizer_accuracy(model: nn.Module, probe: PreparedProbe, pad_id: int, batch_size: int = 16) -> float:
    """Share of examples whose highest-scoring label word is the gold one."""
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(probe.prompts), batch_size):
        batch = _right_padded(probe.prompts[start: start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["labels"] = probe.labels[start: start + batch_size].to(device)
        correct += int((probe.scorer.step(model, batch).preds == batch["labels"]).sum())
    return correct / max(1, len(probe.prompts))


def general_text_chunks(tokenizer: PreTrainedTokenizerBase, dataset: str = "lee_news", num_chunks: int = 8,
                        chunk_tokens: int = 128) -> torch.Tensor:
    """`num_chunks` x `chunk_tokens` token ids of held-out text (the dataset's records in order)."""
    needed, ids = num_chunks * chunk_tokens, []
    for record in load_records(dataset):
        ids.extend(tokenizer.encode(str(record["text"]) + "\n\n", add_special_tokens=False))
        if len(ids) >= needed:
            return torch.tensor(ids[:needed]).view(num_chunks, chunk_tokens)
    raise ValueError(f"{dataset!r} has only {len(ids)} tokens but the probe asks for {needed}; lower num_chunks or chunk_tokens.")


@dataclass
class TextStats:
    """Perplexity of a model on the chunks and its top-k next-token log-probs (the compact base record)."""

    perplexity: float
    topk_logprobs: torch.Tensor  # (chunks, positions, k) float32
    topk_indices: torch.Tensor  # (chunks, positions, k) int32


def coarse_kl(base_logp: torch.Tensor, base_idx: torch.Tensor, current_logp: torch.Tensor) -> torch.Tensor:
    """KL(base || current) per position over the base's top-k tokens plus one "rest" bucket.

    KL(p||q) ~= sum_{i in topk(p)} p_i log(p_i/q_i) + p_r log(p_r/q_r), with p_r = 1 - sum_topk p_i
    (likewise q_r). This is the exact KL of the two distributions coarsened to k+1 outcomes, so it
    is 0 when they agree and, by the data-processing inequality, never exceeds the full KL.
    It is summed in float64 (and returned as float32): a model barely moved from its base has a KL of
    ~1e-9 nats, below float32's rounding of these sums, which could make it come out negative.
    """
    base_logp, current_logp = base_logp.double(), current_logp.double()
    q = current_logp.gather(-1, base_idx.long())
    p_rest = (1 - base_logp.exp().sum(-1)).clamp(min=1e-12)
    q_rest = (1 - q.exp().sum(-1)).clamp(min=1e-12)
    top = (base_logp.exp() * (base_logp - q)).sum(-1)
    return (top + p_rest * (p_rest.log() - q_rest.log())).float()


@torch.no_grad()
def text_stats(model: nn.Module, chunks: torch.Tensor, top_k: int = 32, batch_size: int = 4,
               base: TextStats | None = None) -> tuple[TextStats, float | None]:
    """Perplexity and top-k log-probs on `chunks`; with `base`, also the mean coarse KL from it."""
    device = next(model.parameters()).device
    nll, count, kls, top_lp, top_ix = 0.0, 0, [], [], []
    for start in range(0, len(chunks), batch_size):
        ids = chunks[start: start + batch_size].to(device)
        # a soft prompt's positions come first in the logits: keep the last ids.shape[1] (the text's)
        logp = F.log_softmax(model(input_ids=ids).logits[:, -ids.shape[1]:-1].float(), dim=-1)
        nll -= float(logp.gather(-1, ids[:, 1:, None]).sum())
        count += ids[:, 1:].numel()
        values, indices = logp.topk(top_k, dim=-1)
        top_lp.append(values.cpu()), top_ix.append(indices.int().cpu())
        if base is not None:
            stop = start + len(ids)
            kls.append(coarse_kl(base.topk_logprobs[start:stop].to(device), base.topk_indices[start:stop].to(device), logp).cpu())
    stats = TextStats(math.exp(nll / count), torch.cat(top_lp), torch.cat(top_ix))
    return stats, (float(torch.cat(kls).mean()) if base is not None else None)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module | None]:
    """Yield a peft model with its adapters off for the block (the base, no copy); None for any other model."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        with model.disable_adapter():
            yield model
    else:
        yield None


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """eval() and no_grad for the block, then every submodule back in the mode it had."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


@dataclass
class ForgettingProbes:
    """The probe sets, prepared once for a tokenizer; `measure` scores a model, `compare` makes deltas."""

    tokenizer: PreTrainedTokenizerBase
    text_dataset: str = "lee_news"
    num_chunks: int = 8
    chunk_tokens: int = 128
    top_k: int = 32
    tasks: tuple[ProbeTask, ...] = DEFAULT_PROBE_TASKS
    batch_size: int = 8
    max_tokens: int | None = None  # the probed model's input limit: chunks and prompts are cut to it
    chunks: torch.Tensor = field(init=False)
    probes: list[PreparedProbe] = field(init=False)

    def __post_init__(self) -> None:
        chunk_tokens = min(self.chunk_tokens, self.max_tokens or self.chunk_tokens)
        self.chunks = general_text_chunks(self.tokenizer, self.text_dataset, self.num_chunks, chunk_tokens)
        self.probes = [prepare_probe(task, self.tokenizer, self.max_tokens) for task in self.tasks]

    def measure(self, model: nn.Module, base: TextStats | None = None) -> tuple[dict[str, float], TextStats]:
        """{"perplexity", "kl" (with `base`), "acc/<task>"} and the text stats (to store as the base)."""
        with evaluation_mode(model):
            stats, kl = text_stats(model, self.chunks, self.top_k, max(1, self.batch_size // 2), base)
            result = {"perplexity": stats.perplexity, **({"kl": kl} if kl is not None else {})}
            for probe in self.probes:
                result[f"acc/{probe.name}"] = verbalizer_accuracy(model, probe, self.tokenizer.pad_token_id, self.batch_size)
        return result, stats


def compare(base: dict[str, float], current: dict[str, float]) -> dict[str, float]:
    """Forgetting deltas: perplexity ratio, KL from base, accuracy drop (base - current) per probe task."""
    deltas = {"perplexity_ratio": current["perplexity"] / base["perplexity"], "kl_from_base": current.get("kl", 0.0)}
    for key, value in base.items():
        if key.startswith("acc/"):
            deltas[f"acc_drop/{key[4:]}"] = value - current[key]
    return deltas
