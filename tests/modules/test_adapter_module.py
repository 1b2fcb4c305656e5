"""AdapterModule end to end: a MAD-X pair trained with Lightning (language adapter by causal LM, exported; a
task adapter trained on it), the language adapter untouched by the second run and absent from its checkpoint."""

from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lightning_peft import zoo
from lightning_peft.data import ClassificationData, SFTData
from lightning_peft.methods import BottleneckAdapter
from lightning_peft.methods.adapter_io import LANGUAGE, LANGUAGE_FOLDER, WEIGHTS_NAME, renamed
from lightning_peft.modules import AdapterModule
from lightning_peft.tasks import CausalLMSFT, VerbalizerClassification
from tests import helpers


def _fit(module, data, root, callbacks=()) -> None:
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=root, callbacks=list(callbacks),
              enable_checkpointing=bool(callbacks)).fit(module, datamodule=data)


def test_a_language_adapter_trained_by_lm_stays_frozen_under_a_task_adapter(tmp_path):
    optimizer = partial(torch.optim.AdamW, lr=1e-2)
    language = AdapterModule(backbone="tiny-llama", task=CausalLMSFT(), method=BottleneckAdapter(placement="pfeiffer"),
                             optimizer=optimizer)
    _fit(language, SFTData("movie_dialog", tokenizer="tiny-llama", max_length=24, max_train_examples=8, batch_size=4,
                           val_size=0, test_size=0), tmp_path / "language")
    language_folder = language.export(tmp_path / "language_adapter")

    task = AdapterModule(backbone="tiny-llama", task=VerbalizerClassification(), label_names=helpers.LABELS,
                         method=BottleneckAdapter(language_adapter=str(language_folder)), optimizer=optimizer)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    data = ClassificationData(str(helpers.write_jsonl(tmp_path / "data.jsonl", count=16)), tokenizer="tiny-llama",
                              label_names=helpers.LABELS, val_size=0, test_size=0, batch_size=4, max_length=16)
    _fit(task, data, tmp_path / "task", [saver])

    saved_language = load_file(str(language_folder / WEIGHTS_NAME))
    stacked = {renamed(n, LANGUAGE, "task"): p for n, p in task.model.named_parameters() if f".{LANGUAGE}." in n}
    assert stacked and stacked.keys() == saved_language.keys()
    assert all(torch.equal(p, saved_language[n]) for n, p in stacked.items())  # frozen through training
    checkpointed = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert checkpointed and not any(f".{LANGUAGE}." in n for n in checkpointed)

    exported = task.export(tmp_path / "task_adapter")
    assert (exported / LANGUAGE_FOLDER / WEIGHTS_NAME).is_file()
    loaded = BottleneckAdapter().load(AutoModelForCausalLM.from_pretrained(zoo.resolve("tiny-llama")), exported)
    ids = torch.randint(5, 400, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, task.model.eval()(input_ids=ids).logits)
