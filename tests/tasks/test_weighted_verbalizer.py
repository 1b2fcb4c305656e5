"""SciPrompt's weighted verbalizer: label-word expansion, the weighted class score, calibration, the soft head."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml

from lightning_peft import zoo
from lightning_peft.data import ClassificationData, FewShotClassificationData
from lightning_peft.methods import Lora, MethodConfigError
from lightning_peft.modules.weighted_verbalizer import WeightedVerbalizerModule
from lightning_peft.tasks import TaskConfigError, WeightedVerbalizerClassification
from lightning_peft.tasks import label_word_expansion as expansion
from lightning_peft.tasks.weighted_verbalizer import SOFT_HEAD_NAME, VERBALIZER_NAME

LABELS = ["sport", "politics", "tech"]
SCORED = {"sport": {"football": 0.9, "game": 0.2}, "politics": {"vote": 0.5, "election": 0.7, "zebrafishes": 0.1},
          "tech": {"computer": 1.0}}
# unit vectors of a made-up encoder: football is nearer sport than game is; computer is near nothing
EMBEDDINGS = {"sport": [1, 0, 0], "politics": [0, 1, 0], "football": [0.95, 0.05, 0], "game": [0.7, 0.3, 0],
              "vote": [0.25, 0.9, 0], "election": [0.1, 0.95, 0], "computer": [0, 0, 1]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _texts(count: int = 5) -> list[str]:
    return ["football game vote election computer"] * count + ["rare"]


def _fake_embed(calls: list[int]):
    def embed(encoder: str, words: list[str]) -> torch.Tensor:
        calls.append(len(words))
        return F.normalize(torch.tensor([EMBEDDINGS[w] for w in words], dtype=torch.float), dim=-1)
    return embed


def test_expansion_keeps_the_nearest_words_above_the_threshold_once_each_and_caches(cache, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(expansion, "_embed", _fake_embed(calls))
    tokenizer, seeds = zoo.load_tokenizer("tiny-llama"), {"sport": ["sport"], "politics": ["politics"]}
    expand = partial(expansion.expand_label_words, seeds, _texts(), tokenizer, cache, min_count=5)
    top1 = expand(top_k=1, threshold=0.5)
    assert {label: list(words) for label, words in top1.items()} == {"sport": ["sport", "football"],
                                                                      "politics": ["politics", "election"]}
    assert top1["sport"]["sport"] == 1.0 and top1["sport"]["football"] == pytest.approx(0.9986, abs=1e-3)
    wide = expand(top_k=5, threshold=0.5)  # game is close to sport and a little to politics: sport's only
    assert set(wide["sport"]) == {"sport", "football", "game"} and set(wide["politics"]) == {"politics", "election", "vote"}
    assert "computer" not in str(wide) and "rare" not in str(wide)  # below the threshold / the count
    assert calls == [2 + 5, 2 + 5]  # the seeds and the 5 frequent one-token words, once per setting
    assert expand(top_k=1, threshold=0.5) == top1 and len(calls) == 2  # read back from the cache
    assert len(list(cache.glob("*.json"))) == 2


def test_class_scores_equal_the_score_weighted_sum_of_log_probs_over_all_label_words():
    task = WeightedVerbalizerClassification(word_scores=SCORED)
    task.bind(zoo.load_tokenizer("tiny-llama"), LABELS)
    model = task.auto_class().from_pretrained(zoo.resolve("tiny-llama")).eval()
    prompts = [[5, 17, 42, 9], [7, 11]]
    ids = torch.tensor([prompts[0], prompts[1] + [0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        got = task.scores(model, ids, mask)
        expected = []
        for prompt in prompts:
            per_word = []
            for words in (list(SCORED[label]) for label in LABELS):
                for word in words:
                    tokens = task.tokenizer.encode(" " + word, add_special_tokens=False)
                    logits = model(input_ids=torch.tensor([prompt + tokens[:-1]])).logits[0].log_softmax(-1)
                    per_word.append(torch.stack([logits[len(prompt) - 1 + j, t] for j, t in enumerate(tokens)]).mean())
            log_p = torch.stack(per_word).log_softmax(-1)
            bounds = [0, 2, 5, 6]
            expected.append(torch.stack([
                (torch.tensor(list(SCORED[label].values())).softmax(-1) * log_p[bounds[c]:bounds[c + 1]]).sum()
                for c, label in enumerate(LABELS)]))
    assert len(task.tokenizer.encode(" zebrafishes", add_special_tokens=False)) > 1
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-4, rtol=1e-4)


def test_calibration_keeps_each_classs_top_half_by_prior_and_divides_by_it():
    task = WeightedVerbalizerClassification(word_scores=SCORED)
    task.bind(zoo.load_tokenizer("tiny-llama"), LABELS)
    prior = torch.tensor([0.1, 0.3, 0.2, 0.05, 0.25, 0.1])  # words in order: football game | vote election zebrafishes | computer
    task.set_prior(prior)
    assert task.keep.tolist() == [False, True, True, False, True, True]  # the bottom half dropped: 1 of 2, 1 of 3, 0 of 1
    model = task.auto_class().from_pretrained(zoo.resolve("tiny-llama")).eval()
    ids, mask = torch.tensor([[5, 17, 42]]), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        raw = task.word_log_probs(model, ids, mask)  # no keep: the plain softmax over all words
        calibrated = task.word_log_probs(model, ids, mask, task.keep)
    kept = task.keep
    expected = (raw[0, kept].log_softmax(-1) - prior[kept].log()).log_softmax(-1)
    torch.testing.assert_close(calibrated[0, kept], expected)
    assert calibrated[0, ~kept].eq(0).all()


def test_soft_head_starts_at_the_score_weighted_mean_of_the_words_lm_head_rows():
    task = WeightedVerbalizerClassification(word_scores=SCORED, soft=True)
    task.bind(zoo.load_tokenizer("tiny-llama"), LABELS)
    model = task.auto_class().from_pretrained(zoo.resolve("tiny-llama"))
    rows = model.get_output_embeddings().weight.detach()
    for c, label in enumerate(LABELS):
        words = [rows[task.tokenizer.encode(" " + w, add_special_tokens=False)].mean(0) * s for w, s in SCORED[label].items()]
        torch.testing.assert_close(getattr(model, SOFT_HEAD_NAME).weight[c], torch.stack(words).mean(0))
    assert task.head_modules(model) == [SOFT_HEAD_NAME]


@pytest.fixture
def topics(tmp_path):
    records = [{"text": f"{label} story {i} football game election vote computer software", "label": label}
               for label in LABELS for i in range(12)]
    path = tmp_path / "topics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _fit(tmp_path, data, task, steps: int = 2) -> tuple[WeightedVerbalizerModule, L.Trainer]:
    module = WeightedVerbalizerModule(backbone="tiny-llama", task=task, method=Lora(r=4, target_modules=["q_proj", "v_proj"]),
                                      label_names=LABELS, alpha=1.0, support_size=6,
                                      optimizer=partial(torch.optim.AdamW, lr=5e-2))
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=steps, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    return module, trainer


def _few_shot(path: str) -> FewShotClassificationData:
    return FewShotClassificationData(path, tokenizer="tiny-llama", template="{text}\nTopic:", shots_per_class=2,
                                     label_names=LABELS, val_size=6, test_size=0, batch_size=3, max_length=32)


def test_expanded_weights_start_at_the_correlation_scores_train_and_are_checkpointed(tmp_path, topics, cache):
    task = WeightedVerbalizerClassification({label: [label] for label in LABELS}, expand_from=topics, calibrate=True,
                                            expansion={"encoder": "tiny-bert", "top_k": 2, "threshold": -1.0, "min_count": 3})
    module = WeightedVerbalizerModule(backbone="tiny-llama", task=task, method=Lora(r=4, target_modules=["q_proj"]),
                                      label_names=LABELS)
    module.configure_model()  # expands (a tiny BERT as the sentence encoder) and attaches the weights
    words = task.expanded_words()  # each candidate goes to the class a random tiny BERT finds it closest to
    assert all(list(words[label])[0] == label and len(words[label]) <= 3 for label in LABELS)  # its seed, <= 2 more
    everything = [word for label in LABELS for word in words[label]]
    assert len(everything) > 3 and len(set(everything)) == len(everything)
    (name, start), = [(n, p.detach().clone()) for n, p in module.model.named_parameters() if p.requires_grad and VERBALIZER_NAME in n]
    torch.testing.assert_close(start, task.word_scores)

    module, trainer = _fit(tmp_path, _few_shot(topics), task)
    trained = dict(module.model.named_parameters())[name].detach()
    assert not torch.equal(trained, start)
    assert task.keep.sum() < len(task.keep) and task.log_prior is not None  # calibrated on the pool
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    saved = torch.load(ckpt, weights_only=False)
    torch.testing.assert_close(saved["state_dict"]["model." + name], trained)
    torch.testing.assert_close(torch.tensor(saved["weighted_verbalizer_prior"]).log(), task.log_prior)


@pytest.mark.parametrize("kwargs, label_words, message", [
    ({}, {"sport": ["football"], "politics": [], "tech": ["computer"]}, "Class 'politics' has no seed words"),
    ({"word_scores": {"sport": {" ": 1.0}, "politics": {"vote": 1.0}, "tech": {"computer": 1.0}}}, None, "tokenizes to nothing"),
    # a misspelt label would otherwise fall back silently to the class's own name as its only seed word
    ({}, {"sports": ["football"], "politics": ["vote"], "tech": ["computer"]}, r"names labels \['sports'\] that are not"),
    ({"word_scores": {"sport": {"football": 1.0}, "politic": {"vote": 1.0}}}, None, r"names labels \['politic'\] that are not"),
])
def test_bad_words_are_refused_at_bind(kwargs, label_words, message):
    with pytest.raises(TaskConfigError, match=message):
        WeightedVerbalizerClassification(label_words, **kwargs).bind(zoo.load_tokenizer("tiny-llama"), LABELS)


def test_a_model_built_before_the_expansion_is_refused_in_one_sentence():
    task = WeightedVerbalizerClassification({label: [label] for label in LABELS}, expand_from="bbc_news")
    task.bind(zoo.load_tokenizer("tiny-llama"), LABELS)
    assert task.awaits_expansion
    with pytest.raises(TaskConfigError, match=r"expanded from 'bbc_news' first: call task.expand\(texts\)"):
        task.auto_class().from_pretrained(zoo.resolve("tiny-llama"))


def test_an_expansion_that_leaves_a_class_empty_is_refused():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.25]])
    with pytest.raises(TaskConfigError, match="left class 'politics' without words"):
        expansion.select({"sport": ["sport"], "politics": ["politics"]}, ["football", "vote"], scores, top_k=5,
                         threshold=0.5, keep_seeds=False)


def test_expand_from_train_reads_the_training_split_alone(tmp_path, topics, cache, monkeypatch):
    from lightning_peft.data.errors import DataConfigError
    from lightning_peft.tasks import weighted_verbalizer

    seen: list[str] = []
    real = weighted_verbalizer.expand_label_words

    def recording(seeds, texts, *args, **kwargs):
        seen.extend(texts)
        return real(seeds, texts, *args, **kwargs)

    monkeypatch.setattr(weighted_verbalizer, "expand_label_words", recording)
    task = WeightedVerbalizerClassification({label: [label] for label in LABELS}, expand_from="train",
                                            expansion={"encoder": "tiny-bert", "top_k": 2, "threshold": -1.0, "min_count": 3})
    data = _few_shot(topics)  # 36 examples: 6 for validation, 30 for training (6 shots, 24 in the pool)
    _fit(tmp_path, data, task, steps=1)
    validation = {record["text"] for record in data.split_records("validation")}
    assert len(seen) == 30 and len(validation) == 6 and not validation & set(seen)  # every text of the topics file differs
    assert sorted(seen) == sorted(record["text"] for record in data.split_records("train"))
    assert len(task.expanded_words()["sport"]) == 3  # the seed and two of the training split's words
    with pytest.raises(DataConfigError, match="split must be one of train, validation, test, got 'pool'"):
        data.split_records("pool")


def test_expand_from_train_without_training_data_is_refused_in_one_sentence():
    task = WeightedVerbalizerClassification({label: [label] for label in LABELS}, expand_from="train")
    module = WeightedVerbalizerModule(backbone="tiny-llama", task=task, method=Lora(r=4, target_modules=["q_proj"]),
                                      label_names=LABELS)
    with pytest.raises(MethodConfigError, match="expand_from='train' expands the label words from the training split"):
        module.configure_model()


def test_calibration_without_a_support_set_is_refused_at_setup(tmp_path, topics):
    data = ClassificationData(topics, tokenizer="tiny-llama", template="{text}\nTopic:", label_names=LABELS,
                              val_size=6, test_size=0, batch_size=3, max_length=32)
    with pytest.raises(MethodConfigError, match="calibrate=True estimates each label word's prior on a support set"):
        _fit(tmp_path, data, WeightedVerbalizerClassification({label: [label] for label in LABELS}, calibrate=True))


def test_the_recipe_runs_and_its_checkpoint_rebuilds_with_the_expanded_words_without_the_data(tmp_path, cache):
    from pathlib import Path

    from lightning_peft.checkpoint import HPARAMS_KEY
    from lightning_peft.cli import main
    from lightning_peft.cli.rebuild import module_from_checkpoint
    from lightning_peft.data.catalog import CATALOG

    topics = CATALOG["bbc_news"].labels  # the recipe's label_words must name the real data's labels
    path = tmp_path / "news.jsonl"
    path.write_text("".join(json.dumps({"text": f"{t} news {i} market film vote match phone", "label": t}) + "\n"
                            for t in topics for i in range(8)))
    recipe = Path(__file__).resolve().parents[2] / "configs/cloze/sciprompt_bbc_news.yaml"
    main(["fit", "--config", str(recipe), "--model.init_args.backbone", "tiny-llama", "--data.init_args.dataset", str(path),
          "--model.init_args.task.init_args.expansion", '{"encoder": "tiny-bert", "top_k": 3, "threshold": -1.0, "min_count": 2}',
          "--data.init_args.shots_per_class", "2", "--data.init_args.test_size", "5",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
          "--trainer.max_steps", "1"])
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    saved = torch.load(ckpt, weights_only=False)[HPARAMS_KEY]["task"]["init_args"]
    seeds = yaml.safe_load(recipe.read_text())["model"]["init_args"]["task"]["init_args"]["label_words"]
    assert saved["expand_from"] is None and all(list(saved["word_scores"][t])[:3] == seeds[t] for t in topics)
    assert sum(map(len, saved["word_scores"].values())) > 15  # the seed words and some of the training text's
    path.unlink()  # the rebuild must not read the data again
    rebuilt = module_from_checkpoint(str(ckpt))
    assert rebuilt.task.expanded_words() == saved["word_scores"]


def test_the_soft_head_trains_as_a_head_beside_the_adapter(tmp_path, topics):
    task = WeightedVerbalizerClassification({label: [label] for label in LABELS}, soft=True)
    module = WeightedVerbalizerModule(backbone="tiny-llama", task=task, method=Lora(r=4, target_modules=["q_proj"]),
                                      label_names=LABELS)
    module.configure_model()
    (name, start), = [(n, p.detach().clone()) for n, p in module.model.named_parameters() if p.requires_grad and SOFT_HEAD_NAME in n]
    assert name in module.groups["head"]
    module, _ = _fit(tmp_path, _few_shot(topics), task, steps=1)
    assert not torch.equal(dict(module.model.named_parameters())[name].detach(), start)
