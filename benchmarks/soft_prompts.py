"""Prompt tuning (100 tokens) vs DePT at the same trainable-parameter budget, plus EPT and IAPT rows.

    python benchmarks/soft_prompts.py                          # 4 arms x 40 steps x split seeds 42, 1, 2 (~1 h, 2 cores)
    python benchmarks/soft_prompts.py --split_seeds 42         # one data split (~19 min)
    python benchmarks/soft_prompts.py --arms prompt_tuning dept --steps 20
    python benchmarks/soft_prompts.py --pad_to_max_length      # DePT/EPT pad inputs to s=64 as the paper does
    python benchmarks/soft_prompts.py --arms prompt_tuning dept ept iapt prefix_tuning

DePT (Shi & Lipani, "DePT: Decomposed Prompt Tuning for Parameter-Efficient Fine-tuning", ICLR 2024,
arXiv:2309.05173) trades prompt length for a low-rank update of the input embeddings; with the
prompt shorter, the model reads fewer positions, and the paper reports at least the accuracy of
prompt tuning (Lester et al. 2021, arXiv:2104.08691) for over 20% less time and memory. EPT (Lan et
al., "Efficient Prompt Tuning by Multi-Space Projection and Prompt Fusion", 2024) extends DePT; IAPT
(Zhu et al., "IAPT: Instance-Aware Prompt Tuning for Large Language Models", arXiv:2405.18203)
generates 4 tokens per layer; prefix tuning (Li & Liang 2021, arXiv:2101.00190) is optional.

The arms run on three data splits by default (`--split_seeds 42 1 2`: which TREC questions are
training, validation and test, and the batch order), because 40 steps of batch 16 see 640 examples and
an arm's accuracy moves by 10-30 points from one split to another; the summary gives each arm's
mean ± sample std over the splits and the per-split ratios to prompt tuning. Every split also gets a
`zero_shot` row: the test split scored by the bare model (the quickstart recipe's LoRA, whose B is zero
before training, through `lightning_peft.cli test`), the floor a soft prompt must clear.

Each arm is a fresh process running the real CLI on its recipe, `configs/soft_prompt/<arm>_trec6.yaml`
(SmolLM2-135M, TREC-6 by verbalizer, DualLRSchedule), with the same seed, data, batch size and
number of steps; validation, checkpointing and the test before training are off, and the test
after training gives the accuracy. Added callbacks: `Throughput` (median seconds per optimizer
step and non-padding tokens/s after its 2 warm-up steps; soft-prompt positions are not counted as
tokens) and this file's `ArmReport`, which writes what else a row needs:

- `peak_memory_gb`: the process's peak resident set size (CPU) over setup and training: it includes
  Python, the libraries and the frozen model (about 0.57 GB for SmolLM2, the same for every arm);
- `train_peak_gb` / `train_increase_gb`: the peak RSS during training only (the kernel's peak counter
  is reset when training starts, via /proc/self/clear_refs) and its increase over the RSS at that
  moment: gradients, optimizer state and activations, the part a method changes. On a GPU both are
  `torch.cuda` allocated-memory figures instead (`memory_kind` says which). `throughput.peak_memory_gb`
  is read after the reset, so it is the training-time peak as well;
- `layer_seq_len`: mean number of positions the first transformer layer saw per training step
  (input width + prompt; DePT's saving comes from this); `input_tokens`: mean non-padding input tokens per example.

Sizing of the default 40 steps: on a busy 2-core machine (1 thread, about 0.7 of a core) prompt
tuning took 19.4 s per step (batch 16, 114 positions at the first layer: 100 prompt + 14 input)
and grew the RSS by 3.1 GB during training (activations). Cost is about proportional to positions
here, so DePT/EPT (74 positions) are expected near 0.65x of that and IAPT (18) far below; on a quiet
2-core machine with 2 threads that is roughly 8 + 5 + 5 + 2 s per step for the four default arms,
plus about a minute per arm to load and test on 500 examples: ~18 minutes per split, about an hour
for the default three. Use `--steps 30` or `--split_seeds 42` on a slower machine.

Limitation: `--pad_to_max_length` pads DePT/EPT inputs to the offset's s=64 positions (DePT's own
option); `ClassificationData` has no pad-to-max-length option, so prompt tuning still runs on
batches padded to their longest input. Results go to benchmarks/results/soft_prompts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from arm_process import ROOT, cli_command, exit_on_sigterm, fit_command, run_arm_process

RECIPES = ROOT / "configs" / "soft_prompt"
ZERO_SHOT_RECIPE = ROOT / "configs" / "quickstart.yaml"  # same template and label words; LoRA's B = 0 before training
RESULTS = Path(__file__).parent / "results" / "soft_prompts.json"
ARMS = ("prompt_tuning", "dept", "ept", "iapt", "prefix_tuning")
DEFAULT_ARMS = ("prompt_tuning", "dept", "ept", "iapt")
DEFAULT_SPLIT_SEEDS = (42, 1, 2)  # 42 is the recipes' own split
ZERO_SHOT = "zero_shot"
PADDED_ARMS = ("dept", "ept")  # the methods with a pad_to_max_length option
BASELINE = "prompt_tuning"
WARMUP_STEPS = 2  # Throughput's steps left out of every timing
ROW_FIELDS = ("arm", "trainable_parameters", "steps", "test_acc", "val_acc", "train_loss", "seconds_per_step",
              "tokens_per_sec", "measured_steps", "layer_seq_len", "input_tokens", "peak_memory_gb", "setup_memory_gb",
              "train_peak_gb", "train_increase_gb", "memory_kind", "wall_seconds", "throughput")
RATIO_FIELDS = ("test_acc", "seconds_per_step", "tokens_per_sec", "peak_memory_gb", "train_increase_gb",
                "layer_seq_len")


def _proc_status_kb(field: str) -> int | None:
    """A `VmRSS`/`VmHWM` line of /proc/self/status in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS counter (VmHWM, ru_maxrss) to the current RSS; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _transformer_layers(module: torch.nn.Module) -> torch.nn.Module | None:
    """The first block of the backbone's layer list (`layers`, `h` or `block`), or None."""
    for name, child in module.named_modules():
        last = name.rsplit(".", 1)[-1]
        if isinstance(child, torch.nn.ModuleList) and len(child) and last in ("layers", "h", "block"):
            return child[0]
    return None


