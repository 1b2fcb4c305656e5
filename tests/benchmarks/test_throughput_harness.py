"""benchmarks/throughput.py end to end on tiny-llama: both arms train the same tokens, every row is filled."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.benchmarks.harness import BENCHMARKS, run_script


@pytest.mark.timeout(600)
def test_ours_and_peer_train_the_same_batches_and_report_ratios(tmp_path):
    output = tmp_path / "throughput.json"
    stdout = run_script("throughput.py", [
        "--backbone", "tiny-llama", "--datasets", "movie_dialog", "--steps", "3", "--warmup-steps", "1",
        "--batch-size", "4", "--repeats", "1", "--threads", "1", "--output", str(output)])
    assert "speed/peer" in stdout  # the printed table

    section = json.loads(output.read_text())["cpu"]
    assert "--steps 3" in section["command"]
    (model,) = section["models"]
    rows = {(r["arm"], r["variant"]): r for r in model["rows"]}
    assert set(rows) == {("ours", "plain"), ("ours", "tricks"), ("peer", "plain")}
    ours, tricks, peer = rows["ours", "plain"], rows["ours", "tricks"], rows["peer", "plain"]
    assert tricks["features"] == ["packing", "chunked"]
    for row in rows.values():
        assert row["tokens_per_sec"] > 0 and row["peak_memory_bytes"] > 0 and row["memory_kind"] == "peak_rss_bytes"
    # Equal settings: the peer trains exactly our batches (non-padding tokens per step) from the same
    # base model, so the first loss (LoRA B starts at zero) is the same; packing and the chunked loss
    # see the same examples per step and must not change that loss either.
    assert ours["tokens_per_step"] == peer["tokens_per_step"] == tricks["tokens_per_step"]
    assert ours["loss_step1"] == pytest.approx(peer["loss_step1"], abs=1e-4)
    assert tricks["loss_step1"] == pytest.approx(ours["loss_step1"], abs=1e-4)
    assert ours["speed_vs_peer_plain"] == pytest.approx(ours["tokens_per_sec"] / peer["tokens_per_sec"])
    assert tricks["memory_vs_ours_plain"] == pytest.approx(tricks["peak_memory_bytes"] / ours["peak_memory_bytes"])
    assert ours["data"]["padding_fraction_plain"] > 0  # variable lengths: the plain batches hold padding


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
        spec = {**throughput.base_spec(args, args.backbone, path, "long_sft"), "variant": variant, "repeat": 0,
                "features": throughput.features_of(variant, "gpu"), "device": "cpu"}
        results[arm, variant] = throughput.run_arm(arm, spec, examples_file, tmp_path, threads=1)
    optimizer = throughput.ours_config(spec, "result.json", str(tmp_path))["model"]["init_args"]["optimizer"]

    assert spec["precision"] == "bf16" and spec["max_grad_norm"] == 1.0 and optimizer["init_args"]["fused"] is True
    assert results["ours", "tricks"]["features"] == ["bucketing", "chunked"]
    chunked, peer = results["ours", "chunked"], results["peer", "plain"]
    assert all(r["steps"] == 3 for r in results.values())
    # the same batches in the same order: bf16 logits, each side's own loss code
    assert chunked["tokens_per_step"] == peer["tokens_per_step"]
    assert chunked["losses"][0] == pytest.approx(peer["losses"][0], abs=2e-3)
