"""W&B from a config, offline: the whole config, metrics, the forgetting plot and the exported adapter folder as artifact.

wandb 0.31 writes an offline run as one transaction log, `run-<id>.wandb` (LevelDB-style blocks
of protobuf `Record`s), and has no public reader for it, so `_records` reads that format.
An artifact logged offline is written into the log (record and manifest) and its files are staged
locally for `wandb sync` to upload later; we check the staged files.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_peft import zoo

ROOT = Path(__file__).resolve().parents[1]
BLOCK, HEADER = 32768, 7  # LevelDB log block size and record header (crc32, length, type)


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), HEADER, b""
    assert data[:4] == b":W&B", "not a W&B transaction log"
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        if kind == 0:
            break
        pending += payload
        if kind in (1, 4):  # FULL or LAST: a complete record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.timeout(300)
def test_offline_recipe_logs_whole_config_metrics_and_adapter_folder_artifact(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_DATA_DIR": str(tmp_path / "data"),
           "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "lightning_peft.cli", "fit",
            "--config", str(ROOT / "configs/quickstart.yaml"), "--config", str(ROOT / "configs/logger/wandb_offline.yaml"),
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--model.init_args.backbone", "tiny-llama", "--data.init_args.max_train_examples", "8",
            "--data.init_args.max_eval_examples", "8", "--data.init_args.batch_size", "4",
            "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--test_before_fit", "false", "--test_after_fit", "true",
            "--trainer.default_root_dir", str(tmp_path),
            "--trainer.callbacks+=" + json.dumps({"class_path": "lightning_peft.callbacks.ForgettingProbe", "init_args": {
                "every_n_steps": 1, "num_chunks": 2, "chunk_tokens": 16,
                "probe_tasks": [{"dataset": "sms_spam", "template": "{text}\nSpam?", "num_examples": 4}]}})]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    (log,) = tmp_path.rglob("offline-run-*/run-*.wandb")  # under the config's save_dir
    records = list(_records(log))
    config = {item.key: json.loads(item.value_json) for r in records if r.HasField("config") for item in r.config.update}
    assert config["backbone"] == "tiny-llama" and config["method"]["init_args"]["r"] == 8
    history = [{item.nested_key[-1] if item.nested_key else item.key: json.loads(item.value_json) for item in r.history.item}
               for r in records if r.HasField("history")]
    assert [h["train/loss"] for h in history if "train/loss" in h] and any("val/acc" in h for h in history)
    assert any("forgetting/perplexity_ratio" in h for h in history)
    # a logged image is a nested history value: ("forgetting/curves", "_type") -> "images/separated", ...
    images = {tuple(item.nested_key[1:]): json.loads(item.value_json) for r in records if r.HasField("history")
              for item in r.history.item if item.nested_key and item.nested_key[0] == "forgetting/curves"}
    assert images.get(("_type",)) == "images/separated" and images.get(("count",)) == 1, images
    (run_files,) = tmp_path.rglob("offline-run-*/files")
    logged = list((run_files / "media" / "images").rglob("*.png"))
    assert logged and all(p.stat().st_size > 1000 for p in logged), logged  # the PNG itself, staged for upload

    # the whole resolved config, not only the model's arguments
    assert config["data"]["batch_size"] == 4 and config["trainer"]["max_steps"] == 2 and config["seed_everything"] == 42
    (artifact,) = [r.artifact for r in records if r.HasField("artifact")]
    assert artifact.type == "model" and artifact.name.startswith("adapter-")
    staged = {Path(entry.path).name: Path(entry.local_path) for entry in artifact.manifest.contents}
    assert {"adapter_config.json", "adapter_model.safetensors", "lightning_peft.json", "README.md"} <= set(staged), staged
    card = json.loads(staged["lightning_peft.json"].read_text())
    assert card["backbone"] == "tiny-llama" and card["label_names"][0] == "abbreviation" and "test/acc" in card["metrics"]
    assert json.loads(staged["adapter_config.json"].read_text())["base_model_name_or_path"] == "tiny-llama"
    base = Path(zoo.resolve("tiny-llama")) / "model.safetensors"
    assert staged["adapter_model.safetensors"].stat().st_size < base.stat().st_size / 20  # the adapter alone

    # one folder per run: its config.yaml, metrics.json and checkpoints sit together under <project>/<run id>
    (run,) = (tmp_path / "runs" / "lightning-peft").iterdir()
    assert {"config.yaml", "metrics.json", "checkpoints", "adapter"} <= {p.name for p in run.iterdir()}
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
def test_ddp_run_is_one_wandb_run_with_one_adapter_artifact(tmp_path):
    """Two CPU ranks (gloo): rank 0 alone creates the W&B run, logs the config and the adapter folder."""
    from lightning_peft.cli.launch_env import LAUNCH_VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_DATA_DIR=str(tmp_path / "data"),
               WANDB_CACHE_DIR=str(tmp_path / "cache"), WANDB_CONFIG_DIR=str(tmp_path / "config"),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    args = [sys.executable, "-m", "lightning_peft.cli", "fit",
            "--config", str(ROOT / "configs/quickstart.yaml"), "--config", str(ROOT / "configs/logger/wandb_offline.yaml"),
            "--config", str(ROOT / "configs/trainer/ddp_cpu.yaml"),
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--model.init_args.backbone", "tiny-llama", "--data.init_args.max_train_examples", "8",
            "--data.init_args.max_eval_examples", "8", "--data.init_args.batch_size", "2", "--trainer.devices", "2",
            "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false", "--test_before_fit", "false",
            "--test_after_fit", "false", "--trainer.default_root_dir", str(tmp_path)]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=380)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    runs = list(tmp_path.rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    records = list(_records(runs[0]))
    assert len([r for r in records if r.HasField("artifact")]) == 1
    config = {item.key: json.loads(item.value_json) for r in records if r.HasField("config") for item in r.config.update}
    assert int(config["trainer"]["devices"]) == 2 and config["data"]["batch_size"] == 2
    assert len(list((tmp_path / "runs" / "lightning-peft").iterdir())) == 1  # one run folder, not one per rank
