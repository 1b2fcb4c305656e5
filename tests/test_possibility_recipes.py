"""The configs/diversity recipes run on a tiny model, and `evaluate --diversity` scores a trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_peft.cli import main
from lightning_peft.cli.refuse import Refused

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["configs/diversity/possibility_movie_dialog.yaml", "configs/diversity/sft_movie_dialog.yaml"]
CONTEXTS = ["hi.", "where've you been?", "what do you want?", "who is it?"]


def _dialog(path: Path) -> str:
    replies = ["hello there.", "go away.", "nice shoes, stranger.", "the garden, mostly."]
    path.write_text("".join(json.dumps({"prompt": c, "response": f"{r} {i}"}) + "\n"
                            for i, c in enumerate(CONTEXTS) for r in replies))
    return str(path)


def _fit(recipe: str, tmp_path: Path, *extra: str) -> None:
    main(["fit", "--config", str(ROOT / recipe), "--model.init_args.backbone", "tiny-llama",
          "--data.init_args.dataset", _dialog(tmp_path / "dialog.jsonl"), "--data.init_args.val_size", "1",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false", *extra])


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_with_fast_dev_run(recipe, tmp_path):
    _fit(recipe, tmp_path, "--trainer.fast_dev_run", "true")


def test_evaluate_diversity_scores_samples_of_a_trained_checkpoint(tmp_path, capsys):
    _fit(RECIPES[0], tmp_path, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    contexts = tmp_path / "contexts.txt"
    contexts.write_text("\n".join(CONTEXTS[:2]) + "\n")
    main(["evaluate", "--ckpt_path", str(ckpt), "--diversity", "3", "--diversity_prompts", str(contexts),
          "--diversity_template", "Context: {context} possibility #{possibility}", "--diversity_encoder", "tiny-bert",
          "--max_new_tokens", "6", "--output_dir", str(tmp_path / "eval")])
    result = json.loads((tmp_path / "eval" / "diversity.json").read_text())
    assert result["contexts"] == 2 and result["samples_per_context"] == 3
    for name in ("distinct_1", "distinct_2", "self_bleu", "embedding_distance"):
        assert 0.0 <= result[name] <= 1.0 + 1e-6, name
    rows = [json.loads(line) for line in (tmp_path / "eval" / "diversity_samples.jsonl").read_text().splitlines()]
    assert [len(row["samples"]) for row in rows] == [3, 3]
    assert rows[0]["prompts"][2] == "Context: hi. possibility #3"
    assert "distinct_2" in capsys.readouterr().out


def test_evaluate_diversity_refuses_a_template_with_unknown_fields(tmp_path, capsys):
    contexts = tmp_path / "contexts.txt"
    contexts.write_text("hi.\n")
    with pytest.raises(Refused):
        main(["evaluate", "--backbone", "tiny-llama", "--diversity", "3", "--diversity_prompts", str(contexts),
              "--diversity_template", "{context} {speaker}"])
    assert "must place {context}" in capsys.readouterr().err


@pytest.mark.parametrize("override, words", [
    (["--data.init_args.prompt_template", "Reply to {context}"], "has no {possibility} slot"),
    (["--data.init_args.responses_per_context", "12"], "from 2 to 9"),
    (["--data.init_args.min_responses", "1"], "min_responses must be an integer >= 2"),
])
def test_recipe_with_bad_possibility_settings_gets_one_sentence(override, words, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / RECIPES[0]), "--model.init_args.backbone", "tiny-llama", *override])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and words in err[-1]  # the last line the user sees is the sentence


def test_evaluate_diversity_refuses_jsonl_contexts_without_a_context_field(tmp_path, capsys):
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text(json.dumps({"prompt": "hi."}) + "\n")
    with pytest.raises(Refused):
        main(["evaluate", "--backbone", "tiny-llama", "--diversity", "3", "--diversity_prompts", str(contexts)])
    assert "needs a 'context' field" in capsys.readouterr().err
