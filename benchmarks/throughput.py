"""Side-by-side training speed: `lightning-peft fit` vs Hugging Face `Trainer` + `peft`.

    python benchmarks/throughput.py                  # CPU defaults: SmolLM2-135M, movie_dialog and trec6, fp32 and bf16
    python benchmarks/throughput.py --device gpu     # random-initialised Llama 0.5B and 1B in bf16, long SFT examples
    python benchmarks/throughput.py --variants plain,tricks,packing,chunked,compile,grad_ckpt   # every speed switch
    python benchmarks/throughput.py --backbone tiny-llama --datasets movie_dialog --steps 4 --warmup-steps 1 \\
        --repeats 1 --output /tmp/throughput.json      # smoke run

Both arms train the same model, LoRA settings (peft's LoraConfig in both), token ids, batches (the
driver tokenizes with lightning-peft's SFTData and hands the peer its examples in the same batch
order), AdamW (fused, constant learning rate, gradient clipping at 1.0), precision and number of
steps; each run is its own process, arms alternate within every repeat, and the median of the
repeats is reported. Both arms count tokens/s the same way (`throughput_timing.py`): non-padding
tokens of the batches trained after `--warmup-steps` over the wall time from the end of the last
warm-up step to the end of the last step (model loading and tokenization excluded). Peak memory
is that of training (reset when training starts): the process's peak RSS on a CPU and
`torch.cuda.max_memory_allocated` on a GPU.

Workloads: `movie_dialog` is instruction SFT with SmolLM2's chat template (variable length, loss on
the reply); `trec6` is question classification trained the same way in both arms, as causal-LM SFT
on "Question: ...\\nAnswer type:" + the label word (loss on the label word and EOS), because a
verbalizer objective has no stock `Trainer` equivalent. `long_sft` (GPU) pairs random spans of the
Lee news corpus (16-640 words) into examples of up to 1,024 tokens.

Variants of our arm (`--variants`, features joined by "+"): `plain` (no bucketing, no packing: the
equal-settings row, with lightning-peft's defaults, which include `CausalLMSFT(chunked_loss="auto")`: the
loss at labelled positions only, computed chunk by chunk), `packing`, `bucketing`, `chunked` (the chunked
loss forced on), `unchunked` (the model's own loss, every position projected onto the vocabulary, as
before "auto" became the default), `compile`, `grad_ckpt`, `peft_dropout` (peft's own nn.Dropout instead of our default
`Lora(compact_dropout=True)`, which keeps shared inputs and 1-byte masks: same numbers, less memory),
`no_allocator_cache` (glibc's default allocator settings instead of `lightning-peft fit`'s
`CpuAllocatorCache`, which keeps freed memory in the process between CPU steps), `sdpa`
(transformers' sdpa, which attends over a whole packed row, instead of the `packed_sdpa` that
lightning-peft picks for packed data), and `tricks` = packing+chunked on a CPU and
bucketing+chunked on a GPU (see `features_of`). The peer runs `--peer-variants` (default `plain`);
`--keep-freed-memory` gives both arms' processes the allocator settings of `CpuAllocatorCache`
through the environment. Ratios are against the peer's plain run and our plain run.

Precision axis (`--precisions`, default fp32,bf16 on a CPU and bf16 on a GPU): every arm runs at each
precision, ours as `--trainer.precision 32-true` / `bf16-mixed`, the peer with `bf16=False` / `True`
(both autocast to bfloat16 over fp32 weights). Ratios to the peer are at equal precision; `bf16/fp32`
is a row's speed over the same arm and variant in fp32.
Results: benchmarks/results/throughput.json (one section per device), and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from lightning_peft.callbacks.cpu_allocator import KEEP_FREED_ENV

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "throughput.json"
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}  # harness name -> our --trainer.precision
FEATURES = ("packing", "bucketing", "chunked", "unchunked", "compile", "grad_ckpt", "peft_dropout", "no_allocator_cache",
            "sdpa")
TREC_TEMPLATE = "Question: {text}\nAnswer type:"
# ~0.5B and ~1B Llama shapes (SmolLM2's 49,152-token vocabulary, tied embeddings, 64-wide heads).
GPU_MODELS = {
    "llama-0.5b": dict(hidden_size=1280, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=20,
                       num_key_value_heads=20),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8),
}


# -- workloads and models ---------------------------------------------------------------------------

def long_sft_file(examples: int, seed: int = 0) -> Path:
    """A JSONL of (prompt, response) pairs cut at random from the Lee news corpus, for long variable-length SFT."""
    from lightning_peft import zoo
    from lightning_peft.data.catalog import load_records

    path = zoo.cache_root() / "bench" / f"long_sft_{examples}_{seed}.jsonl"
    if not path.exists():
        words = " ".join(r["text"] for r in load_records("lee_news", ("text",))).split()
        rng = random.Random(seed)

        def span(low: int, high: int) -> str:
            size = rng.randint(low, high)
            start = rng.randrange(len(words) - size)
            return " ".join(words[start:start + size])

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"prompt": span(16, 256), "response": span(32, 640)}) + "\n"
                                for _ in range(examples)))
    return path


def workload_data(name: str, batch_size: int, steps: int) -> dict:
    """SFTData arguments of a workload (without the speed features)."""
    common = {"batch_size": batch_size, "max_train_examples": batch_size * steps, "val_size": 0, "test_size": 0}
    if name == "movie_dialog":
        return {"dataset": "movie_dialog", "chat_template": True, "max_length": 128, **common}
    if name == "trec6":
        return {"dataset": "trec6", "prompt_column": "text", "response_column": "label",
                "prompt_template": TREC_TEMPLATE, "max_length": 64, **common}
    if name == "long_sft":
        return {"dataset": str(long_sft_file(batch_size * steps)), "max_length": 1024, **common}
    raise SystemExit(f"error: unknown workload {name!r}; choose movie_dialog, trec6 or long_sft.")


def model_path(backbone: str) -> str:
    """A folder both arms load: a zoo model, or a random-initialised bf16 Llama of GPU_MODELS (built once)."""
    from lightning_peft import zoo

    if backbone not in GPU_MODELS:
        return str(zoo.resolve(backbone))
    folder = zoo.cache_root() / "bench" / backbone
    if not (folder / "config.json").exists():
        from transformers import AutoModelForCausalLM, LlamaConfig

        tokenizer = zoo.load_tokenizer("smollm2-135m")
        config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=2048,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id, **GPU_MODELS[backbone])
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def training_order(data_args: dict, backbone_path: str) -> list[dict]:
    """The training examples, unpadded, in the order lightning-peft's plain loader batches them."""
    from lightning_peft.data.sft import SFTData

    data = SFTData(tokenizer=backbone_path, bucket_by_length=False, **data_args)
    data.setup("fit")
    examples = []
    for batch in data.train_dataloader():
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            length = int(mask.sum())
            examples.append({"input_ids": ids[:length].tolist(), "labels": labels[:length].tolist()})
    return examples


