"""PPO with LoRA: our `PPOModule` against TRL's `PPOTrainer` on the same model, prompts, reward and settings.

    flock /tmp/lp-bench.lock python benchmarks/ppo.py --arm ours --iterations 10
    flock /tmp/lp-bench.lock python benchmarks/ppo.py --arm trl --iterations 10 --trl-python /tmp/trl-ref/bin/python
    python benchmarks/ppo.py --table
    python benchmarks/ppo.py --curves <run>/lightning_logs/version_0/metrics.csv [more runs' metrics.csv] docs/methods/ppo_trec6_curves.png
    python benchmarks/ppo.py --vs-sft 42=<folder> 1=<folder> 2=<folder>    # PPO vs SFT over seeds (docs/methods/ppo.md)

The peer is TRL 0.11's `PPOTrainer` (`step(queries, responses, scores)`, the API coder-qicao/RL4GLUE used; TRL 1.x
has no PPO trainer), in its own virtual environment (`pip install torch==2.13.0 trl==0.11.4 transformers==4.46.3
peft==0.13.2 "accelerate<1.3" rich`). Both arms run `configs/rl/ppo_lora_trec6.yaml`'s settings on SmolLM2-135M: rsLoRA
r 16 / alpha 32 on q/k/v/o with the adapter-disabled model as the reference, 16 prompts per rollout batch, 4 new
tokens sampled at temperature 1 (top-k 0, top-p 1), 4 PPO epochs of 2 mini-batches of 8, clip 0.2 / 0.2, value
weight 0.1, GAE gamma 1 / lambda 0.95, adaptive KL from 0.2 (target 6, horizon 10000), AdamW lr 1e-4, gradient
norm clipped at 1, fp32. Our arm runs first and records the token ids of every prompt batch it drew; TRL's arm
reads them, so both see the same prompts in the same order, and scores with the same reward code
(`lightning_peft/tasks/rewards.py`, loaded by path: it needs only the standard library).

Timed: the wall time of each PPO iteration (generate + score + reference and policy passes + 8 updates), the
first `--warmup` iterations left out. Results go to benchmarks/results/ppo_<arm>.json; `--table` prints both
and the ratio of the median iteration times (ours / TRL's).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = "configs/rl/ppo_lora_trec6.yaml"
UPDATES_PER_ITERATION = 8  # ppo_epochs 4 x mini-batches 2 in the recipe


def run_ours(iterations: int, seed: int, extra: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lightning as L
    from recipe_run import recipe_cli

    class Iterations(L.Callback):
        def __init__(self) -> None:
            self.rows: list[dict] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seconds = time.perf_counter() - self.start
            metrics = trainer.callback_metrics
            self.rows.append({"seconds": seconds, "reward": float(metrics["train/reward"]),
                              "kl": float(metrics["train/kl"]), "kl_coef": float(metrics["train/kl_coef"]),
                              "prompts": [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])],
                              "golds": [pl_module.choices[i] for i in batch["labels"].tolist()]})

    folder = tempfile.mkdtemp(prefix="ppo-bench-")  # the recipe's run folder would refuse a second run
    cli = recipe_cli([RECIPE], iterations * UPDATES_PER_ITERATION, seed, "--trainer.default_root_dir", folder, "--test_before_fit", "false", "--test_after_fit", "false", *extra)
    recorder = Iterations()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    from lightning_peft import zoo

    tokenizer = cli.model.tokenizer  # TRL's arm rebuilds it from tokenizer.json (transformers 4.46 cannot read a 5.x config)
    return {"rows": recorder.rows, "choices": cli.model.choices, "model": str(zoo.resolve(cli.model.backbone)),
            "tokenizer": str(Path(tokenizer.name_or_path) / "tokenizer.json"), "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token or tokenizer.eos_token}


TRL_SCRIPT = r'''
import importlib.util, json, sys, time
import torch
from peft import LoraConfig
from transformers import AutoConfig, PreTrainedTokenizerFast
from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

ours, rewards_file, seed = json.loads(open(sys.argv[1]).read()), sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location("rewards", rewards_file)
rewards = importlib.util.module_from_spec(spec); spec.loader.exec_module(rewards)
reward = rewards.LabelReward()
config = PPOConfig(batch_size=16, mini_batch_size=8, ppo_epochs=4, learning_rate=1e-4, init_kl_coef=0.2, adap_kl_ctrl=True,
                   target=6, horizon=10000, gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
                   max_grad_norm=1.0, seed=seed, log_with=None)
lora = LoraConfig(r=16, lora_alpha=32, use_rslora=True, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                  task_type="CAUSAL_LM")
tokenizer = PreTrainedTokenizerFast(tokenizer_file=ours["tokenizer"], eos_token=ours["eos_token"], pad_token=ours["pad_token"])
model_config = AutoConfig.from_pretrained(ours["model"])
rope = json.loads(open(ours["model"] + "/config.json").read()).get("rope_parameters")
if rope is not None:  # transformers 5 keeps rope_theta in rope_parameters; 4.46 would silently use its default, 10000
    if rope.get("rope_type", "default") != "default":
        raise SystemExit(f"TRL's transformers 4.46 reads only default RoPE from a 5.x config, not {rope}.")
    model_config.rope_theta = rope["rope_theta"]
model = AutoModelForCausalLMWithValueHead.from_pretrained(ours["model"], config=model_config, peft_config=lora,
                                                          torch_dtype=torch.float32)
with torch.no_grad():  # the parent compares these with its own model's: both arms must run the same network
    first_logits = model.pretrained_model(input_ids=torch.tensor([ours["rows"][0]["prompts"][0]])).logits[0, -1].tolist()
trainer = PPOTrainer(config, model, ref_model=None, tokenizer=tokenizer)
pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
rows = []
for batch in ours["rows"]:
    queries = [torch.tensor(ids) for ids in batch["prompts"]]
    start = time.perf_counter()
    responses = trainer.generate(queries, return_prompt=False, batch_size=len(queries), max_new_tokens=4, do_sample=True,
                                 top_k=0, top_p=1.0, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    answers = tokenizer.batch_decode(responses, skip_special_tokens=True)
    scores = [torch.tensor(s) for s in reward(answers, batch["golds"], ours["choices"])]
    stats = trainer.step(queries, responses, scores)
    rows.append({"seconds": time.perf_counter() - start, "reward": float(torch.stack(scores).mean()),
                 "kl": float(stats["objective/kl"]), "kl_coef": float(stats["objective/kl_coef"])})
print(json.dumps({"rows": rows, "first_logits": first_logits}))
'''


def run_trl(python: str, seed: int) -> dict:
    ours = RESULTS / "ppo_ours.json"
    if not ours.exists():
        raise SystemExit("Run --arm ours first: TRL's arm replays the prompt batches ours drew.")
    done = subprocess.run([python, "-c", TRL_SCRIPT, str(ours), str(ROOT / "src/lightning_peft/tasks/rewards.py"), str(seed)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["first_logits_max_abs_difference"] = same_network(json.loads(ours.read_text()), result.pop("first_logits"))
    return result


def same_network(ours: dict, trl_logits: list[float], tolerance: float = 1e-3) -> float:
    """The largest difference between TRL's next-token logits on the first prompt and our transformers' (before any
    update, adapter B = 0); stops the benchmark when it exceeds `tolerance`, i.e. the arms would not run one model."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ours["model"], dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ours["rows"][0]["prompts"][0]])).logits[0, -1]
    difference = float((logits - torch.tensor(trl_logits)).abs().max())
    if difference > tolerance:
        raise SystemExit(f"TRL's model gives logits up to {difference:.3g} away from ours on the same prompt; "
                         "its transformers reads the checkpoint differently (e.g. its RoPE settings), so the arms would differ.")
    return difference


