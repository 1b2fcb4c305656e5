"""The cloze family's replication table (issue 17): every claim's benchmark from one command, one table.

    python benchmarks/cloze.py                      # run each claim (finished runs are skipped), then the table
    python benchmarks/cloze.py --collect            # the table from the results already in benchmarks/results
    python benchmarks/cloze.py --claims pcp tricks  # some claims only

Each claim is its own benchmark with its own page (see CLAIMS); this script runs them one after another in
fresh processes, times each, and prints one row per comparison: the method, its baseline (mean ± std over
3 seeds) and the method's gain over the baseline paired by seed (PET: its share of the supervised F1).
The wall-clock minutes of the claims it ran go to benchmarks/results/cloze_table.json beside the rows.
Lightning picks the accelerator (`auto`), so on a GPU machine every run uses the GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cli_runs import CLI, ROOT, run

sys.path.insert(0, str(ROOT / "src"))

from lightning_peft.cli.tables import print_table  # noqa: E402
from lightning_peft.pet import mean_std, paired_gain  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
Row = tuple[str, str, str, str]  # setting, method, baseline, gain


@dataclass(frozen=True)
class Claim:
    """One claim of the table: how to produce its results file, and its rows from that file."""

    statement: str
    produce: Callable[[Path], None]  # writes `results`, its runs under the given folder
    results: Path
    rows: Callable[[dict], list[Row]]


def _script(name: str, results: Path, *args: str) -> Callable[[Path], None]:
    """A claim produced by `benchmarks/<name>.py --output <folder> --results <results> <args>`."""
    return lambda out: run([sys.executable, str(ROOT / "benchmarks" / name), "--output", str(out),
                            "--results", str(results), *args])


def _pet_supervised(out: Path) -> None:
    run([sys.executable, str(ROOT / "benchmarks" / "pet_supervised.py"), "--output", str(out)])


def _pcp(out: Path) -> None:
    run([*CLI, "pet", "--config", "configs/cloze/pcp_trec6.yaml", "--pet.shot_seeds", "[0,1,2]",
         "--pet.output_dir", str(out), "--trainer.enable_progress_bar", "false"])
    shutil.copyfile(out / "pcp_summary.json", RESULTS / "pcp_trec6.json")


def _ms(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _gain(g: dict[str, float]) -> str:
    return f"{g['gain_mean'] * 100:+.1f} ± {g['gain_std'] * 100:.1f} points"


def pet_rows(results: dict) -> list[Row]:
    """PET's ensemble and distilled classifier against supervised training, macro-F1."""
    base = mean_std([run["test/f1"] for run in results["supervised"]])
    rows = []
    for stage in ("ensemble", "classifier"):
        f1 = results["pet"][stage]["test/f1"]
        rows.append(("bbc_news, 10/class, macro-F1", f"PET {stage} {_ms(f1['mean'], f1['std'])}",
                     f"supervised {_ms(*base)}", f"{f1['mean'] / base[0]:.1%} of supervised (claim: >= 90%)"))
    return rows


def sciprompt_rows(results: dict) -> list[Row]:
    """The weighted verbalizer against the single word, test accuracy, per dataset and shot count."""
    return [(f"{e['dataset']}, {e['shots']} shots, acc", f"weighted {_ms(*e['weighted_acc'])}",
             f"single word {_ms(*e['single_acc'])}",
             f"{e['gain_acc'][0] * 100:+.1f} ± {e['gain_acc'][1] * 100:.1f} points") for e in results["table"]]


def _paired_rows(setting: str, pairs: list[tuple[str, str]]) -> Callable[[dict], list[Row]]:
    """Rows for a results file of per-seed scores by arm: each (method, baseline) pair, test accuracy."""

    def rows(results: dict) -> list[Row]:
        runs = list(results["scores"].values())
        out = []
        for method, baseline in pairs:
            with_, without = [run[method]["acc"] for run in runs], [run[baseline]["acc"] for run in runs]
            out.append((setting, f"{method} {_ms(*mean_std(with_))}", f"{baseline} {_ms(*mean_std(without))}",
                        _gain(paired_gain(without, with_))))
        return out

    return rows