def data_stats(examples: list[dict], batch_size: int) -> dict:
    lengths = [len(e["input_ids"]) for e in examples]
    padded = sum(max(lengths[i:i + batch_size]) * len(lengths[i:i + batch_size]) for i in range(0, len(lengths), batch_size))
    return {"examples": len(lengths), "mean_length": statistics.mean(lengths), "max_length": max(lengths),
            "padding_fraction_plain": 1 - sum(lengths) / padded,
            "labelled_fraction": sum(sum(t != -100 for t in e["labels"][1:]) for e in examples) / sum(lengths),
            # token-weighted mean context, for the attention term of the FLOPs per token
            "attention_context": sum(n * n for n in lengths) / sum(lengths)}


# -- one run ----------------------------------------------------------------------------------------

def features_of(variant: str, device: str) -> list[str]:
    if variant == "plain":
        return []
    if variant == "tricks":
        # On a CPU packed rows attend per example (packed_sdpa). It splits each row on the host, one device
        # sync per layer on a GPU, where bucketing is the better trick without flash-attention's varlen kernel.
        return ["packing" if device == "cpu" else "bucketing", "chunked"]
    features = variant.split("+")
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise SystemExit(f"error: unknown feature(s) {unknown} in variant {variant!r}; use plain, tricks or "
                         f"'+'-joined names from {list(FEATURES)}.")
    return features


