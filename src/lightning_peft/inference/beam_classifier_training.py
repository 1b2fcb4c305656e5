"""Train the "not degenerate" classifier that conditional beam search adds to the beam score.

    python -m lightning_peft.inference.beam_classifier_training --config configs/decoding/beam_classifier_lee_news.yaml

Paper: Davis Yoshida, "Making the Most of your Model: Methods for Finetuning and Applying
Pretrained Transformers" (PhD thesis, TTIC, 2023): conditional beam search with a classifier of
an attribute on the LM's hidden states. Our data (the paper's attribute data is not available
offline): positives are windows of real text from a dataset (any catalog name or data file);
negatives are the same windows whose continuation after `prefix_tokens` tokens is a span of the
text repeated over and over (span length 1-8 tokens, seeded), plus, with `model_negatives`, the
model's own greedy continuations that repeat themselves (more than half their 4-grams seen before).
Positions are labelled from the second repetition on, where a reader can tell the loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from .beam_classifier import AttributeClassifier
from .errors import GenerationError
from .loading import load_model
from .style_corpus import corpus_text


@dataclass(frozen=True)
class BeamClassifierRecipe:
    """What to train on and where to save it.

    Args:
        model: The LM whose hidden states the classifier reads (zoo name, hub id or folder).
        dataset: Real text: a catalog name (e.g. lee_news) or a text/data file.
        output: Folder to save the classifier in.
        texts: How many real text windows to use (each also makes one synthetic-repeat negative).
        prefix_tokens: Real tokens before a negative starts repeating.
        length: Tokens per window.
        model_negatives: Also label the model's own greedy continuations of the prefixes, when they repeat.
        epochs: Passes of Adam over the labelled positions.
        lr: Adam's learning rate.
        val_fraction: Share of the windows held out to report accuracy.
        seed: Seed of the window choice, spans and initialisation.
    """

    model: str = "smollm2-135m"
    dataset: str = "lee_news"
    output: str = "beam_classifiers/not_degenerate"
    texts: int = 200
    prefix_tokens: int = 16
    length: int = 64
    model_negatives: bool = True
    epochs: int = 200
    lr: float = 0.01
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.texts < 4 or not 0 < self.prefix_tokens < self.length - 16:
            raise GenerationError("Give texts >= 4 and 0 < prefix_tokens < length - 16 (room for a repeated span to show).")


def repeat_rate(token_ids: list[int], n: int = 4) -> float:
    """Share of the n-grams of `token_ids` that occurred earlier in it (0: no loop, near 1: one long loop)."""
    grams = [tuple(token_ids[i:i + n]) for i in range(len(token_ids) - n + 1)]
    return sum(gram in set(grams[:i]) for i, gram in enumerate(grams)) / max(1, len(grams))


def windows(recipe: BeamClassifierRecipe, tokenizer) -> list[list[int]]:
    """`recipe.texts` windows of `recipe.length` real tokens, drawn with `recipe.seed`."""
    ids = tokenizer(corpus_text(recipe.dataset), add_special_tokens=False)["input_ids"]
    if len(ids) < recipe.length * recipe.texts:
        raise GenerationError(f"{recipe.dataset} has {len(ids)} tokens, fewer than texts * length; lower either.")
    starts = random.Random(recipe.seed).sample(range(0, len(ids) - recipe.length, recipe.length), recipe.texts)
    return [ids[s:s + recipe.length] for s in starts]


def synthetic_repeat(window: list[int], prefix: int, rng: random.Random) -> tuple[list[int], int]:
    """The window's prefix followed by one of its spans repeated to the window's length; and where the loop shows."""
    span = rng.randint(1, 8)
    start = rng.randint(0, prefix - span) if prefix > span else 0
    loop = window[start:start + span]
    tokens = (window[:prefix] + loop * len(window))[:len(window)]
    return tokens, prefix + 2 * span


def head_inputs(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The LM head's input (the final hidden state) at every position of `input_ids`."""
    seen: list[torch.Tensor] = []
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(input_ids=input_ids, logits_to_keep=0)  # 0: logits (and the head's input) at every position
    finally:
        handle.remove()
    return seen[-1].detach().float()