class ArmReport(L.Callback):
    """Benchmark helper added to each arm's CLI run: writes memory, sequence lengths and the
    `Throughput` summary to a JSON file when training ends.

    Args:
        path: The JSON file to write.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.widths: list[int] = []
        self.input_tokens: list[float] = []
        self.memory: dict[str, Any] = {}
        self._hook = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.memory = {"memory_kind": "cuda_allocated", "setup_gb": torch.cuda.memory_allocated(device) / 1e9,
                           "peak_before_train_gb": torch.cuda.max_memory_allocated(device) / 1e9, "reset": True}
            torch.cuda.reset_peak_memory_stats(device)
        else:
            rss, hwm = _proc_status_kb("VmRSS"), _proc_status_kb("VmHWM")
            self.memory = {"memory_kind": "process_rss", "setup_gb": None if rss is None else rss * 1024 / 1e9,
                           "peak_before_train_gb": None if hwm is None else hwm * 1024 / 1e9,
                           "reset": rss is not None and _reset_peak_rss()}
        layer = _transformer_layers(pl_module)
        if layer is not None:
            self._hook = layer.register_forward_pre_hook(self._record_width, with_kwargs=True)

    def _record_width(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if module.training and isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
            self.widths.append(int(hidden.shape[1]))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        if isinstance(mask, torch.Tensor):
            self.input_tokens.append(float(mask.sum()) / mask.shape[0])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
        memory = dict(self.memory)
        if memory.get("memory_kind") == "cuda_allocated":
            torch.cuda.synchronize(pl_module.device)
            train_peak = torch.cuda.max_memory_allocated(pl_module.device) / 1e9
        else:
            hwm = _proc_status_kb("VmHWM")
            train_peak = hwm * 1024 / 1e9 if hwm is not None and memory.get("reset") else None
        memory["train_peak_gb"] = train_peak
        memory["train_increase_gb"] = None if train_peak is None else train_peak - memory["setup_gb"]
        known = [v for v in (memory.get("peak_before_train_gb"), train_peak) if v is not None]
        memory["peak_memory_gb"] = max(known) if known else None
        throughput = next((c for c in trainer.callbacks if type(c).__name__ == "Throughput"), None)
        report = {
            "throughput": throughput.summary() if throughput is not None else None,
            "memory": memory,
            "layer_seq_len": statistics.mean(self.widths) if self.widths else None,
            "input_tokens": statistics.mean(self.input_tokens) if self.input_tokens else None,
            "trainable_parameters": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            "global_step": trainer.global_step,
        }
        self.path.write_text(json.dumps(report, indent=2))


# -- parent: one CLI process per arm --------------------------------------------------------


def adjusted_recipe(arm: str, scale: float, rates: dict[str, float], root: Path) -> Path:
    """The arm's recipe with every learning rate (optimizer and DualLRSchedule groups) multiplied by `scale`,
    then the DualLRSchedule groups named in `rates` set to those peak rates (the recipe itself when neither applies)."""
    recipe = RECIPES / f"{arm}_trec6.yaml"
    if scale == 1.0 and not rates:
        return recipe
    config = yaml.safe_load(recipe.read_text())
    optimizer = config["model"]["init_args"]["optimizer"]["init_args"]
    optimizer["lr"] = float(optimizer["lr"]) * scale
    groups = {name: group for callback in config.get("trainer", {}).get("callbacks", [])
              for name, group in callback.get("init_args", {}).get("groups", {}).items()}
    for group in groups.values():
        if "lr" in group:
            group["lr"] = float(group["lr"]) * scale
    missing = sorted(set(rates) - set(groups))
    if missing:
        raise SystemExit(f"--rates names {missing}, which {recipe.name} has no DualLRSchedule group for; "
                         f"its groups are {sorted(groups)}.")
    for name, lr in rates.items():
        groups[name]["lr"] = lr
    tag = "_".join([f"x{scale:g}", *(f"{name}{lr:g}" for name, lr in sorted(rates.items()))])
    path = root / f"{arm}_lr_{tag}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def arm_command(arm: str, args: argparse.Namespace, split_seed: int, root: Path, report: Path) -> list[str]:
    """The `lightning_peft.cli fit` command line of one arm on the data split `split_seed`."""
    command = [
        *fit_command(adjusted_recipe(arm, args.lr_scale, args.rates, root), args.backbone, args.seed, args.steps, root),
        "--test_after_fit", "true",
        "--data.init_args.batch_size", str(args.batch_size),
        "--trainer.precision", args.precision,
        "--trainer.callbacks+=" + json.dumps({"class_path": "lightning_peft.callbacks.Throughput",
                                              "init_args": {"warmup_steps": WARMUP_STEPS}}),
        "--trainer.callbacks+=" + json.dumps({"class_path": "soft_prompts.ArmReport",
                                              "init_args": {"path": str(report)}}),
    ]
    if args.test_examples is not None:
        command += ["--data.init_args.max_eval_examples", str(args.test_examples)]
    command += ["--data.init_args.split_seed", str(split_seed)]
    if args.validate:  # one validation pass after the last step (val/acc in the fit metrics)
        command += ["--trainer.limit_val_batches", "1.0", "--trainer.val_check_interval", str(args.steps)]
    if arm in PADDED_ARMS:
        command += ["--model.init_args.method.init_args.pad_to_max_length", str(args.pad_to_max_length).lower()]
    return command


def zero_shot_command(args: argparse.Namespace, split_seed: int, root: Path) -> list[str]:
    """`lightning_peft.cli test` of the untrained model on the split's test questions (the arms' template and words)."""
    command = [*cli_command("test", ZERO_SHOT_RECIPE, args.backbone, args.seed, root),
               "--trainer.precision", args.precision, "--data.init_args.split_seed", str(split_seed)]
    if args.test_examples is not None:
        command += ["--data.init_args.max_eval_examples", str(args.test_examples)]
    return command


def run_zero_shot(args: argparse.Namespace, split_seed: int, workdir: Path) -> dict:
    """The `zero_shot` row of one split: test accuracy before any training."""
    root = workdir / f"split{split_seed}" / ZERO_SHOT
    root.mkdir(parents=True, exist_ok=True)
    metrics = root / "metrics.json"
    wall = run_arm_process(zero_shot_command(args, split_seed, root), root / "output.log", metrics,
                           f"zero-shot test at split {split_seed}")
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(arm=ZERO_SHOT, trainable_parameters=0, steps=0, wall_seconds=wall,
               test_acc=json.loads(metrics.read_text())["test_before_training"]["test/acc"])  # RunSummary's key at step 0
    return row


def run_arm(arm: str, args: argparse.Namespace, split_seed: int, workdir: Path) -> dict:
    """Run one arm in its own process on the data split `split_seed` and return its row."""
    root = workdir / f"split{split_seed}" / arm
    root.mkdir(parents=True, exist_ok=True)
    report, log = root / "arm_report.json", root / "output.log"
    wall = run_arm_process(arm_command(arm, args, split_seed, root, report), log, report,
                           f"arm {arm} at split {split_seed}")
    measured = json.loads(report.read_text())
    metrics = json.loads((root / "metrics.json").read_text())
    throughput, memory = measured["throughput"] or {}, measured["memory"]
    return {
        "arm": arm,
        "trainable_parameters": measured["trainable_parameters"],
        "steps": measured["global_step"],
        "test_acc": metrics.get("test", {}).get("test/acc"),
        "val_acc": metrics.get("fit", {}).get("val/acc"),
        "train_loss": metrics.get("fit", {}).get("train/loss"),
        "seconds_per_step": throughput.get("step_time"),
        "tokens_per_sec": throughput.get("tokens_per_sec"),
        "measured_steps": throughput.get("steps"),
        "layer_seq_len": measured["layer_seq_len"],
        "input_tokens": measured["input_tokens"],
        "peak_memory_gb": memory["peak_memory_gb"],
        "setup_memory_gb": memory["setup_gb"],
        "train_peak_gb": memory["train_peak_gb"],
        "train_increase_gb": memory["train_increase_gb"],
        "memory_kind": memory["memory_kind"],
        "wall_seconds": wall,
        "throughput": throughput,
    }


def ratios(rows: list[dict], baseline: str) -> dict[str, dict[str, float | None]]:
    """Each trained arm's numbers divided by the baseline arm's (None where either is missing or zero)."""
    base = next(row for row in rows if row["arm"] == baseline)

    def ratio(row: dict, field: str) -> float | None:
        return row[field] / base[field] if row[field] is not None and base[field] else None

    return {row["arm"]: {field: ratio(row, field) for field in RATIO_FIELDS} for row in rows
            if row["arm"] not in (baseline, ZERO_SHOT)}


def _mean_std(values: list[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation of the known values (std None below two)."""
    known = [v for v in values if v is not None]
    return {"mean": statistics.mean(known) if known else None,
            "std": statistics.stdev(known) if len(known) > 1 else None, "n": len(known)}


