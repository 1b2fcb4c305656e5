"""benchmarks/throughput.py end to end on tiny-llama: both arms train the same tokens, every row is filled."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.benchmarks.harness import BENCHMARKS, run_script


@pytest.mark.timeout(960)
def test_ours_and_peer_train_the_same_batches_and_report_ratios(tmp_path):
    """fp32 only: the bf16 arms run end to end in `test_the_gpu_settings_train_on_a_cpu`, and the precision
    axis's pairing and ratios are checked on recorded runs in `test_bf16_rows_are_compared_at_equal_precision`."""
    output = tmp_path / "throughput.json"
    stdout = run_script("throughput.py", [
        "--backbone", "tiny-llama", "--datasets", "movie_dialog", "--steps", "3", "--warmup-steps", "1",
        "--batch-size", "4", "--repeats", "1", "--threads", "1", "--precisions", "fp32", "--output", str(output)],
        timeout=900)  # three arm processes; minutes only on a crowded machine
    assert "speed/peer" in stdout and "bf16/fp32" in stdout  # the printed table

    section = json.loads(output.read_text())["cpu"]
    assert "--steps 3" in section["command"]
    (model,) = section["models"]
    rows = {(r["arm"], r["variant"], r["precision"]): r for r in model["rows"]}
    assert set(rows) == {("ours", "plain", "fp32"), ("ours", "tricks", "fp32"), ("peer", "plain", "fp32")}
    for row in rows.values():
        assert row["tokens_per_sec"] > 0 and row["peak_memory_bytes"] > 0 and row["memory_kind"] == "peak_rss_bytes"
    ours, tricks, peer = rows["ours", "plain", "fp32"], rows["ours", "tricks", "fp32"], rows["peer", "plain", "fp32"]
    assert tricks["features"] == ["packing", "chunked"]
    # Equal settings: the peer trains exactly our batches (non-padding tokens per step) from the same base
    # model, so the first loss (LoRA B starts at zero) is the same; packing and the chunked loss see the same
    # examples per step and must not change that loss either.
    assert ours["tokens_per_step"] == peer["tokens_per_step"] == tricks["tokens_per_step"]
    assert ours["loss_step1"] == pytest.approx(peer["loss_step1"], abs=1e-4)
    assert tricks["loss_step1"] == pytest.approx(ours["loss_step1"], abs=1e-4)
    assert ours["speed_vs_peer_plain"] == pytest.approx(ours["tokens_per_sec"] / peer["tokens_per_sec"])
    assert tricks["memory_vs_ours_plain"] == pytest.approx(tricks["peak_memory_bytes"] / ours["peak_memory_bytes"])
    assert "speed_vs_fp32" not in ours
    assert ours["data"]["padding_fraction_plain"] > 0  # variable lengths: padding in plain batches


def test_bf16_rows_are_compared_at_equal_precision():
    """`summarize` pairs every row with the peer's and our plain row of its own precision, and bf16 rows with
    the same arm and variant in fp32 (recorded runs, two repeats each: medians)."""
    throughput = _harness_module()
    speeds = {("ours", "plain", "fp32"): (100, 110), ("ours", "tricks", "fp32"): (150, 170), ("peer", "plain", "fp32"): (90, 100),
              ("ours", "plain", "bf16"): (140, 160), ("ours", "tricks", "bf16"): (200, 220), ("peer", "plain", "bf16"): (100, 120)}
    runs = [{"workload": "w", "arm": arm, "variant": variant, "precision": precision, "features": [],
             "tokens_per_sec": speed, "peak_rss_bytes": 1000.0 + speed, "load_peak_rss_bytes": 1.0,
             "timed_system_seconds": 0.1, "timed_minor_faults": 1, "losses": [1.0], "tokens_per_step": [10]}
            for (arm, variant, precision), pair in speeds.items() for speed in pair]
    rows = {(r["arm"], r["variant"], r["precision"]): r for r in throughput.summarize(runs, {"w": {}}, None, None)}
    assert rows["ours", "plain", "bf16"]["tokens_per_sec"] == 150  # median of the repeats
    assert rows["ours", "plain", "bf16"]["speed_vs_peer_plain"] == pytest.approx(150 / 110)  # bf16 peer, not fp32
    assert rows["ours", "tricks", "bf16"]["speed_vs_ours_plain"] == pytest.approx(210 / 150)
    assert rows["ours", "tricks", "bf16"]["speed_vs_fp32"] == pytest.approx(210 / 160)
    assert rows["peer", "plain", "bf16"]["speed_vs_fp32"] == pytest.approx(110 / 95)
    assert rows["ours", "plain", "fp32"]["speed_vs_peer_plain"] == pytest.approx(105 / 95)
    assert all("speed_vs_fp32" not in row for key, row in rows.items() if key[2] == "fp32")
    assert "speed_vs_peer_plain" not in rows["peer", "plain", "bf16"]


def test_a_variant_cannot_force_the_chunked_loss_both_ways():
    throughput = _harness_module()
    assert throughput.chunked_loss(set()) == "auto"  # lightning-peft's default in the plain row
    assert throughput.chunked_loss({"chunked"}) is True and throughput.chunked_loss({"unchunked"}) is False
    with pytest.raises(SystemExit, match="both chunked and unchunked"):
        throughput.chunked_loss({"chunked", "unchunked"})


def test_precisions_are_checked_before_any_run():
    throughput = _harness_module()
    with pytest.raises(SystemExit):
        throughput.parse_args(["--precisions", "fp32,fp16"])
    assert throughput.parse_args([]).precisions == "fp32,bf16"
    assert throughput.parse_args(["--device", "gpu"]).precisions == "bf16"


def _harness_module():
    """benchmarks/throughput.py as a module, without putting benchmarks/ on sys.path or the module in sys.modules."""
    spec = importlib.util.spec_from_file_location("benchmarks_throughput", BENCHMARKS / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
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
