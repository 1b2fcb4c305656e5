"""The personal codebase (Zlotchevski et al. 2022): split by file, blocks to train on, single-line completions."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_peft import zoo
from lightning_peft.data import CodeCompletionData, DataConfigError, load_records
from lightning_peft.data.code import chunks, completions
from lightning_peft.evaluation.code_completion import first_line, line_exact_match, started_line

TEXT = "import os\n\n\ndef f(x):\n    return x\n\nclass A:\n    pass\n"


def _files(tmp_path, count: int = 10):
    path = tmp_path / "repo.jsonl"
    rows = [{"path": f"pkg/m{k}.py", "text": f"# module {k}\n" + "".join(f"x{k}_{j} = {j}\n" for j in range(30))}
            for k in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_files_fall_in_exactly_one_split_and_the_split_is_seeded():
    data = CodeCompletionData("stdlib_email", val_size=3, test_size=4)
    splits = data.file_splits()
    paths = {name: {f["path"] for f in files} for name, files in splits.items()}
    assert {name: len(p) for name, p in paths.items()} == {"train": 22, "validation": 3, "test": 4}
    assert not (paths["train"] & paths["validation"] or paths["train"] & paths["test"] or paths["validation"] & paths["test"])
    assert set().union(*paths.values()) == {r["path"] for r in load_records("stdlib_email")}
    assert CodeCompletionData("stdlib_email", val_size=3, test_size=4).file_splits() == splits
    assert CodeCompletionData("stdlib_email", val_size=3, test_size=4, split_seed=1).file_splits()["test"] != splits["test"]


def test_completions_are_a_held_out_line_after_every_line_before_it():
    pairs = completions(TEXT, count=100, seed="s")
    lines = TEXT.splitlines()
    assert [line for _, line in pairs] == [line for line in lines[1:] if line.strip()]  # non-blank lines, in order
    for prefix, line in pairs:
        assert prefix + line + "\n" == "\n".join(lines[: lines.index(line) + 1]) + "\n"
    assert completions(TEXT, 2, "s") == completions(TEXT, 2, "s") and len(completions(TEXT, 2, "s")) == 2


def test_blocks_cover_the_file_without_blank_ones():
    blocks = chunks(TEXT + "\n" * 20, lines_per_example=3)
    assert "".join(blocks) == TEXT + "\n"  # the last block takes one of the trailing blank lines
    assert all(block.strip() and len(block.splitlines()) <= 3 for block in blocks)


def test_the_module_trains_on_train_files_and_tests_completions_of_test_files(tmp_path, data_cache, tokenizer):
    data = CodeCompletionData(str(_files(tmp_path)), tokenizer=tokenizer, val_size=2, test_size=2, lines_per_example=8,
                              completions_per_file=5, batch_size=4)
    data.setup()
    splits = data.file_splits()
    test_paths = {f["path"] for f in splits["test"]}
    decoded = lambda ids: tokenizer.decode(ids)  # noqa: E731
    train_text = "".join(decoded(data.datasets["train"][k]["input_ids"]) for k in range(len(data.datasets["train"])))
    for path in test_paths:  # "# module 7" opens file 7 only
        assert f"# module {path[5:-3]}\n" not in train_text
    assert len(data.datasets["test"]) == 2 * 5 == len(data.test_completions())
    batch = next(iter(data.test_dataloader()))
    for row, labels in zip(batch["input_ids"], batch["labels"]):
        target = tokenizer.decode(row[labels != -100])
        assert any(target == line for _, line in data.test_completions())
    train = next(iter(data.train_dataloader()))
    assert (train["labels"] != -100).sum() == train["attention_mask"].sum()  # learned whole, no EOS added
    assert tokenizer.eos_token_id not in train["input_ids"][train["attention_mask"] == 1].tolist()


def test_exact_match_reads_the_line_the_continuation_starts():
    assert first_line("    return x  \n    y = 2") == "    return x"
    assert started_line("\n    return x  \n    y = 2") == "    return x"
    assert started_line("\n\n    return x") == "    return x"  # blank lines before it are the model's layout
    assert started_line("    return x\n") is None  # no newline first: it continued the previous line


class _Echo:
    """A stand-in LM for `greedy_outputs` that records the prompt it got and writes a fixed continuation."""

    def __init__(self, tokenizer, continuation: str) -> None:
        self.tokenizer, self.continuation, self.prompts = tokenizer, continuation, []

    def parameters(self):
        yield torch.zeros(1)

    def generate(self, input_ids, attention_mask, **kwargs):
        self.prompts += [self.tokenizer.decode(row[mask.bool()]) for row, mask in zip(input_ids, attention_mask)]
        new = torch.tensor(self.tokenizer.encode(self.continuation, add_special_tokens=False))
        return torch.cat([input_ids, new.expand(len(input_ids), -1)], dim=1)


def test_exact_match_prompts_end_before_the_newline_so_the_model_writes_it_with_the_indentation():
    tokenizer = zoo.load_tokenizer("smollm2-135m")
    assert len(tokenizer.encode("\n    return x", add_special_tokens=False)) < len(
        tokenizer.encode("\n", add_special_tokens=False) + tokenizer.encode("    return x", add_special_tokens=False))
    model = _Echo(tokenizer, "\n    return x\n")
    assert line_exact_match(model, tokenizer, [("def f(x):\n", "    return x")])["exact_match"] == 1.0
    assert model.prompts == ["def f(x):"]
    assert line_exact_match(_Echo(tokenizer, "    return x"), tokenizer, [("def f(x):\n", "    return x")])["exact_match"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"lines_per_example": 0}, "lines_per_example must be a positive integer"),
    ({"completions_per_file": -1}, "completions_per_file must be a positive integer"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        CodeCompletionData("stdlib_email", **kwargs)


def test_a_file_without_the_path_column_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "x = 1"}) + "\n")
    with pytest.raises(DataConfigError, match="no column 'path'"):
        CodeCompletionData(str(path)).file_splits()