def summarize(splits: list[dict]) -> dict[str, dict[str, Any]]:
    """Per arm over the splits: test accuracy, seconds per step and the ratios to the baseline (mean ± sample std),
    the per-split test accuracies, and the accuracy minus the same split's zero-shot accuracy."""
    arms = [row["arm"] for row in splits[0]["rows"]]
    summary: dict[str, dict[str, Any]] = {}
    for arm in arms:
        rows = [next(row for row in split["rows"] if row["arm"] == arm) for split in splits]
        zero = [next((row["test_acc"] for row in split["rows"] if row["arm"] == ZERO_SHOT), None) for split in splits]
        entry: dict[str, Any] = {
            "test_acc_by_split": {split["split_seed"]: row["test_acc"] for split, row in zip(splits, rows)},
            "test_acc": _mean_std([row["test_acc"] for row in rows]),
            "seconds_per_step": _mean_std([row["seconds_per_step"] for row in rows]),
            "over_zero_shot": _mean_std([None if z is None or row["test_acc"] is None else row["test_acc"] - z
                                         for row, z in zip(rows, zero)]),
        }
        if all(arm in split["ratios"] for split in splits):
            entry["ratios"] = {field: _mean_std([split["ratios"][arm][field] for split in splits])
                               for field in RATIO_FIELDS}
        summary[arm] = entry
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def print_results(rows: list[dict], relative: dict[str, dict], baseline: str) -> None:
    from lightning_peft.cli.tables import print_table

    print_table([(row["arm"], _fmt(row["trainable_parameters"]), _fmt(row["val_acc"]), _fmt(row["test_acc"]),
                  _fmt(row["seconds_per_step"]), _fmt(row["tokens_per_sec"]), _fmt(row["layer_seq_len"]),
                  _fmt(row["peak_memory_gb"]), _fmt(row["train_increase_gb"])) for row in rows],
                ("arm", "trainable", "val_acc", "test_acc", "s/step", "tokens/s", "seq_len", "peak_gb", "train_incr_gb"))
    if relative:
        print(f"\nratios vs {baseline} (paper, DePT: accuracy >= 1, time and memory < 0.8):")
        print_table([(arm, *(_fmt(r[f]) for f in RATIO_FIELDS)) for arm, r in relative.items()],
                    ("arm", "test_acc", "s/step", "tokens/s", "peak_gb", "train_incr_gb", "seq_len"))


