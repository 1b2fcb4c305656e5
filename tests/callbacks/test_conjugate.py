"""ConjugatePromptEval on a LightningModule that is not ours."""

import json

import lightning as L

from lightning_peft.callbacks import ConjugatePromptEval
from tests.callbacks.test_forgetting import ForeignLM, _loader


def test_measures_base_and_tuned_per_transform_and_writes_json(tmp_path):
    module = ForeignLM()
    callback = ConjugatePromptEval(transforms=["pig_latin"], translations={"es": {"repeat": "repite"}}, num_prompts=2,
                                   max_new_tokens=3, tokenizer="tiny-llama")
    L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              default_root_dir=tmp_path, callbacks=[callback]).fit(module, _loader())
    assert set(callback.base) == {"original", "pig_latin", "es"}
    (row,) = callback.history
    assert row["step"] == 2 and {"original/drop", "pig_latin/tuned", "es/base"} <= set(row)
    assert all(module.modes_seen)
    saved = json.loads((tmp_path / "conjugate.json").read_text())
    assert saved["base"] == callback.base and saved["history"][0]["step"] == 2
    restored = ConjugatePromptEval(tokenizer="tiny-llama")
    restored.load_state_dict(callback.state_dict())
    assert restored.base == callback.base


def test_fast_dev_run_scores_two_prompts_per_transform_and_says_so(tmp_path, caplog):
    module = ForeignLM()
    callback = ConjugatePromptEval(transforms=["pig_latin"], num_prompts=20, max_new_tokens=2, tokenizer="tiny-llama")
    prompts = []
    generate = module.lm.generate
    module.lm.generate = lambda input_ids, **kw: prompts.append(input_ids.shape[0]) or generate(input_ids=input_ids, **kw)
    with caplog.at_level("INFO"):
        L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=tmp_path, callbacks=[callback]).fit(module, _loader())
    assert sum(prompts) == 2 * 2 * 2  # 2 prompts x (original, pig_latin) x (base, fine-tuned), not 20 each
    assert len(callback.history) == 1 and {"original/base", "pig_latin/tuned"} <= set(callback.history[0])
    assert sum("ConjugatePromptEval: fast_dev_run, so 2 prompts per transform" in r.message for r in caplog.records) == 1
