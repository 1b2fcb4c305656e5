"""benchmarks/ppo.py: TRL's arm must run the very network ours does (checked on the first prompt's logits)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_peft import zoo
from tests.benchmarks.harness import load_script


def test_the_trl_arm_is_stopped_when_its_model_gives_other_logits(monkeypatch):
    harness = load_script("ppo.py", monkeypatch)
    path, prompt = str(zoo.resolve("tiny-llama")), [5, 17, 42, 9, 3]
    ours = {"model": path, "rows": [{"prompts": [prompt]}]}
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)(input_ids=torch.tensor([prompt])).logits[0, -1]
    assert harness.same_network(ours, logits.tolist()) < 1e-5
    shifted = logits.clone()
    shifted[7] += 0.01  # e.g. another RoPE base moves SmolLM2-135M's logits by up to 1.2
    with pytest.raises(SystemExit, match="TRL's model gives logits up to 0.01 away from ours"):
        harness.same_network(ours, shifted.tolist())


def test_ppo_against_sft_is_summarised_over_seeds_and_paired_by_seed(tmp_path, monkeypatch):
    import json

    harness = load_script("ppo.py", monkeypatch)
    accuracies = {1: {"zero_shot": 0.4, "sft_generated": 0.6, "sft_verbalizer": 0.8, "ppo_generated": 0.7},
                  2: {"zero_shot": 0.5, "sft_generated": 0.7, "sft_verbalizer": 0.9, "ppo_generated": 0.6}}
    for seed, by_policy in accuracies.items():
        written: dict[str, dict] = {}
        for policy, (run, section) in harness.VS_SFT.items():
            acc = by_policy[policy]
            written.setdefault(run, {})[section] = {"test/acc": acc, "test/f1": acc / 2, "val/acc": 0.0}
        for run, sections in written.items():
            folder = tmp_path / f"seed{seed}" / run / "lightning_logs" / "version_0"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(sections))
    result = harness.vs_sft({seed: tmp_path / f"seed{seed}" for seed in accuracies})
    assert result["per_seed"][2]["ppo_generated"] == {"acc": 0.6, "f1": 0.3}
    assert result["mean_std"]["sft_verbalizer"]["acc"] == pytest.approx((0.85, 0.0707), abs=1e-4)
    assert result["ppo_minus_sft_generated"]["acc"] == pytest.approx((0.0, 0.1414), abs=1e-4)  # +0.1 and -0.1
    with pytest.raises(SystemExit, match="No metrics.json under .*seed3/ppo: run that seed's ppo command first"):
        harness.vs_sft({3: tmp_path / "seed3"})
    unfinished = tmp_path / "seed2" / "sft" / "lightning_logs" / "version_0" / "metrics.json"
    unfinished.write_text(json.dumps({"fit": {"train/loss": 0.5}}))
    with pytest.raises(SystemExit, match=r"has no 'test' section \(it has \['fit'\]\); did that run finish\?"):
        harness.vs_sft({2: tmp_path / "seed2"})


def test_curves_of_several_runs_go_to_one_png_and_a_csv_without_rewards_is_refused(tmp_path, monkeypatch):
    harness = load_script("ppo.py", monkeypatch)
    runs = []
    for seed in (1, 2):
        path = tmp_path / f"seed{seed}.csv"
        path.write_text("step,train/reward,train/kl,train/kl_coef,val/acc\n"
                        + "".join(f"{i},{i / 10 - seed},{i / 5},0.2,\n" for i in range(4)) + "3,,,,0.8\n")
        runs.append(path)
    harness.plot_curves(runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "validation_only.csv"
    empty.write_text("step,val/acc\n3,0.8\n")
    with pytest.raises(SystemExit, match="validation_only.csv has no train/reward rows"):
        harness.plot_curves([empty], tmp_path / "other.png")
