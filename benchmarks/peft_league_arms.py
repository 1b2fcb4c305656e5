"""The PEFT league's settings and arms, and the run config of one (setting, arm, seed).

A setting is a model, a task and a data set taken from a base recipe under configs/ (its backbone,
task, data and head learning rate), with the data changed where no recipe has that pairing. An arm
is a method as its own recipe trains it: the module class, the method and its arguments, the
optimizer (learning rate) and the recipe's per-group schedule (`DualLRSchedule`), if any. Where a
recipe names layers of one architecture (LoRA's `q_proj`), the arm gives the other architecture's
names. Nothing is tuned per setting: a method runs at its recipe's learning rate everywhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = "lightning_peft.callbacks.DualLRSchedule"
# What a setting's data gives an arm that brings its own data module (SetFit): the texts, their length and the split.
SETTING_DATA_KEYS = ("dataset", "template", "max_length", "val_size", "test_size", "split_seed")


@dataclass(frozen=True)
class Setting:
    """A model, task and data set: `base` recipe's backbone, task, data and `group_lr.head`, `data` changes applied."""

    base: str
    architecture: str  # "bert" or "llama": which layer names the arms use
    steps: int  # default optimizer steps of every arm (docs/peft_league.md: how they were sized)
    data: dict[str, Any] = field(default_factory=dict)
    instruction: str | None = None  # prompt initialisation text for this task; None: the arm recipe's own
    test_examples: int | None = None  # default test examples scored (None: the whole test split)


@dataclass(frozen=True)
class Arm:
    """A method with its recipe's settings; `recipe` None: `model` gives the module, method and optimizer."""

    recipe: str | None
    architecture_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # method init_args per architecture
    model: dict[str, Any] | None = None
    head_group: bool = True  # a new head trains as its own group "head" (FullFineTuning puts it in "model")
    own_procedure: bool = False  # the recipe's task and data module set the run (SetFit: pairs of shots, then the head)
    instruction_arg: str | None = None  # the method argument that takes the setting's instruction


SETTINGS = {
    "minilm_sms_spam": Setting("configs/adapters/houlsby_sms_spam.yaml", "bert", steps=60,
                               instruction="Is this text message spam or an ordinary message?"),
    # 64 tokens: an article's title and first sentence, which name its topic; 128 would double every step
    "minilm_bbc_news": Setting("configs/adapters/houlsby_sms_spam.yaml", "bert", steps=30,
                               data={"dataset": "bbc_news", "max_length": 64},
                               instruction="Is this news article about business, entertainment, politics, sport or tech?"),
    # 200 test questions: scoring 500 behind prompt tuning's 100 virtual tokens costs about as much as training
    "smollm2_trec6": Setting("configs/quickstart.yaml", "llama", steps=10, test_examples=200),
}

BERT_LORA = {"target_modules": ["query", "value"]}  # peft's default LoRA targets for BERT
ARMS = {
    "full": Arm("configs/evaluation/forgetting_full_trec6.yaml", head_group=False),
    "lora": Arm("configs/quickstart.yaml", {"bert": BERT_LORA}),
    "dora": Arm("configs/lora/dora_trec6.yaml", {"bert": {"target_modules": ["query", "key", "value", "attention.output.dense"]}}),
    # peft's default IA3 layers for BERT: keys, values and the dense layers' inputs
    "ia3": Arm("configs/lora/ia3_trec6.yaml", {"bert": {"target_modules": ["key", "value", "output.dense"],
                                                        "feedforward_modules": ["output.dense"]}}),
    # No recipe trains BitFit; 1e-3 is the top of the range its paper searched for BERT (1e-4..1e-3, unverified here).
    "bitfit": Arm(None, model={"class_path": "lightning_peft.modules.SelectiveModule", "init_args": {
        "method": "lightning_peft.methods.BitFit",
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1.0e-3, "weight_decay": 0.0}}}}),
    "houlsby": Arm("configs/adapters/houlsby_sms_spam.yaml"),
    "pfeiffer": Arm("configs/adapters/pfeiffer_sms_spam.yaml"),
    "prompt_tuning": Arm("configs/soft_prompt/prompt_tuning_trec6.yaml", instruction_arg="init_text"),
    "prefix_tuning": Arm("configs/soft_prompt/prefix_tuning_trec6.yaml"),
    "setfit": Arm("configs/encoders/setfit_sms_spam.yaml", head_group=False, own_procedure=True),
}


def read_recipe(path: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / path).read_text())


def default_backbone(setting: str) -> str:
    """The model of the setting's base recipe."""
    return read_recipe(SETTINGS[setting].base)["model"]["init_args"]["backbone"]


def _with_args(method: str | dict[str, Any], args: dict[str, Any]) -> str | dict[str, Any]:
    """A method spec (a class path, or class_path + init_args) with `args` replacing its init_args."""
    if not args:
        return method
    if isinstance(method, str):
        return {"class_path": method, "init_args": dict(args)}
    return {"class_path": method["class_path"], "init_args": {**method.get("init_args", {}), **args}}


def source(arm: str) -> str:
    """Where the arm's settings come from, for the results file and the docs."""
    return ARMS[arm].recipe or "benchmarks/peft_league_arms.py (no recipe trains it)"


def compose(setting_name: str, arm_name: str, seed: int, backbone: str | None = None,
            test_examples: int | None = None) -> dict[str, Any]:
    """The YAML config (model, data, trainer callbacks) of `arm_name` in `setting_name`; steps and seed come on the command line."""
    setting, arm = SETTINGS[setting_name], ARMS[arm_name]
    base = read_recipe(setting.base)
    recipe = read_recipe(arm.recipe) if arm.recipe else {"model": arm.model}
    model = copy.deepcopy(recipe["model"])
    init = model["init_args"]
    init.pop("group_lr", None)
    init["backbone"] = backbone or base["model"]["init_args"]["backbone"]
    method_args = dict(arm.architecture_args.get(setting.architecture, {}))
    if arm.instruction_arg and setting.instruction:
        method_args[arm.instruction_arg] = setting.instruction
    init["method"] = _with_args(init["method"], method_args)
    data = copy.deepcopy(base["data"])
    data["init_args"].update(setting.data)
    if arm.own_procedure:  # the recipe's task and data procedure, on the setting's texts and split
        own = copy.deepcopy(recipe["data"])
        own["init_args"].update({k: v for k, v in data["init_args"].items() if k in SETTING_DATA_KEYS})
        own["init_args"]["shot_seed"] = seed
        data = own
    else:
        init["task"] = copy.deepcopy(base["model"]["init_args"]["task"])
        head_lr = base["model"]["init_args"].get("group_lr", {}).get("head")
        if arm.head_group and head_lr:
            init["group_lr"] = {"head": head_lr}
    # Seeds vary the batch order too (seed_everything alone leaves it at the split's), over the same split:
    # seed 0 keeps the recipe's own order.
    data["init_args"]["order_seed"] = data["init_args"].get("split_seed", 42) + seed
    if test_examples is not None:
        data["init_args"]["max_eval_examples"] = test_examples
    trainer = {"max_epochs": recipe["trainer"]["max_epochs"]} if arm.own_procedure else {}
    schedules = copy.deepcopy([c for c in recipe.get("trainer", {}).get("callbacks", []) if c["class_path"] == SCHEDULE])
    for schedule in schedules:  # a new head keeps its constant lr, as in the arms without a schedule
        if "group_lr" in init:
            schedule["init_args"].setdefault("default", {"decay": "constant"})
    if schedules:
        trainer["callbacks"] = schedules
    return {"model": model, "data": data, "trainer": trainer}
