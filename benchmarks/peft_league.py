"""The PEFT league table: every method on the same model, data, steps and seeds.

    python benchmarks/peft_league.py                                   # 3 settings x 10 arms x 3 seeds
    python benchmarks/peft_league.py --settings minilm_sms_spam --arms full,lora,bitfit --seeds 0
    python benchmarks/peft_league.py --settings minilm_sms_spam --backbone tiny-bert --steps 4 --seeds 0   # smoke

After Xu et al. 2023, "Parameter-Efficient Fine-Tuning Methods for Pretrained Language Models: A
Critical Review and Assessment" (arXiv:2312.12148), which compares PEFT methods with full fine-tuning
on accuracy, trainable parameters, training speed and memory. Settings (`peft_league_arms.SETTINGS`):
all-MiniLM-L6-v2 with a new head on sms_spam and on bbc_news, and SmolLM2-135M by verbalizer on
TREC-6. Arms: full fine-tuning, LoRA, DoRA, IA3, BitFit, Houlsby and Pfeiffer bottleneck adapters,
prompt tuning, prefix tuning and SetFit, each with its own recipe's settings and learning rate
(`peft_league_arms.ARMS`). Each (setting, arm, seed) is one process (`peft_league_run.py`), so its
peak memory is its own. A method the library refuses on a setting (BitFit on a model without biases,
SetFit on a decoder) is tried once and listed as n/a with the library's sentence.

Per run: test accuracy and macro-F1, trainable parameters (and % of the model), seconds per step
after the warm-up steps, peak RSS during training. Per setting a table of mean ± std over seeds with
step time and memory as ratios to full fine-tuning. Results go to --output after every run, and a run
already there is skipped: an interrupted benchmark resumes where it stopped when run again with the
same options. docs/peft_league.md: fairness rules and how the default steps were sized.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from arm_process import exit_on_sigterm, run_arm_process
from peft_league_arms import ARMS, SETTINGS, compose, default_backbone, source
from peft_league_table import print_setting, summarise

from lightning_peft.atomic import write_file_atomically

RESULTS = Path(__file__).parent / "results" / "peft_league.json"
RUN_SCRIPT = Path(__file__).with_name("peft_league_run.py")


def _names(text: str, known: dict, what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{what} {text!r} must list each of {', '.join(known)} at most once, "
                                         f"comma-separated (unknown: {', '.join(unknown) or 'none'})")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds {text!r} must list distinct non-negative integers, e.g. 0,1,2")
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=lambda t: _names(t, SETTINGS, "--settings"), default=list(SETTINGS),
                        help=f"comma-separated settings (default all: {','.join(SETTINGS)})")
    parser.add_argument("--arms", type=lambda t: _names(t, ARMS, "--arms"), default=list(ARMS),
                        help=f"comma-separated arms, run in this order (default all: {','.join(ARMS)})")
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every arm of every setting "
                        "(default: each setting's, " + ", ".join(f"{k} {s.steps}" for k, s in SETTINGS.items()) + ")")
    parser.add_argument("--warmup_steps", type=int, default=3, help="first steps left out of the step time")
    parser.add_argument("--backbone", default=None, help="model for every arm instead of the setting's, of the same "
                        "architecture (tiny-bert for the minilm settings, tiny-llama for smollm2: smoke tests)")
    parser.add_argument("--test_examples", type=int, default=None,
                        help="score this many examples of each setting's test split (default: all of it, "
                        "except smollm2_trec6: " + str(SETTINGS["smollm2_trec6"].test_examples) + ")")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON; runs already in it are skipped")
    parser.add_argument("--workdir", type=Path, default=None, help="keep each run's folder (config, job, log) here")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps <= args.warmup_steps:
        parser.error(f"--steps {args.steps} leaves no step to time after --warmup_steps {args.warmup_steps}; "
                     f"use at least {args.warmup_steps + 1}.")
    if args.warmup_steps < 1:
        parser.error(f"--warmup_steps {args.warmup_steps} must be at least 1 (the first step builds caches).")
    if args.test_examples is not None and args.test_examples < 1:
        parser.error(f"--test_examples {args.test_examples} must be a positive integer.")
    return args


def setting_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs of a setting comparable; a results file holds one set of these per setting."""
    return {"backbone": args.backbone or default_backbone(name),
            "steps": args.steps or SETTINGS[name].steps, "warmup_steps": args.warmup_steps,
            "test_examples": args.test_examples or SETTINGS[name].test_examples}


