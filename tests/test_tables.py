"""`print_table`: what `lightning-peft models`, `datasets` and `evaluate` print, in a pipe and on a terminal."""

from __future__ import annotations

from lightning_peft.cli import main
from lightning_peft.cli.tables import print_table

LONG = "a description long enough to pass the 80 columns rich would otherwise fold a table to, " * 2
ROWS = [("acc/[bold]trec6", "0.5", "0.625", "+0.125"), ("forgetting/kl_from_base", "", "0.0123", ""),
        ("notes", "", LONG, "")]


def test_outside_a_terminal_each_row_is_one_plain_line(capsys):
    print_table(ROWS, ("metric", "base", "tuned", "delta"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(ROWS)  # header, dashes, one line per row: nothing wrapped
    assert lines[0].split() == ["metric", "base", "tuned", "delta"]
    assert set(lines[1]) == {"-", " "}  # ASCII dashes under the header, no box drawing
    assert lines[2].split() == ["acc/[bold]trec6", "0.5", "0.625", "+0.125"]  # cells as given, not rich markup
    assert lines[3].split() == ["forgetting/kl_from_base", "0.0123"]
    assert LONG.strip() in lines[4]
    assert all(line.isascii() and "\x1b" not in line for line in lines)  # no colour codes
    starts = [lines[0].index(name) for name in ("base", "tuned", "delta")]
    assert [lines[2].index(value) for value in ("0.5", "0.625", "+0.125")] == starts  # columns line up


def test_on_a_terminal_the_header_is_bold_and_long_cells_wrap(capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stdout as a terminal
    monkeypatch.setenv("COLUMNS", "60")
    print_table(ROWS, ("metric", "base", "tuned", "delta"))
    out = capsys.readouterr().out
    assert "\x1b[1m" in out and "0.0123" in out
    assert max(len(line) for line in out.splitlines() if "\x1b" not in line) <= 60


def test_models_command_lists_the_zoo(capsys):
    main(["models"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "description"]
    assert any(line.startswith("tiny-llama ") and "for tests" in line for line in lines)