def chunked_loss(features: set[str]) -> bool | str:
    """`CausalLMSFT(chunked_loss=...)` of a run: lightning-peft's default ("auto") unless a feature names it."""
    if {"chunked", "unchunked"} <= features:
        raise SystemExit("error: a variant cannot be both chunked and unchunked.")
    return True if "chunked" in features else False if "unchunked" in features else "auto"


def ours_config(spec: dict, output: str, root: str) -> dict:
    """The `lightning-peft fit` YAML of a run."""
    features = set(spec["features"])
    callbacks = [{"class_path": "throughput_clock.StepClock", "init_args": {
        "output": output, "warmup_steps": spec["warmup_steps"], "profile_steps": spec["profile_steps"]}}]
    if spec["throughput_callback"]:
        callbacks.append({"class_path": "lightning_peft.callbacks.throughput.Throughput",
                          "init_args": {"warmup_steps": spec["warmup_steps"], "window": spec["steps"]}})
    lora, optimizer = spec["lora"], spec["optimizer"]
    data = {**spec["data"], "bucket_by_length": "bucketing" in features, "packing": "packing" in features}
    return {
        "seed_everything": spec["seed"],
        "test_after_fit": False,
        "cpu_allocator": {"enabled": "no_allocator_cache" not in features},
        "trainer": {"accelerator": spec["device"], "devices": 1,
                    "precision": PRECISIONS[spec["precision"]],
                    "max_steps": spec["steps"], "gradient_clip_val": spec["max_grad_norm"], "logger": False,
                    "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "num_sanity_val_steps": 0, "limit_val_batches": 0, "default_root_dir": root,
                    "callbacks": callbacks},
        "model": {"class_path": "lightning_peft.modules.LoraModule", "init_args": {
            "backbone": spec["model_path"],
            "task": {"class_path": "lightning_peft.tasks.CausalLMSFT", "init_args": {"chunked_loss": chunked_loss(features)}},
            "method": {"class_path": "lightning_peft.methods.Lora",
                       "init_args": {"r": lora["r"], "alpha": lora["alpha"], "dropout": lora["dropout"],
                                     "target_modules": lora["target_modules"],
                                     "compact_dropout": "peft_dropout" not in features}},
            "optimizer": {"class_path": "torch.optim.AdamW",
                          "init_args": {"lr": optimizer["lr"], "betas": optimizer["betas"], "eps": optimizer["eps"],
                                        "weight_decay": optimizer["weight_decay"], "fused": True}},
            "gradient_checkpointing": "grad_ckpt" in features,
            "compile": "compile" in features,
            # packed data otherwise gets packed_sdpa (per-example attention), lightning-peft's default
            "attn_implementation": "sdpa" if "sdpa" in features else None,
        }},
        "data": {"class_path": "lightning_peft.data.SFTData", "init_args": data},
    }




def _environment(threads: int | None, keep_freed_memory: bool = False) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if keep_freed_memory:
        env.update(KEEP_FREED_ENV)  # CpuAllocatorCache's settings, for both arms (ours then leaves them)
    return env