def load_results(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The results file (or a new one); refuses to mix runs made with other options into a setting."""
    results = json.loads(path.read_text()) if path.exists() else {"settings": {}}
    for name in args.settings:
        held = results["settings"].get(name, {}).get("options")
        wanted = setting_options(name, args)
        if held is not None and held != wanted:
            raise SystemExit(f"error: {path} holds {name} runs made with {held}, not {wanted}; pass another --output, "
                             "or the same options to resume.")
    return results


def save(path: Path, results: dict[str, Any]) -> None:
    write_file_atomically(path, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))


def run_once(setting: str, arm: str, seed: int, options: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One (setting, arm, seed) in its own process: the report plus wall and CPU seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    config, job, report = folder / "recipe.yaml", folder / "job.json", folder / "report.json"
    backbone = options["backbone"]
    config.write_text(yaml.safe_dump(compose(setting, arm, seed, backbone, options["test_examples"]), sort_keys=False))
    overrides = ["--trainer.default_root_dir", str(folder)]
    if ARMS[arm].own_procedure:
        overrides += ["--trainer.max_steps", "-1"]  # its data module's plan sets the length
    job.write_text(json.dumps({"config": str(config), "steps": options["steps"], "seed": seed,
                               "warmup_steps": options["warmup_steps"], "overrides": overrides}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = run_arm_process([sys.executable, str(RUN_SCRIPT), str(job), str(report)], folder / "output.log", report,
                           f"{setting} {arm} seed {seed}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return json.loads(report.read_text()) | {"wall_seconds": wall, "cpu_seconds": cpu}


def record(entry: dict[str, Any], arm: str, seed: int, report: dict[str, Any]) -> None:
    """Put a run (or the arm's refusal, which holds for every seed) into the setting's entry and refresh its summary."""
    arm_entry = entry["arms"].setdefault(arm, {"source": source(arm), "runs": {}})
    if ARMS[arm].own_procedure:
        arm_entry["note"] = "few-shot: its recipe's own procedure and steps"
    if "refused" in report:
        arm_entry.pop("runs", None)
        arm_entry["refused"] = report["refused"]
    else:
        arm_entry["runs"][str(seed)] = report
    entry["summary"] = summarise(entry["arms"])


def pending(entry: dict[str, Any], arm: str, seed: int) -> bool:
    held = entry["arms"].get(arm, {})
    return "refused" not in held and str(seed) not in held.get("runs", {})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    results = load_results(args.output, args)
    results["machine"] = {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    results["command"] = shlex.join(["python", "benchmarks/peft_league.py", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="peft_league_") as tmp:
        workdir = args.workdir or Path(tmp)
        for setting in args.settings:
            options = setting_options(setting, args)
            entry = results["settings"].setdefault(setting, {"options": options, "arms": {}})
            for seed in args.seeds:  # seeds outermost: an interrupted run leaves whole seeds behind
                for arm in args.arms:
                    if not pending(entry, arm, seed):
                        continue
                    print(f"{setting} {arm} seed {seed} ({options['steps']} steps on {options['backbone']}) ...", flush=True)
                    record(entry, arm, seed, run_once(setting, arm, seed, options, workdir / f"{setting}-{arm}-{seed}"))
                    save(args.output, results)
            print_setting(setting, entry)
    save(args.output, results)
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