def summary(rows: list[dict], warmup: int) -> dict:
    timed = [row["seconds"] for row in rows[warmup:]]
    return {"iterations": len(rows), "timed": len(timed), "median_s_per_iteration": statistics.median(timed),
            "median_s_per_update": statistics.median(timed) / UPDATES_PER_ITERATION,
            "rewards": [round(row["reward"], 3) for row in rows], "kl": [round(row["kl"], 4) for row in rows],
            "kl_coef": [round(row["kl_coef"], 6) for row in rows]}


def table(warmup: int) -> None:
    found = {arm: json.loads((RESULTS / f"ppo_{arm}.json").read_text()) for arm in ("ours", "trl")
             if (RESULTS / f"ppo_{arm}.json").exists()}
    for arm, result in found.items():
        s = summary(result["rows"], warmup)
        print(f"{arm:5s} median {s['median_s_per_iteration']:.2f} s / iteration ({s['timed']} timed), "
              f"rewards {s['rewards']}, kl {s['kl']}")
    if len(found) == 2:
        ours, trl = (summary(found[a]["rows"], warmup)["median_s_per_iteration"] for a in ("ours", "trl"))
        print(f"ratio ours / TRL: {ours / trl:.2f}")


def plot_curves(metrics_csvs: list[Path], png: Path) -> None:
    """Reward, KL and KL coefficient per rollout batch from recipe runs' CSVLogger metrics.csv files (one line per
    run, labelled by its file name), as one PNG."""
    import csv

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    keys = [("train/reward", "reward (mean per rollout batch)"), ("train/kl", "KL to reference (nats / answer)"),
            ("train/kl_coef", "KL coefficient")]
    fig, axes = plt.subplots(1, len(keys), figsize=(12.6, 3.4))
    for metrics_csv in metrics_csvs:
        rows = [row for row in csv.DictReader(metrics_csv.open()) if row.get("train/reward")]
        if not rows:
            raise SystemExit(f"{metrics_csv} has no train/reward rows; point --curves at a PPO run's metrics.csv.")
        for axis, (key, title) in zip(axes, keys):
            axis.plot(range(1, len(rows) + 1), [float(row[key]) for row in rows], marker=".", label=metrics_csv.stem)
            axis.set_xlabel("rollout batch"), axis.set_title(title, fontsize=9)
    if len(metrics_csvs) > 1:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