def run_arm(arm: str, spec: dict, examples_file: Path, workdir: Path, threads: int | None,
            keep_freed_memory: bool = False) -> dict:
    """Run one arm in a fresh process and return its result (raises with the process's output on failure)."""
    tag = f"{arm}-{spec['workload']}-{spec['variant']}-{spec['precision']}-{spec['repeat']}"
    output, spec_file = workdir / f"{tag}.result.json", workdir / f"{tag}.spec.json"
    spec_file.write_text(json.dumps(spec))
    if arm == "ours":
        config = workdir / f"{tag}.yaml"
        config.write_text(yaml.safe_dump(ours_config(spec, str(output), str(workdir / tag))))
        command = [sys.executable, "-m", "lightning_peft.cli", "fit", "--config", str(config)]
    else:
        command = [sys.executable, str(HERE / "peer_trainer.py"), "--spec", str(spec_file),
                   "--examples", str(examples_file), "--output", str(output)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=_environment(threads, keep_freed_memory), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate()
    finally:  # interrupted (Ctrl-C, SIGTERM): do not leave the arm running
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0 or not output.exists():
        raise RuntimeError(f"{tag} failed (exit {process.returncode}):\n{stdout[-3000:]}\n{stderr[-5000:]}")
    result = json.loads(output.read_text())
    return {**result, "arm": arm, "workload": spec["workload"], "variant": spec["variant"],
            "precision": spec["precision"], "features": spec["features"], "repeat": spec["repeat"],
            "process_seconds": time.perf_counter() - started}


# -- aggregation ------------------------------------------------------------------------------------

def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def peak_flops(device: str) -> float | None:
    if device != "gpu" or not torch.cuda.is_available():
        return None
    from lightning_peft.callbacks.flops import device_peak_flops

    return device_peak_flops(torch.cuda.get_device_name(), "bf16")


def flops_per_token(path: str, n_params: int, n_trainable: int, context: float) -> float:
    from transformers import AutoConfig

    from lightning_peft.callbacks.flops import attention_shape, training_flops_per_token

    layers, width = attention_shape(AutoConfig.from_pretrained(path)) or (0, 0)
    return training_flops_per_token(n_params, n_trainable, layers, width, context)


def _key(run: dict) -> tuple[str, str, str, str]:
    return run["workload"], run["arm"], run["variant"], run["precision"]


def summarize(runs: list[dict], stats: dict, flops_per_tok: float | None, peak: float | None) -> list[dict]:
    """One row per (workload, arm, variant, precision): medians over repeats, ratios to the peer's and our
    plain runs at the same precision, and (bf16 rows) to the same arm and variant in fp32."""
    rows = []
    for key in dict.fromkeys(map(_key, runs)):
        group = [r for r in runs if _key(r) == key]
        memory_key = "cuda_max_allocated_bytes" if _median(group, "cuda_max_allocated_bytes") else "peak_rss_bytes"
        callback = [r["throughput_callback"] for r in group if r.get("throughput_callback")]
        rows.append({
            "workload": key[0], "arm": key[1], "variant": key[2], "precision": key[3], "features": group[0]["features"],
            "tokens_per_sec": _median(group, "tokens_per_sec"), "tokens_per_sec_runs": [r["tokens_per_sec"] for r in group],
            "peak_memory_bytes": _median(group, memory_key), "memory_kind": memory_key,
            "load_peak_rss_bytes": _median(group, "load_peak_rss_bytes"),
            # where the time went (CPU): kernel seconds and minor page faults in the timed window
            "timed_system_seconds": _median(group, "timed_system_seconds"),
            "timed_minor_faults": _median(group, "timed_minor_faults"),
            "loss_step1": statistics.median(r["losses"][0] for r in group) if all(r["losses"] for r in group) else None,
            "tokens_per_step": group[0]["tokens_per_step"],
            "mfu_throughput_callback": statistics.median(c["mfu"] for c in callback) if callback and all(
                c.get("mfu") is not None for c in callback) else None,
            "mfu_estimate": (_median(group, "tokens_per_sec") * flops_per_tok[key[0]] / peak)
            if peak and flops_per_tok and flops_per_tok.get(key[0]) else None,
            "data": stats[key[0]],
        })
    for row in rows:
        same = [r for r in rows
                if (r["workload"], r["variant"], r["precision"]) == (row["workload"], "plain", row["precision"])]
        for arm in ("peer", "ours"):
            base = next((r for r in same if r["arm"] == arm), None)
            if base and base is not row:
                row[f"speed_vs_{arm}_plain"] = row["tokens_per_sec"] / base["tokens_per_sec"]
                row[f"memory_vs_{arm}_plain"] = row["peak_memory_bytes"] / base["peak_memory_bytes"]
        fp32 = next((r for r in rows if _key(r) == (*_key(row)[:3], "fp32")), None)
        if fp32 is not None and fp32 is not row:
            row["speed_vs_fp32"] = row["tokens_per_sec"] / fp32["tokens_per_sec"]
            row["memory_vs_fp32"] = row["peak_memory_bytes"] / fp32["peak_memory_bytes"]
    return rows


def print_rows(rows: list[dict]) -> None:
    from lightning_peft.cli.tables import print_table

    def fmt(value, pattern):
        return "-" if value is None else pattern.format(value)

    table = [(r["workload"], r["arm"], r["variant"] + (f" ({'+'.join(r['features'])})" if r["variant"] == "tricks" else ""),
              r["precision"], fmt(r["tokens_per_sec"], "{:.0f}"), fmt(r["peak_memory_bytes"] / 2**20, "{:.0f}"),
              fmt(r.get("speed_vs_peer_plain"), "{:.2f}"), fmt(r.get("memory_vs_peer_plain"), "{:.2f}"),
              fmt(r.get("speed_vs_ours_plain"), "{:.2f}"), fmt(r.get("speed_vs_fp32"), "{:.2f}"),
              fmt(r["loss_step1"], "{:.4f}"),
              fmt(r["mfu_throughput_callback"] or r["mfu_estimate"], "{:.1%}")) for r in rows]
    print_table(table, ("workload", "arm", "variant", "precision", "tokens/s", "peak MiB", "speed/peer", "mem/peer",
                        "speed/ours-plain", "bf16/fp32", "loss@1", "MFU"))


# -- main -------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--backbone", help="model(s), comma-separated (default: smollm2-135m on cpu; "
                        "llama-0.5b,llama-1b on gpu); a zoo name, hub id or folder")
    parser.add_argument("--datasets", help="workloads, comma-separated (default: movie_dialog,trec6 on cpu; long_sft on gpu)")
    parser.add_argument("--variants", default="plain,tricks", help="our arm's variants (see above)")
    parser.add_argument("--peer-variants", default="plain", help="the peer's variants (packing, bucketing, grad_ckpt, compile)")
    parser.add_argument("--precisions", help="comma-separated, each arm runs at each: fp32 (32-true), bf16 "
                        "(bf16-mixed; the peer's bf16=True) (default: fp32,bf16 on cpu; bf16 on gpu)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: 10 on cpu, 40 on gpu)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="steps not timed (default: 2 on cpu, 5 on gpu)")
    parser.add_argument("--batch-size", type=int, help="examples per batch (default: 8 on cpu, 16 on gpu)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm (median reported)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, help="OMP/MKL threads per run (default: torch's choice)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="run both arms with glibc malloc keeping freed memory (MALLOC_MMAP_MAX_=0, "
                             "MALLOC_TRIM_THRESHOLD_=-1, CpuAllocatorCache's settings): the allocator out of the comparison")
    parser.add_argument("--no-throughput-callback", action="store_true",
                        help="do not attach lightning-peft's Throughput callback to our arm (it reads token counts every step)")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="profile this many timed steps in every run, then take a dtype census of the next "
                             "(throughput_profile.py; slows the runs: do not read their tokens/s)")
    parser.add_argument("--output", default=str(RESULTS), help="JSON file; the device's section is replaced")
    args = parser.parse_args(argv)
    gpu = args.device == "gpu"
    args.backbone = args.backbone or ("llama-0.5b,llama-1b" if gpu else "smollm2-135m")
    args.datasets = args.datasets or ("long_sft" if gpu else "movie_dialog,trec6")
    args.precisions = args.precisions or ("bf16" if gpu else "fp32,bf16")
    unknown = sorted(set(args.precisions.split(",")) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions: unknown {unknown}; use fp32, bf16 or both (comma-separated)")
    args.steps = args.steps or (40 if gpu else 10)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (5 if gpu else 2)
    args.batch_size = args.batch_size or (16 if gpu else 8)
    if not 1 <= args.warmup_steps < args.steps:
        parser.error("--warmup-steps must be at least 1 and below --steps")
    return args


def base_spec(args: argparse.Namespace, backbone: str, path: str, workload: str, precision: str) -> dict:
    return {
        "backbone": backbone, "model_path": path, "workload": workload, "device": args.device,
        "precision": precision, "steps": args.steps,
        "warmup_steps": args.warmup_steps, "batch_size": args.batch_size, "seed": 42, "max_grad_norm": 1.0,
        "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.05, "target_modules": "all-linear"},
        "optimizer": {"lr": args.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
        "data": workload_data(workload, args.batch_size, args.steps),
        "throughput_callback": not args.no_throughput_callback, "profile_steps": args.profile_steps,
    }


def benchmark(args: argparse.Namespace, backbone: str, workdir: Path) -> dict:
    path = model_path(backbone)
    peak = peak_flops(args.device)
    runs, stats, examples_files, flops = [], {}, {}, {}
    workloads = args.datasets.split(",")
    for workload in workloads:
        examples = training_order(workload_data(workload, args.batch_size, args.steps), path)
        stats[workload] = data_stats(examples, args.batch_size)
        examples_files[workload] = workdir / f"{backbone}-{workload}.examples.json"
        examples_files[workload].write_text(json.dumps(examples))
    kinds = [("ours", v) for v in args.variants.split(",")] + [("peer", v) for v in args.peer_variants.split(",")]
    arms = [(arm, variant, precision) for precision in args.precisions.split(",") for arm, variant in kinds]
    for repeat in range(args.repeats):
        for workload in workloads:
            # alternate which arm goes first, so slow drift of the machine does not favour one side
            order = arms if repeat % 2 == 0 else arms[::-1]
            for arm, variant, precision in order:
                spec = {**base_spec(args, backbone, path, workload, precision), "variant": variant, "repeat": repeat,
                        "features": features_of(variant, args.device)}
                result = run_arm(arm, spec, examples_files[workload], workdir, args.threads, args.keep_freed_memory)
                print(f"  {backbone} {workload} {arm:4s} {variant:10s} {precision} repeat {repeat}: "
                      f"{result['tokens_per_sec']:.0f} tokens/s, process {result['process_seconds']:.0f} s", flush=True)
                runs.append(result)
    for workload in workloads:
        ours = next((r for r in runs if r["arm"] == "ours" and r["workload"] == workload and r.get("n_params")), None)
        if ours:
            flops[workload] = flops_per_token(path, ours["n_params"], ours["n_trainable"],
                                              stats[workload]["attention_context"])
    rows = summarize(runs, stats, flops, peak)
    return {"backbone": backbone, "model_path": path, "rows": rows, "runs": runs, "peak_flops": peak,
            "flops_per_token": flops}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through run_arm, which kills its child
    started = time.perf_counter()
    command = "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    sections = []
    with tempfile.TemporaryDirectory(prefix="lp-throughput-") as tmp:
        for backbone in args.backbone.split(","):
            section = benchmark(args, backbone, Path(tmp))
            print(f"\n{backbone} on {args.device}:")
            print_rows(section["rows"])
            if args.profile_steps:
                from throughput_profile import format_profile  # benchmarks/ is sys.path[0] when run as a script

                for run in (r for r in section["runs"] if r["repeat"] == 0):
                    print(format_profile(" ".join(run[k] for k in ("workload", "arm", "variant", "precision")),
                                         run["profile"]))
            sections.append(section)
    output = Path(args.output)
    results = json.loads(output.read_text()) if output.exists() else {}
    results[args.device] = {"command": command.strip(), "settings": {k: v for k, v in vars(args).items()},
                            "cpu_count": os.cpu_count(), "torch": torch.__version__,
                            "device_name": torch.cuda.get_device_name() if args.device == "gpu" and torch.cuda.is_available() else None,
                            "wall_seconds": time.perf_counter() - started, "models": sections}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1))
    print(f"\nwritten to {output} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
