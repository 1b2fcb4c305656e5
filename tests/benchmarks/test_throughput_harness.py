"""benchmarks/throughput.py end to end on tiny-llama: both arms train the same tokens, every row is filled."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.benchmarks.harness import BENCHMARKS, run_script


@pytest.mark.timeout(960)
def test_ours_and_peer_train_the_same_batches_and_report_ratios(tmp_path):
    output = tmp_path / "throughput.json"
    stdout = run_script("throughput.py", [
        "--backbone", "tiny-llama", "--datasets", "movie_dialog", "--steps", "3", "--warmup-steps", "1",
        "--batch-size", "4", "--repeats", "1", "--threads", "1", "--precisions", "fp32,bf16", "--output", str(output)],
        timeout=900)  # six arm processes (three arms x two precisions); minutes only on a crowded machine
    assert "speed/peer" in stdout and "bf16/fp32" in stdout  # the printed table

    section = json.loads(output.read_text())["cpu"]
    assert "--steps 3" in section["command"]
    (model,) = section["models"]
    rows = {(r["arm"], r["variant"], r["precision"]): r for r in model["rows"]}
    assert set(rows) == {(arm, variant, precision) for arm, variant in
                         (("ours", "plain"), ("ours", "tricks"), ("peer", "plain")) for precision in ("fp32", "bf16")}
    for row in rows.values():
        assert row["tokens_per_sec"] > 0 and row["peak_memory_bytes"] > 0 and row["memory_kind"] == "peak_rss_bytes"
    for precision in ("fp32", "bf16"):
        ours, tricks, peer = (rows[arm, variant, precision] for arm, variant in
                              (("ours", "plain"), ("ours", "tricks"), ("peer", "plain")))
        assert tricks["features"] == ["packing", "chunked"]
        # Equal settings: the peer trains exactly our batches (non-padding tokens per step) from the same
        # base model, so the first loss (LoRA B starts at zero) is the same; packing and the chunked loss
        # see the same examples per step and must not change that loss either. In bf16 each side autocasts
        # its own forward and computes its own loss: equal up to bf16 rounding of the logits.
        tolerance = 1e-4 if precision == "fp32" else 2e-3
        assert ours["tokens_per_step"] == peer["tokens_per_step"] == tricks["tokens_per_step"]
        assert ours["loss_step1"] == pytest.approx(peer["loss_step1"], abs=tolerance)
        assert tricks["loss_step1"] == pytest.approx(ours["loss_step1"], abs=tolerance)
        # ratios to the peer are at equal precision
        assert ours["speed_vs_peer_plain"] == pytest.approx(ours["tokens_per_sec"] / peer["tokens_per_sec"])
        assert tricks["memory_vs_ours_plain"] == pytest.approx(tricks["peak_memory_bytes"] / ours["peak_memory_bytes"])
    for arm, variant in (("ours", "plain"), ("ours", "tricks"), ("peer", "plain")):
        bf16, fp32 = rows[arm, variant, "bf16"], rows[arm, variant, "fp32"]
        assert bf16["speed_vs_fp32"] == pytest.approx(bf16["tokens_per_sec"] / fp32["tokens_per_sec"])
        assert "speed_vs_fp32" not in fp32
        # both precisions train the same batches, and bf16 autocast is a rounding of the same forward
        assert bf16["tokens_per_step"] == fp32["tokens_per_step"]
        assert bf16["loss_step1"] == pytest.approx(fp32["loss_step1"], abs=2e-2) and bf16["loss_step1"] != fp32["loss_step1"]
    assert rows["ours", "plain", "fp32"]["data"]["padding_fraction_plain"] > 0  # variable lengths: padding in plain batches


def test_precisions_are_checked_before_any_run():
    throughput = _harness_module()
    with pytest.raises(SystemExit):
        throughput.parse_args(["--precisions", "fp32,fp16"])
    assert throughput.parse_args([]).precisions == "fp32,bf16"
    assert throughput.parse_args(["--device", "gpu"]).precisions == "bf16"


@pytest.mark.timeout(600)
def _harness_module():
    """benchmarks/throughput.py as a module, without putting benchmarks/ on sys.path or the module in sys.modules."""
    spec = importlib.util.spec_from_file_location("benchmarks_throughput", BENCHMARKS / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_settings_train_on_a_cpu(tmp_path):
    """What `--device gpu` runs (long_sft, bf16-mixed, fused AdamW with clipping, bucketing and the chunked
    loss), with only the accelerator swapped for a CPU: a GPU must not be the first place these settings run."""
    throughput = _harness_module()
    args = throughput.parse_args(["--device", "gpu", "--backbone", "tiny-llama", "--steps", "3", "--warmup-steps", "1",
                                  "--batch-size", "2"])
    path = throughput.model_path(args.backbone)
    examples_file = tmp_path / "examples.json"
    examples_file.write_text(json.dumps(throughput.training_order(throughput.workload_data("long_sft", 2, 3), path)))
    results = {}
    for arm, variant in (("ours", "chunked"), ("ours", "tricks"), ("peer", "plain")):
        spec = {**throughput.base_spec(args, args.backbone, path, "long_sft", args.precisions), "variant": variant,
                "repeat": 0, "features": throughput.features_of(variant, "gpu"), "device": "cpu"}
        results[arm, variant] = throughput.run_arm(arm, spec, examples_file, tmp_path, threads=1)
    optimizer = throughput.ours_config(spec, "result.json", str(tmp_path))["model"]["init_args"]["optimizer"]

    assert spec["precision"] == "bf16" and spec["max_grad_norm"] == 1.0 and optimizer["init_args"]["fused"] is True
    assert results["ours", "tricks"]["features"] == ["bucketing", "chunked"]
    chunked, peer = results["ours", "chunked"], results["peer", "plain"]
    assert all(r["steps"] == 3 for r in results.values())
    # the same batches in the same order: bf16 logits, each side's own loss code
    assert chunked["tokens_per_step"] == peer["tokens_per_step"]
    assert chunked["losses"][0] == pytest.approx(peer["losses"][0], abs=2e-3)