def pcp_rows(results: dict) -> list[Row]:
    """Prompt-based fine-tuning after PCP against it without, test accuracy."""
    acc = results["metrics"]["test/acc"]
    return [("trec6, 16/class, acc", f"PCP + prompt-based {_ms(acc['with_mean'], acc['with_std'])}",
             f"prompt-based {_ms(acc['without_mean'], acc['without_std'])}",
             _gain({"gain_mean": acc["gain_mean"], "gain_std": acc["gain_std"]}))]


CLAIMS = {
    "pet": Claim("PET with 10 examples per class reaches >= 90% of supervised F1 (docs/methods/pet.md)",
                 _pet_supervised, RESULTS / "pet_supervised.json", pet_rows),
    "sciprompt": Claim("SciPrompt's weighted verbalizer beats a single word (docs/methods/sciprompt.md)",
                       _script("sciprompt.py", RESULTS / "sciprompt.json"), RESULTS / "sciprompt.json",
                       sciprompt_rows),
    "sciprompt_sentiment": Claim("... and on movie-review sentiment, 0 and 10 shots (docs/methods/sciprompt.md)",
                                 _script("sciprompt.py", RESULTS / "sciprompt_sentiment_movies.json",
                                         "--datasets", "sentiment_movies", "--shots", "10"),
                                 RESULTS / "sciprompt_sentiment_movies.json", sciprompt_rows),
    "list": Claim("LiST's self-training beats prompt-based fine-tuning at 30 shots (docs/methods/list.md)",
                  _script("list_selftraining.py", RESULTS / "list_selftraining.json"),
                  RESULTS / "list_selftraining.json",
                  _paired_rows("trec6, 30/class, acc", [("LiST", "prompt-based fine-tuning")])),
    "pcp": Claim("PCP before prompt-based fine-tuning beats it without at 16 shots (docs/methods/pcp.md)",
                 _pcp, RESULTS / "pcp_trec6.json", pcp_rows),
    "tricks": Claim("Self-calibrated and transductive fine-tuning help (docs/methods/bag_of_tricks.md)",
                    _script("bag_of_tricks.py", RESULTS / "bag_of_tricks.json"), RESULTS / "bag_of_tricks.json",
                    _paired_rows("trec6, 16/class, acc", [("self-calibrated", "prompt-based fine-tuning"),
                                                          ("transductive", "LM on the training pool")])),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", nargs="+", choices=list(CLAIMS), default=list(CLAIMS), help="The claims to run.")
    parser.add_argument("--collect", action="store_true",
                        help="Run nothing: build the table from the results files already written.")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench_cloze_table",
                        help="Run folder, one subfolder per claim (a rerun skips the runs that finished).")
    args = parser.parse_args()
    minutes = {}
    for name in args.claims:
        if not args.collect:
            start = time.perf_counter()
            CLAIMS[name].produce(args.output / name)
            minutes[name] = round((time.perf_counter() - start) / 60, 1)
    rows = []
    for name in args.claims:
        claim = CLAIMS[name]
        if not claim.results.exists():
            raise SystemExit(f"{claim.results} does not exist: run `python benchmarks/cloze.py --claims {name}` "
                             "(without --collect) first.")
        rows.append((name, claim.statement, "", ""))
        rows += [(f"  {setting}", method, baseline, gain)
                 for setting, method, baseline, gain in claim.rows(json.loads(claim.results.read_text()))]
    print_table(rows, ("claim / setting", "method", "baseline", "method vs baseline"))
    if minutes:
        print(f"wall-clock minutes: {minutes} ({sum(minutes.values()):.1f} in all)")
        target = RESULTS / "cloze_table.json"
        target.write_text(json.dumps({"claims": args.claims, "minutes": minutes, "rows": rows}, indent=2))
        print(f"written to {target}")


if __name__ == "__main__":
    main()
