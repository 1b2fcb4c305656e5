"""Tables for the CLI commands, laid out by `rich`."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Dashes under each header cell and nothing else (rich's SIMPLE_HEAD in ASCII), for output that is not a terminal.
PLAIN = box.Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    """Print `rows` under `header` on stdout, one aligned column per header cell.

    On a terminal: rich's simple-head table, header in bold, long cells wrapped to the
    terminal's width. Elsewhere (a pipe, a file, captured output): no colour, no box-drawing
    characters (ASCII dashes under the header) and no wrapping, so each row stays one line that
    grep, diff and a log file keep whole. Cells are printed as given (never read as rich markup).
    """
    console = Console()
    plain = not console.is_terminal
    if plain:
        console.width = 1 << 20  # as wide as the table needs: rich would fold it to 80 columns
    table = Table(box=PLAIN if plain else box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1, 0, 0) if plain else (0, 1), header_style="" if plain else "bold")
    for name in header:
        table.add_column(Text(str(name)), no_wrap=plain)
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    console.print(table)