def _pm(stats: dict[str, float | None]) -> str:
    if stats["mean"] is None:
        return "-"
    return _fmt(stats["mean"]) + ("" if stats["std"] is None else f" ± {_fmt(stats['std'], 2)}")


def print_summary(summary: dict[str, dict[str, Any]], split_seeds: list[int], baseline: str) -> None:
    from lightning_peft.cli.tables import print_table

    print(f"\nover split seeds {', '.join(map(str, split_seeds))} (mean ± sample std; ratios vs {baseline} per split):")
    print_table([(arm, _pm(entry["test_acc"]), " / ".join(_fmt(v) for v in entry["test_acc_by_split"].values()),
                  _pm(entry["over_zero_shot"]), _pm(entry["seconds_per_step"]),
                  _pm(entry["ratios"]["test_acc"]) if "ratios" in entry else "-",
                  _pm(entry["ratios"]["seconds_per_step"]) if "ratios" in entry else "-")
                 for arm, entry in summary.items()],
                ("arm", "test_acc", "by split", "- zero-shot", "s/step", "acc ratio", "s/step ratio"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS), help="recipes to run, in order")
    parser.add_argument("--steps", type=int, default=40,
                        help=f"optimizer steps per arm (the first {WARMUP_STEPS} are not timed)")
    parser.add_argument("--batch_size", type=int, default=16, help="training batch size (the recipes' 16)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed_everything of every arm: random initialisation only (the recipes' prompts start "
                             "from text, so prompt tuning does not change with it); see --split_seed")
    parser.add_argument("--split_seeds", "--split_seed", type=int, nargs="+", default=list(DEFAULT_SPLIT_SEEDS),
                        help="run every arm on each of these data splits (the data's split_seed: which questions are "
                             "train/validation/test, and the batch order) and summarise over them; 42 is the recipes' "
                             "own split (default: 42 1 2)")
    parser.add_argument("--precision", default="32-true",
                        help="--trainer.precision of every arm (32-true: the precision the recorded tables used)")
    parser.add_argument("--test_examples", type=int, default=None,
                        help="test on this many examples of the recipes' 500-example test split (default: all)")
    parser.add_argument("--pad_to_max_length", action="store_true",
                        help="DePT/EPT pad inputs to s=64 as the paper does (prompt tuning cannot; see the docstring)")
    parser.add_argument("--lr_scale", type=float, default=1.0,
                        help="multiply every learning rate of every recipe (optimizer and DualLRSchedule groups); "
                             "the recipes use the papers' rates, e.g. prompt lr 0.3, tuned for T5's far larger embeddings")
    parser.add_argument("--rates", nargs="+", default=[], metavar="GROUP=LR",
                        help="set DualLRSchedule groups' peak rates (after --lr_scale), e.g. prompt=0.1 lowrank=1e-5; "
                             "every arm run must have each named group")
    parser.add_argument("--validate", action="store_true",
                        help="also score the validation split after the last step (val_acc): choose rates on it, not on test")
    parser.add_argument("--backbone", default="smollm2-135m", help="model for every arm (tiny-llama for a smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep each arm's run folder (logs, metrics.json) here; default: a temp dir")
    args = parser.parse_args(argv)
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps {args.steps} leaves nothing to time: the first {WARMUP_STEPS} steps are warm-up; "
                     f"use at least {WARMUP_STEPS + 1}.")
    if len(set(args.split_seeds)) != len(args.split_seeds):
        parser.error(f"--split_seeds {' '.join(map(str, args.split_seeds))} names a split twice; list each once.")
    if any(seed < 0 for seed in args.split_seeds):
        parser.error(f"--split_seeds {' '.join(map(str, args.split_seeds))}: split seeds must be non-negative integers.")
    if len(set(args.arms)) != len(args.arms):
        parser.error(f"--arms {' '.join(args.arms)} names an arm twice; list each once.")
    if not args.lr_scale > 0:
        parser.error(f"--lr_scale {args.lr_scale} must be positive.")
    try:
        args.rates = {name: float(lr) for name, lr in (item.split("=", 1) for item in args.rates)}
    except ValueError:
        parser.error(f"--rates {' '.join(args.rates)}: write each as GROUP=LR with a number, e.g. prompt=0.1.")
    if not all(lr > 0 for lr in args.rates.values()):
        parser.error(f"--rates {args.rates}: every learning rate must be positive.")
    for name in ("batch_size", "test_examples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} {value} must be a positive integer.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    baseline = BASELINE if BASELINE in args.arms else args.arms[0]
    splits = []
    with tempfile.TemporaryDirectory(prefix="soft_prompts_") as tmp:
        workdir = args.workdir or Path(tmp)
        for split_seed in args.split_seeds:
            print(f"split seed {split_seed}: zero-shot test ...", flush=True)
            rows = [run_zero_shot(args, split_seed, workdir)]
            for arm in args.arms:
                print(f"split seed {split_seed}: running {arm} ({args.steps} steps on {args.backbone}) ...", flush=True)
                rows.append(run_arm(arm, args, split_seed, workdir))
            splits.append({"split_seed": split_seed, "rows": rows, "ratios": ratios(rows, baseline)})
            print(f"\nsplit seed {split_seed}:")
            print_results(rows, splits[-1]["ratios"], baseline)
            print()
    summary = summarize(splits)
    print_summary(summary, args.split_seeds, baseline)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {
        "command": shlex.join(["python", "benchmarks/soft_prompts.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**settings, "warmup_steps": WARMUP_STEPS, "recipes": {a: f"configs/soft_prompt/{a}_trec6.yaml"
                                                                           for a in args.arms}},
        "machine": {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "torch": torch.__version__},
        "baseline": baseline,
        "splits": splits,
        "summary": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
