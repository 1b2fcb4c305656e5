"""The peer arm of `benchmarks/throughput.py`: Hugging Face `Trainer` + `peft`, as a user would write it.

    python benchmarks/peer_trainer.py --spec run.json --examples examples.json --output result.json

Reads the run's settings (`spec`, written by the driver) and the already tokenized training examples
in training order (written by the driver from lightning-peft's own data module, so both arms train
the very same token ids, batch by batch). Everything else is stock: `get_peft_model` with a
`LoraConfig`, `DataCollatorForSeq2Seq` for dynamic padding (labels padded with -100), and
`Trainer` with AdamW (fused, the Trainer's default), a constant learning rate, gradient clipping at
`max_grad_norm`, no evaluation, no saving, no logging backends. The only additions are measurement:
a `TrainerCallback` that timestamps each optimizer step and a `training_step` override that records
each batch's token count and loss (as tensors; no extra device synchronisation).

Optional features, for rows that compare like with like: `bucketing` (train_sampling_strategy
"group_by_length"), `packing` (`DataCollatorWithFlattening`), `grad_ckpt`, `compile`.
This script deliberately imports neither Lightning nor lightning-peft.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
from peft import LoraConfig, get_peft_model
from throughput_timing import StepTimes, write_result
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, DataCollatorWithFlattening,
                          Trainer, TrainerCallback, TrainingArguments)


class _StepEnd(TrainerCallback):
    def __init__(self, trainer: "TimedTrainer") -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.times.training_started()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.times.step_ended(self.trainer.last_loss)


class TimedTrainer(Trainer):
    """`Trainer` that records each batch's non-padding tokens and loss for `StepTimes`."""

    def __init__(self, *args, times: StepTimes, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.times, self.last_loss = times, None
        self.add_callback(_StepEnd(self))

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.times.step_started(inputs)
        self.last_loss = super().training_step(model, inputs, num_items_in_batch)
        return self.last_loss


def build_model(spec: dict) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"])
    model.config.use_cache = False  # the usual training setting; no KV cache is built per forward
    lora = spec["lora"]
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=lora["target_modules"], task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def training_arguments(spec: dict, output_dir: str) -> TrainingArguments:
    features, optimizer = set(spec["features"]), spec["optimizer"]
    return TrainingArguments(
        output_dir=output_dir, max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        learning_rate=optimizer["lr"], weight_decay=optimizer["weight_decay"], adam_beta1=optimizer["betas"][0],
        adam_beta2=optimizer["betas"][1], adam_epsilon=optimizer["eps"], optim="adamw_torch_fused",
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=spec["max_grad_norm"], seed=spec["seed"],
        # The driver wrote the examples in lightning-peft's batch order: read them in that order.
        train_sampling_strategy="group_by_length" if "bucketing" in features else "sequential",
        use_cpu=spec["device"] == "cpu", bf16=spec["precision"] == "bf16", dataloader_num_workers=0,
        gradient_checkpointing="grad_ckpt" in features,
        gradient_checkpointing_kwargs={"use_reentrant": False} if "grad_ckpt" in features else None,
        torch_compile="compile" in features, logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, remove_unused_columns=False,
    )


def run(spec: dict, examples: list[dict]) -> dict:
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    if "packing" in spec["features"]:
        collator = DataCollatorWithFlattening()
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        examples = [{**e, "attention_mask": [1] * len(e["input_ids"])} for e in examples]
    model = build_model(spec)
    times = StepTimes(spec["warmup_steps"], spec["steps"], spec["profile_steps"])
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = TimedTrainer(model=model, args=training_arguments(spec, output_dir), train_dataset=examples,
                               data_collator=collator, times=times)
        trainer.train()
    result = times.summary()
    result["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="run settings (JSON) written by benchmarks/throughput.py")
    parser.add_argument("--examples", required=True, help="tokenized examples in training order (JSON)")
    parser.add_argument("--output", required=True, help="where to write the result (JSON)")
    args = parser.parse_args()
    with open(args.spec) as handle:
        spec = json.load(handle)
    with open(args.examples) as handle:
        examples = json.load(handle)
    write_result(args.output, run(spec, examples))


if __name__ == "__main__":
    main()