# policy -> (run folder of a seed, metrics.json section): the runs of the recipe commands in docs/methods/ppo.md.
# `test` of the SFT adapter in the PPO module is a test at step 0 of that run, so RunSummary files it "before training".
VS_SFT = {"zero_shot": ("ppo", "test_before_training"), "sft_generated": ("sft-greedy", "test_before_training"),
          "sft_verbalizer": ("sft", "test"), "ppo_generated": ("ppo", "test")}


def vs_sft(folders: dict[int, Path]) -> dict:
    """PPO against SFT over seeds: each policy's test metrics per seed, their mean ± sample std, and PPO's gain over
    SFT's generated answer paired by seed. `folders`: seed -> the folder holding that seed's sft, sft-greedy and ppo runs."""
    sys.path.insert(0, str(ROOT / "src"))
    from lightning_peft.pet.ensemble import mean_std

    per_seed = {}
    for seed, folder in sorted(folders.items()):
        per_seed[seed] = {}
        for policy, (run, section) in VS_SFT.items():
            found = sorted((folder / run).rglob("metrics.json"))
            if not found:
                raise SystemExit(f"No metrics.json under {folder / run}: run that seed's {run} command first.")
            sections = json.loads(found[-1].read_text())
            if section not in sections:
                raise SystemExit(f"{found[-1]} has no {section!r} section (it has {sorted(sections)}); did that run finish?")
            per_seed[seed][policy] = {key.split("/", 1)[1]: value for key, value in sections[section].items()
                                      if key.startswith("test/")}
    spread: dict[str, dict] = {}
    for policy in VS_SFT:
        for metric in per_seed[next(iter(per_seed))][policy]:
            spread.setdefault(policy, {})[metric] = mean_std([per_seed[seed][policy][metric] for seed in per_seed])
    gains = {metric: mean_std([per_seed[seed]["ppo_generated"][metric] - per_seed[seed]["sft_generated"][metric]
                               for seed in per_seed]) for metric in ("acc", "f1")}
    return {"seeds": sorted(per_seed), "per_seed": per_seed, "mean_std": spread, "ppo_minus_sft_generated": gains}


def print_vs_sft(result: dict) -> None:
    for policy, metrics in result["mean_std"].items():
        print(f"{policy:15s} " + "  ".join(f"{m} {mean:.3f} ± {std:.3f}" for m, (mean, std) in metrics.items()))
    print("PPO - SFT (generated), paired: " + "  ".join(f"{m} {mean:+.3f} ± {std:.3f}"
                                                        for m, (mean, std) in result["ppo_minus_sft_generated"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=["ours", "trl"])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--trl-python", default="/tmp/trl-ref/bin/python")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--curves", nargs="+", metavar="FILE", help="METRICS_CSV [METRICS_CSV ...] PNG: plot recipe runs' "
                        "reward and KL curves, one line per run")
    parser.add_argument("--vs-sft", nargs="+", metavar="SEED=FOLDER", help="summarise PPO against SFT over seeds, each "
                        "seed's folder holding its sft, sft-greedy and ppo runs; writes --vs-sft-output")
    parser.add_argument("--vs-sft-output", type=Path, default=RESULTS / "ppo_trec6" / "ppo_vs_sft_seeds.json")
    parser.add_argument("--extra", action="append", default=[], help="more CLI options for our arm (a smoke run: "
                        "--extra=--model.init_args.backbone=tiny-llama)")
    args = parser.parse_args()
    if args.curves:
        if len(args.curves) < 2:
            parser.error("--curves takes one or more metrics.csv files and then the PNG to write.")
        plot_curves([Path(name) for name in args.curves[:-1]], Path(args.curves[-1]))
        return
    if args.vs_sft:
        malformed = [item for item in args.vs_sft if not re.fullmatch(r"\d+=.+", item)]
        if malformed:
            parser.error(f"--vs-sft takes SEED=FOLDER pairs (e.g. 42=runs/seed42), got {malformed[0]!r}.")
        result = vs_sft({int(seed): Path(folder) for seed, folder in (item.split("=", 1) for item in args.vs_sft)})
        args.vs_sft_output.write_text(json.dumps(result, indent=1))
        print_vs_sft(result)
        return
    if args.arm:
        result = run_ours(args.iterations, args.seed, args.extra) if args.arm == "ours" else run_trl(args.trl_python, args.seed)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"ppo_{args.arm}.json").write_text(json.dumps(result))
    table(args.warmup)


if __name__ == "__main__":
    main()
