from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForMaskedLM

from lightning_peft import zoo
from lightning_peft.tasks import Classifies, ClozeClassification, TaskConfigError, VerbalizerClassification
from tests.conftest import tiny_causal_lm

LABELS = ["sport", "politics", "tech"]
# several words per class, some of several tokens for the SmolLM2 tokenizer (checked in the test that needs it)
WORDS = {"sport": ["football", "sportsmanship"], "politics": "megapolitics", "tech": ["tech", "zebrafishes", "entertainer"]}
TEXTS = ["a long report on the match that went on and on until late", "short note", "the new phone"]


def _batch(tokenizer, texts, labels=(0, 1, 2)):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": torch.tensor(labels)}


def _bound(tokenizer, label_words=WORDS, **kwargs):
    task = ClozeClassification(label_words, **kwargs)
    task.bind(tokenizer, LABELS)
    return task


def _causal_reference(model, tokenizer, text, words, reduce):
    """Each word scored alone: the unpadded prompt followed by the word, mean log-prob of the word's tokens."""
    prompt = tokenizer(text)["input_ids"]
    per_class = []
    for label in LABELS:
        scores = []
        for word in [words[label]] if isinstance(words[label], str) else words[label]:
            tokens = tokenizer.encode(" " + word, add_special_tokens=False)
            log_probs = model(input_ids=torch.tensor([prompt + tokens])).logits[0].log_softmax(-1)
            scores.append(torch.stack([log_probs[len(prompt) - 1 + j, t] for j, t in enumerate(tokens)]).mean())
        scores = torch.stack(scores)
        per_class.append(scores.mean() if reduce == "mean" else scores.logsumexp(0))
    return torch.stack(per_class)


def test_single_token_words_rank_and_lose_like_verbalizer_classification():
    tok = zoo.load_tokenizer("tiny-llama")
    words = {"sport": "football", "politics": "politics", "tech": "tech"}
    cloze, verbalizer = _bound(tok, words), VerbalizerClassification(words)
    verbalizer.bind(tok, LABELS)
    model = tiny_causal_lm().eval()
    batch = _batch(tok, TEXTS)
    with torch.no_grad():
        ours, theirs = cloze.step(model, batch), verbalizer.step(model, batch)
        assert cloze.scores(model, batch["input_ids"], batch["attention_mask"]).argsort(-1).tolist() == \
            verbalizer.scores(model, batch["input_ids"], batch["attention_mask"]).argsort(-1).tolist()
    assert ours.preds.tolist() == theirs.preds.tolist()
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-4, rtol=1e-4)  # log-probs = logits - one normaliser per row


@pytest.mark.parametrize("reduce", ["mean", "logsumexp"])
def test_causal_multi_token_words_score_the_mean_of_their_tokens_teacher_forced(reduce):
    tok = zoo.load_tokenizer("tiny-llama")
    assert len(tok.encode(" megapolitics", add_special_tokens=False)) > 1 and len(tok.encode(" tech", add_special_tokens=False)) == 1
    task = _bound(tok, class_score=reduce)
    model = tiny_causal_lm().eval()
    batch = _batch(tok, TEXTS)
    with torch.no_grad():
        scores = task.scores(model, batch["input_ids"], batch["attention_mask"])
        reference = torch.stack([_causal_reference(model, tok, text, WORDS, reduce) for text in TEXTS])
    assert scores.shape == (3, 3)
    torch.testing.assert_close(scores, reference, atol=1e-4, rtol=1e-4)


def test_masked_lm_scores_the_mask_slot_widened_to_each_words_length():
    tok = zoo.load_tokenizer("tiny-bert")
    words = {"sport": ["sport", "photosynthesis"], "politics": "politics", "tech": ["astrophysics", "tech"]}
    assert len(tok.encode("photosynthesis", add_special_tokens=False)) == 3
    task = _bound(tok, words, lm="masked")
    assert task.auto_class_name == "AutoModelForMaskedLM"
    model = AutoModelForMaskedLM.from_pretrained(zoo.resolve("tiny-bert")).eval()
    texts = [f"{text} Topic: [MASK]." for text in TEXTS]
    batch = _batch(tok, texts)
    with torch.no_grad():
        scores = task.scores(model, batch["input_ids"], batch["attention_mask"])
        reference = torch.zeros(3, 3)
        for row, text in enumerate(TEXTS):
            for c, label in enumerate(LABELS):
                per_word = []
                for word in [words[label]] if isinstance(words[label], str) else words[label]:
                    tokens = tok.encode(" " + word, add_special_tokens=False)
                    ids = tok(f"{text} Topic: {'[MASK]' * len(tokens)}.")["input_ids"]
                    first = ids.index(tok.mask_token_id)
                    log_probs = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
                    per_word.append(torch.stack([log_probs[first + j, t] for j, t in enumerate(tokens)]).mean())
                reference[row, c] = torch.stack(per_word).mean()
    torch.testing.assert_close(scores, reference, atol=1e-4, rtol=1e-4)


def test_training_signal_reaches_the_model_through_every_token():
    tok = zoo.load_tokenizer("tiny-llama")
    task = _bound(tok)
    model = tiny_causal_lm()
    out = task.step(model, _batch(tok, TEXTS))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.preds.shape == (3,)
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_is_a_classifier_predict_can_use():
    tok = zoo.load_tokenizer("tiny-llama")
    task = _bound(tok)
    assert isinstance(task, Classifies)
    assert task.verbalizer_words() == {"sport": "football", "politics": "megapolitics", "tech": "tech"}


@pytest.mark.parametrize("label_words, match", [
    ({"weather": "rain"}, r"label_words names labels \['weather'\] that are not in the data's labels"),
    ({"sport": []}, "gives class 'sport' no words"),
    ({"sport": ["football", "  "]}, "label word '  ' of class 'sport' tokenizes to nothing"),
    ({"sport": "football", "tech": ["football"]}, "'football' is given to both 'sport' and 'tech'"),
])
def test_bad_verbalizers_are_one_sentence_at_bind(label_words, match):
    tok = zoo.load_tokenizer("tiny-llama")
    with pytest.raises(TaskConfigError, match=match):
        _bound(tok, label_words)


def test_bad_settings_are_one_sentence():
    with pytest.raises(TaskConfigError, match="lm='encoder' is not a kind"):
        ClozeClassification(lm="encoder")
    with pytest.raises(TaskConfigError, match="class_score='max' is not a reduction"):
        ClozeClassification(class_score="max")
    with pytest.raises(TaskConfigError, match="needs a tokenizer with a mask token"):
        _bound(zoo.load_tokenizer("tiny-llama"), lm="masked")


def test_masked_input_without_the_mask_is_one_sentence():
    tok = zoo.load_tokenizer("tiny-bert")
    task = _bound(tok, {"sport": "sport", "politics": "politics", "tech": "tech"}, lm="masked")
    model = AutoModelForMaskedLM.from_pretrained(zoo.resolve("tiny-bert")).eval()
    batch = _batch(tok, ["no slot here", "one [MASK] here"])
    with pytest.raises(TaskConfigError, match=r"exactly one \[MASK\] in each input, but an input has 0"):
        task.scores(model, batch["input_ids"], batch["attention_mask"])
