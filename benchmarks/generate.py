"""Generation speed: `lightning-peft generate` vs a plain `model.generate` script (issue 16).

    python benchmarks/generate.py                    # SmolLM2-135M, 16 TREC-6 questions, 32 new tokens,
                                                     # batch 1 and 8, 1 thread, 3 repeats (~6 min on 2 cores)
    python benchmarks/generate.py --merged           # the same on a merged LoRA folder built from SmolLM2 (see below)
    python benchmarks/generate.py --model runs/merged --prompts 32 --max_new_tokens 64 --batch_sizes 1 4 16
    python benchmarks/generate.py --model tiny-llama --prompts 2 --max_new_tokens 4 --batch_sizes 1 2 --repeats 1 \\
        --output /tmp/generate.json                  # smoke run

Arms, on the same model folder, prompts, batch size, thread count and greedy decoding:

- `lightning-peft`: what `lightning-peft generate --model FOLDER --prompts_file ... --batch_size B`
  runs: `inference.load_model(folder, device="cpu", dtype="float32")`, each question written by
  `prompt_for` (the tokenizer's chat template, generation prompt added) and
  `generate_texts(runnable, prompts, GenerationSettings(max_new_tokens=M, do_sample=False), batch_size=B)`.
- `model.generate`: a stock transformers script: `AutoTokenizer` + `AutoModelForCausalLM.from_pretrained(folder,
  dtype=float32)`, the same chat-template strings (`apply_chat_template(..., tokenize=False,
  add_generation_prompt=True)`, tokenized without adding special tokens again), left padding, the
  same batches, `model.generate(**inputs, max_new_tokens=M, do_sample=False, pad_token_id=...)`,
  only the new tokens decoded (`skip_special_tokens=True`).

Each (arm, batch size, repeat) is a fresh process (`arm_process.run_arm_process`), so no arm
inherits another's memory, caches or warmed-up kernels; `torch.set_num_threads(--threads)` is the
first thing each one does. Within a repeat the arms alternate which goes first, so slow drift of
the machine does not favour one side. Each process loads the model (timed apart, not in tokens/s),
runs one untimed warm-up call of its own code path on the first batch (4 new tokens), then times
the generation of all prompts, tokenization and decoding included, on both sides. The driver
checks that both arms wrote the same prompt strings.

A shared machine: other processes on the same cores slow a run down by what they take, and with
as many threads as cores far more (a descheduled thread stalls the other at every barrier). So
the default is 1 thread per arm (`--threads 2` on a quiet 2-core machine), and each run records
the share of the machine's CPU time that other processes used during its timed window
(`others_cpu`, from /proc/stat minus the run's own CPU time). A run is crowded when the others
left it fewer free cores than its threads (with a quarter-core slack): `others_cpu` above
`--busy_threshold`, by default (CPUs - threads + 0.25) / CPUs, 0.625 for 1 thread on 2 CPUs.
Before each run the driver waits (up to `--max_wait` s) until the others are below that, and a
crowded run is run again (up to `--attempts`; the last one is kept, marked `busy`; the discarded
ones are in the JSON). The table shows the largest `others_cpu` of each row.

Tokens counted: per prompt, the new tokens up to and including the first EOS (all M when there is
none); the padding a finished row gets while the rest of its batch decodes is not counted. Both
arms count on their own outputs (ours by recording what `model.generate` returned inside
`generate_texts`), and the counts and texts of the two arms are compared per batch size: greedy
decoding of the same inputs on the same weights must give the same texts.

Model: by default the base folder of `--model` (smollm2-135m). A merged LoRA (`merge_and_unload`)
has exactly the base's architecture, parameter shapes and dtype: per generated token it computes
the same thing, so its speed is the base's. `--merged` instead builds a merged folder once
(LoRA r=8 on q_proj/v_proj applied to the base, merged and saved with the tokenizer, in the
lightning-peft cache) and runs both arms on it; with no training, LoRA's B is zero, so its weights
equal the base's. A folder written by `lightning-peft merge` can be given as `--model`; if its run
used a prompt template rather than the chat template, the plain arm cannot write the same prompts
and the benchmark stops saying so.

Results: benchmarks/results/generate.json and a printed table (tokens/s min/median/max per arm,
ratio of the medians lightning-peft / model.generate, whether texts matched).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "generate.json"
OURS, PLAIN = "lightning-peft", "model.generate"
ARMS = (OURS, PLAIN)
WARMUP_TOKENS = 4  # new tokens of the untimed warm-up call on the first batch


# -- inputs -----------------------------------------------------------------------------------------

def pick_questions(count: int, seed: int, dataset: str = "trec6") -> list[str]:
    """`count` distinct question texts of `dataset` (the offline TREC-6 by default), drawn with `seed`."""
    from lightning_peft.data import load_records

    texts = list(dict.fromkeys(str(record["text"]).strip() for record in load_records(dataset)))
    if count > len(texts):
        raise SystemExit(f"error: --prompts {count} is more than the {len(texts)} distinct texts of {dataset}.")
    return random.Random(seed).sample(texts, count)


def merged_folder(base: str, root: Path | None = None) -> Path:
    """A merged LoRA folder built from `base` (r=8 on q_proj/v_proj, untrained, merged, saved with its tokenizer).

    Built once under `root` (default: the lightning-peft cache's bench/ folder) and reused.
    """
    from transformers import AutoModelForCausalLM

    from lightning_peft import zoo
    from lightning_peft.atomic import write_folder_atomically
    from lightning_peft.methods import Lora

    folder = (root or zoo.cache_root() / "bench") / f"{Path(base).name}-lora-r8-merged"

    def write(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(zoo.resolve(base), dtype=torch.float32)
        merged = Lora(r=8, target_modules=["q_proj", "v_proj"]).apply(model).model.merge_and_unload()
        merged.save_pretrained(tmp)
        zoo.load_tokenizer(base).save_pretrained(tmp)

    return write_folder_atomically(folder, write, reuse_existing=True)


def model_folder(name: str, merged: bool) -> str:
    """The folder both arms load: `name` resolved (zoo name, hub id or folder), or its merged LoRA."""
    from lightning_peft import zoo

    return str(merged_folder(name)) if merged else str(zoo.resolve(name))


# -- measuring (inside an arm's process) ------------------------------------------------------------

def eos_ids(model: torch.nn.Module) -> set[int]:
    """The token ids that end a generated answer (the generation config's EOS, one or several)."""
    eos = model.generation_config.eos_token_id
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def count_new_tokens(new: torch.Tensor, eos: set[int]) -> list[int]:
    """Per row of `new` (generated ids only): tokens up to and including the first EOS, all of them without one."""
    counts = []
    for row in new.tolist():
        stop = next((i for i, token in enumerate(row) if token in eos), None)
        counts.append(len(row) if stop is None else stop + 1)
    return counts


def _machine_busy() -> tuple[float, int] | None:
    """Busy CPU seconds since boot (/proc/stat: user, nice, system, irq, softirq, steal) and the CPU count."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    fields = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK"), cpus


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


class TimedWindow:
    """Wall seconds of a `with` block, this process's CPU seconds in it, and how busy other processes kept the CPUs.

    `others_cpu` is the share of the machine's CPU time, during the block, spent by anything but
    this process (0: the machine was ours; 0.5 on 2 CPUs: another process held one core
    throughout); None where /proc/stat cannot be read. A benchmark on a shared machine reads it to
    tell a slow run from a run that was crowded out.
    """

    def __enter__(self) -> "TimedWindow":
        self._busy, self._own = _machine_busy(), _own_cpu_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._started
        self.cpu_seconds = _own_cpu_seconds() - self._own
        busy = _machine_busy()
        self.others_cpu = None
        if busy is not None and self._busy is not None and self.seconds > 0:
            others = busy[0] - self._busy[0] - self.cpu_seconds
            self.others_cpu = min(1.0, max(0.0, others / (self.seconds * busy[1])))


def _measured(texts: list[str], counts: list[int], window: TimedWindow, load_seconds: float, prompts: list[str],
              model: torch.nn.Module) -> dict[str, Any]:
    return {"texts": texts, "tokens_per_prompt": counts, "tokens": sum(counts), "seconds": window.seconds,
            "tokens_per_sec": sum(counts) / window.seconds, "cpu_seconds": window.cpu_seconds,
            "others_cpu": window.others_cpu, "load_seconds": load_seconds, "prompts": prompts,
            "threads": torch.get_num_threads(), "dtype": str(next(model.parameters()).dtype)}


def run_ours(folder: str, questions: Sequence[str], max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """Arm `lightning-peft`: `load_model` + `prompt_for` + `generate_texts`, as `lightning-peft generate` runs them."""
    from lightning_peft.inference import GenerationSettings, generate_texts, load_model, prompt_for

    started = time.perf_counter()
    runnable = load_model(folder, device="cpu", dtype="float32")
    load_seconds = time.perf_counter() - started
    prompts = [prompt_for(runnable, question) for question in questions]
    model, outputs = runnable.model, []
    generate = model.generate

    def recording_generate(*args: Any, **kwargs: Any) -> torch.Tensor:  # keeps what generate_texts decodes, to count it
        out = generate(*args, **kwargs)
        outputs.append((kwargs["input_ids"].shape[1], out))
        return out

    model.generate = recording_generate
    list(generate_texts(runnable, prompts[:batch_size], GenerationSettings(max_new_tokens=WARMUP_TOKENS), batch_size))
    outputs.clear()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False)
    with TimedWindow() as window:
        texts = list(generate_texts(runnable, prompts, settings, batch_size=batch_size))
    eos = eos_ids(model)
    counts = [n for width, out in outputs for n in count_new_tokens(out[:, width:], eos)]
    return _measured(texts, counts, window, load_seconds, prompts, model)


def run_plain(folder: str, questions: Sequence[str], max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """Arm `model.generate`: a stock transformers script on the same folder, prompts and batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    load_seconds = time.perf_counter() - started
    chat = bool(tokenizer.chat_template)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) if chat else q for q in questions]

    def generate(batch: Sequence[str], new_tokens: int) -> torch.Tensor:
        inputs = tokenizer(list(batch), return_tensors="pt", padding=True, add_special_tokens=not chat)
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return out[:, inputs["input_ids"].shape[1]:]

    generate(prompts[:batch_size], WARMUP_TOKENS)
    news, texts = [], []
    with TimedWindow() as window:
        for start in range(0, len(prompts), batch_size):
            new = generate(prompts[start:start + batch_size], max_new_tokens)
            news.append(new)
            texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    eos = eos_ids(model)
    counts = [n for new in news for n in count_new_tokens(new, eos)]
    return _measured(texts, counts, window, load_seconds, prompts, model)