def labelled_positions(model: nn.Module, sequences: list[tuple[list[int], int, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states and labels of every position from each sequence's `from` index on."""
    features, labels = [], []
    for tokens, start, label in sequences:
        hidden = head_inputs(model, torch.tensor([tokens], device=next(model.parameters()).device))[0]
        features.append(hidden[start:].cpu())
        labels.append(torch.full((len(tokens) - start,), label))
    return torch.cat(features), torch.cat(labels)


def model_continuations(model: nn.Module, prefixes: list[list[int]], length: int, pad_id: int,
                        batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations of each prefix (all of one length, so no padding) to `length` tokens in all."""
    out = []
    for start in range(0, len(prefixes), batch_size):
        batch = torch.tensor(prefixes[start:start + batch_size], device=next(model.parameters()).device)
        new = length - batch.shape[1]
        with torch.inference_mode():
            ids = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=new,
                                 min_new_tokens=new, do_sample=False, pad_token_id=pad_id)
        out += ids.tolist()
    return out


def sequences_for(recipe: BeamClassifierRecipe, runnable, chosen: list[list[int]]) -> list[tuple[list[int], int, float]]:
    """(tokens, first labelled position, label) for real windows, their synthetic repeats and looping model text."""
    rng = random.Random(recipe.seed)
    found = [(window, recipe.prefix_tokens, 1.0) for window in chosen]
    found += [(*synthetic_repeat(window, recipe.prefix_tokens, rng), 0.0) for window in chosen]
    if recipe.model_negatives:
        pad = runnable.tokenizer.pad_token_id or runnable.tokenizer.eos_token_id
        made = model_continuations(runnable.model, [w[:recipe.prefix_tokens] for w in chosen], recipe.length, pad)
        found += [(tokens, recipe.prefix_tokens + 8, 0.0) for tokens in made
                  if repeat_rate(tokens[recipe.prefix_tokens:]) > 0.5]
    return found


def fit_classifier(features: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float, seed: int) -> AttributeClassifier:
    """Logistic regression by full-batch Adam, each class weighted to half the loss."""
    torch.manual_seed(seed)
    classifier = AttributeClassifier(features.shape[1])
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    positive = labels.mean().clamp(1e-3, 1 - 1e-3)
    weights = torch.where(labels > 0.5, 0.5 / positive, 0.5 / (1 - positive))
    for _ in range(epochs):
        logits = classifier.linear(features).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.eval()


def train(recipe: BeamClassifierRecipe) -> dict[str, float]:
    """Train, save to `recipe.output`, and return the held-out accuracy per class."""
    runnable = load_model(recipe.model, "cpu", "float32")
    chosen = windows(recipe, runnable.tokenizer)
    held = max(1, int(len(chosen) * recipe.val_fraction))
    train_x, train_y = labelled_positions(runnable.model, sequences_for(recipe, runnable, chosen[held:]))
    val_x, val_y = labelled_positions(runnable.model, sequences_for(recipe, runnable, chosen[:held]))
    classifier = fit_classifier(train_x, train_y, recipe.epochs, recipe.lr, recipe.seed)
    classifier.save(Path(recipe.output))
    with torch.no_grad():
        predicted = classifier(val_x).exp() > 0.5
    return {"val_accuracy_real": float(predicted[val_y == 1].float().mean()),
            "val_accuracy_degenerate": float((~predicted[val_y == 0]).float().mean()),
            "train_positions": float(len(train_y)), "negatives_share": float(1 - train_y.mean())}


def parse_recipe(argv: list[str] | None = None) -> BeamClassifierRecipe:
    """The recipe the command line (and its --config YAML) gives."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="python -m lightning_peft.inference.beam_classifier_training",
                            description="Train the beam classifier of conditional beam search.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(BeamClassifierRecipe)
    args = parser.parse_args(argv)
    return BeamClassifierRecipe(**{field.name: args[field.name] for field in fields(BeamClassifierRecipe)})


def main(argv: list[str] | None = None) -> None:
    recipe = parse_recipe(argv)
    print({"output": recipe.output, **train(recipe)})


if __name__ == "__main__":
    main()
