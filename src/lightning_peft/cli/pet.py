"""`lightning-peft pet`: PET and iPET from one recipe: pattern models -> weighted ensemble -> distilled classifier.

    lightning-peft pet --config configs/cloze/pet_bbc_news.yaml
    lightning-peft pet --config configs/cloze/ipet_bbc_news.yaml --pet.stop_after patterns   # later: the same without it
    lightning-peft pet --config configs/cloze/pcp_trec6.yaml                                  # PCP (pet.pcp: true)

Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL; arXiv:2001.07676). The recipe is a `fit` recipe for one pattern model
(`ClozeModule` + `FewShotClassificationData` + trainer) plus a `pet:` section (`PetPlan`). Every model
and stage writes into its own folder under `pet.output_dir`:

    shots-<s>/g<g>/p<i>-s<seed>/   a pattern model: Lightning's run folder, scores.pt (its class scores on the
                                   pool and the test split), result.json (test metrics; written last)
    shots-<s>/ensemble.json, ensemble.pt      the weighted ensemble's test metrics and the pool's soft labels
    shots-<s>/classifier/         the distilled sequence classifier: its run folder, adapter/ (peft export
                                  for `lightning-peft predict --adapter`), result.json (written last)
    summary.json                  every figure of the table printed at the end (mean ± std over runs)

With `pet.pcp: true` (PCP: Shi & Lipani 2023, "Don't Stop Pretraining? Make Prompt-based Fine-tuning
Powerful Learner", NeurIPS), after the ensemble:

    shots-<s>/pcp/pretraining/    continued pre-training on the pseudo-labelled, filled-in pool texts:
                                  adapter.safetensors, result.json (written last)
    shots-<s>/pcp/p<i>-s<seed>/   each pattern model trained again from that adapter (as a pattern model above)
    pcp_summary.json              the PCP table: test metrics without / with PCP, and the paired gain

A folder whose result file exists is not trained again, so the command resumes between stages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser
from safetensors.torch import load_file, save_file

from ..atomic import write_file_atomically
from ..callbacks.run_summary import run_dir, write_json_atomic
from ..data.fewshot import POOL_REMEDY, UNLABELLED, UnlabelledPool, has_pool
from ..data.formats import check_no_label_slot, check_text_slot
from ..modules import LoraModule, WeightedVerbalizerModule
from ..modules.cloze import ClozeModule, ClozePretraining, class_scores
from ..pet import ScoredModel, ipet_training_set, load_trained_state, trained_state, weighted_scores
from ..tasks import Classifies
from ..tasks.distillation import DistillationClassification
from .app import LightningPeftCLI, _check_positions, _one_sentence
from .pcp_report import pcp_report
from .pet_plan import PetConfigError, PetPlan
from .pet_report import report
from .refuse import refuse

CONFIG_FILE = "pet_config.yaml"
PCP_ADAPTER = "adapter.safetensors"


class PetCLI(LightningPeftCLI):
    """The `fit` parser of a `ClozeModule` recipe plus the `pet:` section; builds one run at a time (`run=False`)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(PetPlan, "pet")

    recipe: Namespace | None = None  # the config as parsed; each run's changes are made to a copy of it

    def build(self, root: Path, template: str, shot_seed: int, seed: int, max_steps: int | None = None) -> None:
        """Instantiate model, data and trainer anew for one run in `root` (its own pattern and draw of shots)."""
        if self.recipe is None:
            self.recipe = self.config.clone()
        config = self.config = self.recipe.clone()
        config.data.init_args.template, config.data.init_args.shot_seed = template, shot_seed
        config.trainer.default_root_dir = str(root)
        if max_steps is not None:
            config.trainer.max_steps = max_steps
        L.seed_everything(seed, verbose=False)
        self.instantiate_classes()