RUNNERS = {OURS: run_ours, PLAIN: run_plain}


def worker(spec_file: str) -> None:
    """One arm in this process: read its spec, set the threads, measure, write the report."""
    spec = json.loads(Path(spec_file).read_text())
    torch.set_num_threads(spec["threads"])
    result = RUNNERS[spec["arm"]](spec["folder"], spec["questions"], spec["max_new_tokens"], spec["batch_size"])
    Path(spec["report"]).write_text(json.dumps(result))


# -- driver: one process per (arm, batch size, repeat) ----------------------------------------------

def run_arm(arm: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run `arm` in a fresh process (this file with --worker) and return its report."""
    from arm_process import run_arm_process

    tag = f"{'ours' if arm == OURS else 'plain'}-b{spec['batch_size']}-r{spec['repeat']}-a{spec['attempt']}"
    spec_file, report, log = workdir / f"{tag}.spec.json", workdir / f"{tag}.report.json", workdir / f"{tag}.log"
    spec_file.write_text(json.dumps({**spec, "arm": arm, "report": str(report)}))
    wall = run_arm_process([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_file)], log, report,
                           f"arm {arm} (batch {spec['batch_size']}, repeat {spec['repeat']})")
    return {**json.loads(report.read_text()), "arm": arm, "batch_size": spec["batch_size"], "repeat": spec["repeat"],
            "attempt": spec["attempt"], "process_seconds": wall}


def wait_for_quiet(threshold: float, max_wait: float, sample: float = 2.0) -> float:
    """Wait until other processes use at most `threshold` of the CPUs over `sample` seconds (at most `max_wait` s).

    Returns the seconds waited (0 without /proc/stat, or with max_wait 0).
    """
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait:
        with TimedWindow() as window:  # this process sleeps: what is busy is the others
            time.sleep(sample)
        if window.others_cpu is None or window.others_cpu <= threshold:
            break
    return time.perf_counter() - started


def summarize(runs: list[dict[str, Any]], batch_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (batch size, arm): tokens/s over the repeats, the ratio of medians to model.generate's, and
    whether every run of both arms decoded the same texts and token counts."""
    rows = []
    for batch_size in batch_sizes:
        group = {arm: [r for r in runs if r["arm"] == arm and r["batch_size"] == batch_size] for arm in ARMS}
        reference = group[PLAIN][0]
        texts_match = all(r["texts"] == reference["texts"] for arm in ARMS for r in group[arm])
        counts_match = all(r["tokens_per_prompt"] == reference["tokens_per_prompt"] for arm in ARMS for r in group[arm])
        medians = {arm: statistics.median(r["tokens_per_sec"] for r in group[arm]) for arm in ARMS}
        for arm in ARMS:
            speeds = [r["tokens_per_sec"] for r in group[arm]]
            rows.append({
                "batch_size": batch_size, "arm": arm, "tokens": statistics.median(r["tokens"] for r in group[arm]),
                "tokens_per_sec_min": min(speeds), "tokens_per_sec_median": medians[arm],
                "tokens_per_sec_max": max(speeds), "tokens_per_sec_runs": speeds,
                "seconds_median": statistics.median(r["seconds"] for r in group[arm]),
                "load_seconds_median": statistics.median(r["load_seconds"] for r in group[arm]),
                "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in group[arm]),
                "others_cpu_max": max((r["others_cpu"] for r in group[arm] if r["others_cpu"] is not None),
                                      default=None),
                "busy_runs": sum(bool(r.get("busy")) for r in group[arm]),
                "ratio_vs_model_generate": medians[arm] / medians[PLAIN],
                "texts_match": texts_match, "token_counts_match": counts_match,
            })
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    from lightning_peft.cli.tables import print_table

    print_table([(str(r["batch_size"]), r["arm"], f"{r['tokens']:.0f}", f"{r['tokens_per_sec_min']:.1f}",
                  f"{r['tokens_per_sec_median']:.1f}", f"{r['tokens_per_sec_max']:.1f}",
                  f"{r['ratio_vs_model_generate']:.3f}", "yes" if r["texts_match"] else "NO",
                  f"{r['load_seconds_median']:.1f}",
                  "-" if r["others_cpu_max"] is None else f"{r['others_cpu_max']:.0%}") for r in rows],
                ("batch", "arm", "tokens", "tok/s min", "tok/s median", "tok/s max", "ratio vs model.generate",
                 "same texts", "load s", "others' CPU (max)"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m",
                        help="model both arms load: zoo name, hub id, or folder (e.g. from `lightning-peft merge`)")
    parser.add_argument("--merged", action="store_true",
                        help="build (once) and use a merged LoRA folder of --model (r=8, q_proj/v_proj, untrained)")
    parser.add_argument("--prompts", type=int, default=16, help="number of TREC-6 questions to answer")
    parser.add_argument("--seed", type=int, default=0, help="seed that picks the questions")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="the most new tokens per answer")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8], help="batch sizes, each measured apart")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm and batch size (min/median/max reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads in every arm (default 1: see the notes on a shared machine)")
    parser.add_argument("--busy_threshold", type=float, default=None,
                        help="a shared machine: each run waits until other processes use at most this share of the "
                             "CPUs, and a run during which they used more is run again (1: never; default: "
                             "(CPUs - threads + 0.25) / CPUs)")
    parser.add_argument("--attempts", type=int, default=3, help="runs at most, per arm, batch size and repeat, "
                                                                 "when the machine stays busy (the last one is kept)")
    parser.add_argument("--max_wait", type=float, default=120.0,
                        help="seconds to wait at most for the machine to quieten before each run (0: start at once)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    parser.add_argument("--workdir", type=Path, default=None, help="keep each run's spec, report and log here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one arm from a spec file
    args = parser.parse_args(argv)
    for name in ("prompts", "max_new_tokens", "repeats", "threads", "attempts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} must be a positive integer.")
    if min(args.batch_sizes) < 1 or len(set(args.batch_sizes)) != len(args.batch_sizes):
        parser.error(f"--batch_sizes {' '.join(map(str, args.batch_sizes))}: give distinct positive integers.")
    if args.busy_threshold is None:
        cpus = os.cpu_count() or 1
        args.busy_threshold = min(1.0, max(0.0, (cpus - args.threads + 0.25) / cpus))
    if not 0 <= args.busy_threshold <= 1 or args.max_wait < 0:
        parser.error("--busy_threshold must be in [0, 1] and --max_wait >= 0.")
    return args


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every (repeat, batch size, arm) run, arms alternating, and the summary rows."""
    folder = model_folder(args.model, args.merged)
    questions = pick_questions(args.prompts, args.seed)
    runs, discarded = [], []
    for repeat in range(args.repeats):
        for index, batch_size in enumerate(args.batch_sizes):
            order = ARMS if (repeat + index) % 2 == 0 else ARMS[::-1]
            for arm in order:
                spec = {"folder": folder, "questions": questions, "max_new_tokens": args.max_new_tokens,
                        "batch_size": batch_size, "repeat": repeat, "threads": args.threads}
                for attempt in range(1, args.attempts + 1):
                    waited = wait_for_quiet(args.busy_threshold, args.max_wait)
                    result = {**run_arm(arm, {**spec, "attempt": attempt}, workdir), "waited_seconds": waited}
                    others = result["others_cpu"]
                    result["busy"] = others is not None and others > args.busy_threshold
                    print(f"  batch {batch_size} {arm:15s} repeat {repeat}: {result['tokens']} tokens in "
                          f"{result['seconds']:.2f} s = {result['tokens_per_sec']:.1f} tokens/s; other processes "
                          f"{'?' if others is None else f'{others:.0%}'} of the CPUs"
                          f"{' (busy: run again)' if result['busy'] and attempt < args.attempts else ''} "
                          f"(load {result['load_seconds']:.1f} s, process {result['process_seconds']:.0f} s)",
                          flush=True)
                    if not result["busy"] or attempt == args.attempts:
                        break
                    discarded.append(result)
                runs.append(result)
    for run in runs:
        if run["prompts"] != runs[0]["prompts"]:
            raise SystemExit(f"error: the arms wrote different prompts for {folder} (the model's run used a prompt "
                             "template, not the chat template); the plain arm cannot reproduce it, so nothing "
                             "compares.")
    return {"folder": folder, "questions": questions, "runs": runs, "discarded": discarded,
            "rows": summarize(runs, args.batch_sizes)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds, killing the running arm
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lp-generate-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        measured = benchmark(args, workdir)
    rows = measured["rows"]
    print(f"\n{args.model}{' (merged LoRA)' if args.merged else ''}: {args.prompts} TREC-6 questions, greedy, "
          f"{args.max_new_tokens} new tokens at most, {args.threads} threads, {args.repeats} repeats")
    print_rows(rows)
    for batch_size in args.batch_sizes:
        row = next(r for r in rows if r["batch_size"] == batch_size)
        print(f"batch {batch_size}: texts {'identical' if row['texts_match'] else 'DIFFER'} in both arms, "
              f"token counts {'identical' if row['token_counts_match'] else 'DIFFER'}")
    first = {r["batch_size"]: r for r in measured["runs"] if r["arm"] == OURS and r["repeat"] == 0}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"}
    result = {
        "command": shlex.join(["python", "benchmarks/generate.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**settings, "warmup_tokens": WARMUP_TOKENS, "dataset": "trec6"},
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__,
                    # the 1-minute load average before and after: other work on the machine slows both arms
                    "loadavg_1min_before": load_before[0], "loadavg_1min_after": os.getloadavg()[0]},
        "model_folder": measured["folder"],
        "rows": rows,
        "texts_match": all(r["texts_match"] for r in rows),
        "token_counts_match": all(r["token_counts_match"] for r in rows),
        "answers": {str(b): [{"question": q, "generated": t} for q, t in zip(measured["questions"], run["texts"])]
                    for b, run in first.items()},
        "runs": [{k: v for k, v in run.items() if k not in ("texts", "prompts")} for run in measured["runs"]],
        "discarded_busy_runs": [{k: v for k, v in run.items() if k not in ("texts", "prompts")}
                                for run in measured["discarded"]],
        "wall_seconds": time.perf_counter() - started,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"\nwritten to {args.output} ({result['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