def scored_metrics(task: Classifies, scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The task's own metrics (accuracy, macro-F1) of class scores on the test split, as `test/<name>`."""
    metrics = task.metrics()
    metrics.update(scores.argmax(-1), labels)
    return {f"test/{name}": float(value) for name, value in metrics.compute().items()}


def _metrics(trainer: L.Trainer) -> dict[str, float]:
    """The test section of the run's metrics.json (written by RunSummary)."""
    written = json.loads((run_dir(trainer) / "metrics.json").read_text())
    return {k: v for k, v in written["test"].items() if k.startswith("test/")}


def _finished(folder: Path) -> dict[str, Any] | None:
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    if folder.exists():
        shutil.rmtree(folder)  # an attempt that did not finish: start it again
    return None


def train_pattern_model(cli: PetCLI, folder: Path, template: str, shot_seed: int, seed: int,
                        pseudo: tuple[list[int], list[int], dict[str, int]] | None, train: bool = True,
                        init: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train (or find finished) one pattern model; record its test metrics and its scores on pool and test.

    `train=False` scores without training (a zero-shot teacher); `init` is an adapter to start from (PCP's).
    """
    result = _finished(folder)
    if result is not None:
        return result
    cli.build(folder, template, shot_seed, seed)
    module, data, trainer = cli.model, cli.datamodule, cli.trainer
    data.setup("fit")
    if isinstance(module, WeightedVerbalizerModule):
        module.expand_label_words(data)  # (before the model is built outside a fit, where the trainer has no data yet)
    module.configure_model()
    if init is not None:
        try:
            load_trained_state(module.groups, init)
        except ValueError as error:
            raise PetConfigError(str(error)) from error
    if isinstance(module, WeightedVerbalizerModule):
        module.calibrate(data)  # the prior the fit would estimate at its start: the weight and a zero-shot teacher use it
    # PET's ensemble weight: accuracy on the labelled set T before any training
    before, labels = class_scores(module.task, module.model, data.ordered_dataloader("train"), module.device)
    if pseudo is not None:
        data.add_pseudo_labelled(pseudo[0], pseudo[1])
    if train:
        trainer.fit(module, datamodule=data)
    folder.mkdir(parents=True, exist_ok=True)  # (a zero-shot model has no fit to create it)
    pool, _ = class_scores(module.task, module.model, data.ordered_dataloader("unlabelled"), module.device)
    test, test_labels = class_scores(module.task, module.model, data.ordered_dataloader("test"), module.device)
    torch.save({"pool": pool, "test": test, "test_labels": test_labels, "pool_identity": data.pool_identity()},
               folder / "scores.pt")
    result = {"template": template, "seed": seed, "shot_seed": shot_seed,
              "train_acc_before_training": float((before.argmax(-1) == labels).float().mean()),
              "train_examples": len(data.datasets["train"]), "ipet": pseudo[2] if pseudo else None,
              "trained": train, "pcp": init is not None,
              **scored_metrics(module.task, test, test_labels)}
    write_json_atomic(folder / "result.json", result)
    return result


def _scored(folder: Path, result: dict[str, Any]) -> tuple[ScoredModel, dict[str, Any]]:
    saved = torch.load(folder / "scores.pt", weights_only=True)
    return ScoredModel(folder.name, saved["pool"], result["train_acc_before_training"]), saved


def ensemble_stage(cli: PetCLI, root: Path, models: dict[str, Path]) -> dict[str, Any]:
    """Weighted mean of the last generation's scores: soft labels for the pool, and the ensemble's test metrics."""
    done = root / "ensemble.json"
    if done.is_file():
        return json.loads(done.read_text())
    scored = [_scored(folder, json.loads((folder / "result.json").read_text())) for folder in models.values()]
    pool = weighted_scores([model for model, _ in scored])
    test = weighted_scores([ScoredModel(m.name, saved["test"], m.weight) for m, saved in scored])
    result = {"models": sorted(models), "weights": {m.name: m.weight for m, _ in scored},
              **scored_metrics(cli.model.task, test, scored[0][1]["test_labels"])}
    torch.save({"soft_labels": pool, "pool_identity": scored[0][1]["pool_identity"]}, root / "ensemble.pt")
    write_json_atomic(done, result)
    return result


def classifier_stage(cli: PetCLI, plan: PetPlan, root: Path, shot_seed: int) -> dict[str, Any]:
    """Distil the ensemble's soft labels on the pool into a sequence classifier (LoRA + head, KL at `temperature`)."""
    folder = root / "classifier"
    result = _finished(folder)
    if result is not None:
        return result
    saved = torch.load(root / "ensemble.pt", weights_only=True)
    cli.build(folder, plan.classifier_template, shot_seed, plan.seeds[0], plan.classifier_max_steps)
    cloze, data, trainer = cli.model, cli.datamodule, cli.trainer
    student = LoraModule(task=DistillationClassification(plan.temperature), **_sibling_settings(cloze))
    _setup_same_pool(data, saved, root)
    data.train_on_soft_labels(saved["soft_labels"])
    # What its export's card records, so that `lightning-peft predict --adapter` rebuilds the classifier
    student.specs = {"task": {"class_path": f"{DistillationClassification.__module__}.DistillationClassification",
                              "init_args": {"temperature": plan.temperature}},
                     **{k: v for k, v in cloze.specs.items() if k == "method"}}
    trainer.fit(student, datamodule=data)
    trainer.test(student, datamodule=data, verbose=False)
    student.export(folder / "adapter", _metrics(trainer))
    result = {"template": plan.classifier_template, "temperature": plan.temperature, **_metrics(trainer)}
    write_json_atomic(folder / "result.json", result)
    return result


def _sibling_settings(cloze: ClozeModule) -> dict[str, Any]:
    """What a stage's other module (the distilled classifier, PCP's pre-training) shares with the recipe's pattern model."""
    return {"backbone": cloze.backbone, "method": cloze.method, "label_names": cloze.task.label_names,
            "optimizer": cloze.optimizer_factory, "lr_scheduler": cloze.scheduler_factory,
            "quantization": cloze.quantization, "gradient_checkpointing": cloze.gradient_checkpointing}


def _setup_same_pool(data: Any, saved: dict[str, Any], root: Path) -> None:
    """Set the data up and check that its pool is the one the ensemble labelled (rows line up with `saved`)."""
    data.setup("fit")
    if data.pool_identity() != saved["pool_identity"]:
        raise PetConfigError(f"The pool of {root} differs from this config's (dataset, splits or shots changed); "
                             "use a new pet.output_dir.")


def pretraining_stage(cli: PetCLI, plan: PetPlan, root: Path, shot_seed: int, templates: list[str]) -> dict[str, Any]:
    """PCP's continued pre-training: a fresh adapter learns the LM loss on every pool text written into every pattern
    with the ensemble's predicted class's word in the answer slot; the adapter is saved for the fine-tuning stage."""
    folder = root / "pcp" / "pretraining"
    result = _finished(folder)
    if result is not None:
        return result
    saved = torch.load(root / "ensemble.pt", weights_only=True)
    labels = saved["soft_labels"].argmax(-1).tolist()  # hard pseudo-labels (PCP's default)
    texts: list[list[int]] = []
    for template in templates:  # each pattern's data holds the pool written with that pattern
        cli.build(folder, template, shot_seed, plan.seeds[0], plan.pcp_max_steps)
        _setup_same_pool(cli.datamodule, saved, root)
        pool = cli.datamodule.datasets[UNLABELLED]
        texts.extend(cli.model.task.fill_slot(pool[k]["input_ids"], label) for k, label in enumerate(labels))
    cloze, data, trainer = cli.model, cli.datamodule, cli.trainer
    module = ClozePretraining(task=cloze.task, alpha=1.0, **_sibling_settings(cloze))
    data.train_on_texts(texts)
    trainer.fit(module, datamodule=data)
    state = trained_state(module.groups)
    write_file_atomically(folder / PCP_ADAPTER, lambda tmp: save_file(state, str(tmp)))
    names = cloze.task.label_names
    result = {"texts": len(texts), "patterns": len(templates), "steps": trainer.global_step,
              "pseudo_labels": {name: labels.count(index) for index, name in enumerate(names)},
              "train/lm_loss": float(trainer.callback_metrics.get("train/lm_loss", float("nan")))}
    write_json_atomic(folder / "result.json", result)
    return result


def pcp_stages(cli: PetCLI, plan: PetPlan, root: Path, shot_seed: int, templates: list[str]) -> dict[str, Any]:
    """PCP after the ensemble: continued pre-training, then every pattern model fine-tuned again from its adapter."""
    results = {"pretraining": pretraining_stage(cli, plan, root, shot_seed, templates)}
    if plan.stop_after == "pretraining":
        return results
    start = load_file(str(root / "pcp" / "pretraining" / PCP_ADAPTER))
    for index, template in enumerate(templates):
        for seed in plan.seeds:
            name = f"p{index}-s{seed}"
            results[name] = train_pattern_model(cli, root / "pcp" / name, template, shot_seed, seed, None, init=start)
    return results


def _check_pool(cli: PetCLI, plan: PetPlan) -> None:
    """The data set up (its shots drawn) and its unlabelled pool checked, before anything is written or trained.

    Every pattern model scores the pool (the ensemble's input), so `pet` always needs one; the sentence names
    every stage of this plan that reads it.
    """
    data = cli.datamodule
    if isinstance(data, UnlabelledPool):
        data.setup("fit")
    if has_pool(data):
        return
    readers = ["every pattern model scores it for the ensemble",
               *["the pattern models' language-model term trains on it (model.init_args.alpha < 1)"] * (cli.model.alpha < 1),
               *["self-calibration pseudo-labels it (model.init_args.self_calibration)"] * (cli.model.self_calibration is not None),
               *["iPET's later generations train on it (pet.generations)"] * (plan.generations > 1),
               *["the distilled classifier trains on it (pet.distill)"] * (plan.distill and plan.stop_after is None),
               *["PCP pseudo-labels it (pet.pcp)"] * plan.pcp]
    raise PetConfigError(f"The data's unlabelled pool is empty, but {', '.join(readers)}; {POOL_REMEDY}.")


def _check_plan(cli: PetCLI, plan: PetPlan) -> list[str]:
    """Every pattern's data template, checked before anything trains; and the run folder's earlier config."""
    _check_positions(cli.model.backbone, cli.datamodule.input_length_limit)
    if cli.config.data.init_args.get("test_size") in (0, 0.0):
        raise PetConfigError("pet reports every stage on the test split, but data.init_args.test_size is 0; give it a "
                             "test split (e.g. test_size: 0.2).")
    label_column = cli.config.data.init_args.get("label_column", "label")
    named = [(f"pet.patterns[{index}]", pattern) for index, pattern in enumerate(plan.patterns)]
    for argument, template in [*named, ("pet.classifier_template", plan.classifier_template)]:
        check_text_slot(template, argument)
        check_no_label_slot(template, label_column, argument)
    templates = [cli.model.task.template_for(pattern) for pattern in plan.patterns]
    _check_pool(cli, plan)
    out = Path(plan.output_dir)
    settings = cli.parser.dump(cli.config, skip_none=False)
    recorded = yaml.safe_load(settings)
    recorded["pet"].pop("stop_after", None)
    # Every run seeds itself from pet.seeds; the top-level seed_everything is unused, and LightningCLI draws it at
    # random when a recipe leaves it out, which would make the same recipe look changed on every rerun.
    recorded.pop("seed_everything", None)
    earlier = out / CONFIG_FILE
    if earlier.is_file() and yaml.safe_load(earlier.read_text()) != recorded:
        raise PetConfigError(f"{out} holds a PET run made with another config; use a new pet.output_dir (or delete it) "
                             "to run this one.")
    out.mkdir(parents=True, exist_ok=True)
    earlier.write_text(yaml.safe_dump(recorded, sort_keys=False))
    return templates


def _seed_of(*parts: int) -> int:
    """A seed for one iPET draw, the same on every rerun (so a resumed generation draws the same set)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def run(cli: PetCLI, plan: PetPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every stage for every draw of shots; returns what the summary table shows, and PCP's stages (with pet.pcp)."""
    templates = _check_plan(cli, plan)
    out = Path(plan.output_dir)
    shot_seeds = plan.shot_seeds or [cli.config.data.init_args.shot_seed]
    runs: dict[str, Any] = {}
    pcp_runs: dict[str, Any] = {}
    for shot_seed in shot_seeds:
        root = out / f"shots-{shot_seed}"
        models: dict[str, Path] = {}
        for generation in range(plan.generations):
            previous = {name: _scored(folder, json.loads((folder / "result.json").read_text()))[0]
                        for name, folder in models.items()}
            models = {}
            for index, template in enumerate(templates):
                for seed in plan.seeds:
                    name = f"p{index}-s{seed}"
                    pseudo = None
                    if generation > 0:
                        shots = [cli.config.data.init_args.shots_per_class] * len(cli.model.task.label_names)
                        pseudo = ipet_training_set([m for n, m in previous.items() if n != name], shots, generation,
                                                   plan.ipet_share, plan.ipet_scale, _seed_of(shot_seed, generation, index, seed))
                    folder = root / f"g{generation}" / name
                    runs.setdefault(shot_seed, {})[f"g{generation}/{name}"] = train_pattern_model(
                        cli, folder, template, shot_seed, seed, pseudo, train=generation > 0 or not plan.zero_shot)
                    models[name] = folder
        if plan.stop_after == "patterns":
            continue
        runs[shot_seed]["ensemble"] = ensemble_stage(cli, root, models)
        if plan.stop_after == "ensemble":
            continue
        if plan.pcp:
            pcp_runs[shot_seed] = pcp_stages(cli, plan, root, shot_seed, templates)
        if plan.stop_after == "pretraining" or not plan.distill:
            continue
        runs[shot_seed]["classifier"] = classifier_stage(cli, plan, root, shot_seed)
    return runs, pcp_runs


def pet_command(argv: list[str]) -> None:
    """Parse the recipe, run what is not finished yet, print the table; bad input is one sentence (exit 2)."""
    command_line, sys.argv = sys.argv, [sys.argv[0], *argv]  # LightningCLI reads sys.argv (given args too, it warns)
    try:
        cli = PetCLI(ClozeModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                     save_config_callback=None, auto_configure_optimizers=False,
                     parser_kwargs={"prog": "lightning-peft pet", "exit_on_error": False,
                                    "description": (__doc__ or "").split("\n\n")[0]})
        sys.argv = command_line
        plan = cli.config_init.pet
        runs, pcp_runs = run(cli, plan)
    except (ArgumentError, ValueError, MisconfigurationException) as error:
        message = _plan_error(error) or _one_sentence(error)
        if message is None:
            raise
        refuse(message)
    finally:
        sys.argv = command_line
    report(runs, Path(plan.output_dir))
    if plan.pcp and plan.stop_after is None:
        pcp_report(runs, pcp_runs, Path(plan.output_dir), zero_shot=plan.zero_shot)


def _plan_error(error: BaseException | None) -> str | None:
    """The sentence of a `PetConfigError` behind `error` (jsonargparse wraps errors raised while instantiating)."""
    while error is not None:
        if isinstance(error, PetConfigError):
            return str(error)
        error = error.__cause__ or error.__context__
    return None
