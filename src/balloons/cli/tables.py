"""Tables that fit the terminal: columns are dropped, least useful first, never an id cut.

On a terminal, a table wider than the terminal loses whole columns, in the order its command
declares (``Column.drop``), until it fits; ids and the status are never dropped nor cut. When
the output is not a terminal (a pipe, a file), or with ``--wide``, every column is printed at its
full width, however wide the lines get. Every cell is text read from Redis or a backend, so it
goes through :func:`balloons.untrusted.shown` and is printed as plain text, never as markup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import click
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..untrusted import shown

#: Cells of a table row: text, or text with a rich style (a status's colour).
Cell = str | tuple[str, str]


@dataclass(frozen=True)
class Column:
    """A column of a table: its header, whether it is an id (never wrapped, cut or dropped),
    its alignment, and when it is dropped to fit (1 first; ``None``: never)."""

    name: str
    drop: int | None = None
    is_id: bool = False
    justify: Literal["left", "right"] = "left"


def drop_order(columns: Sequence[Column]) -> str:
    """The columns a narrow terminal drops, first to last (``"machine, attempt, took"``), for
    help texts."""
    return ", ".join(c.name for c in sorted(columns, key=_drop_key) if c.drop is not None)


F = TypeVar("F", bound=Callable[..., Any])


def wide_option(columns: Sequence[Column]) -> Callable[[F], F]:
    """The ``--wide`` option of a command printing a table of ``columns``."""
    return click.option(
        "--wide",
        is_flag=True,
        help="Every column, however wide. Otherwise a terminal too narrow drops columns, in "
        f"this order: {drop_order(columns)} (ids are never cut). Piped output has every column.",
    )


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], *,
                wide: bool = False) -> None:  # fmt: skip
    """Print ``rows`` under ``columns`` on ``console``: fitted to a terminal's width, whole
    otherwise (or with ``wide``)."""
    cells = [[_text(cell) for cell in row] for row in rows]
    widths = [
        max([cell_len(c.name), *(cell_len(row[i].plain) for row in cells)])
        for i, c in enumerate(columns)
    ]
    shown_cols = list(range(len(columns)))
    fitting = console.is_terminal and not wide
    if fitting:
        for col in sorted(
            (i for i, c in enumerate(columns) if c.drop is not None),
            key=lambda i: _drop_key(columns[i]),
        ):
            if _width(widths[i] for i in shown_cols) <= console.width:
                break
            shown_cols.remove(col)
    natural = _width(widths[i] for i in shown_cols)
    # What the kept columns need at the least: ids whole, other text folded to its header.
    least = _width(widths[i] if columns[i].is_id else cell_len(columns[i].name) for i in shown_cols)
    table = Table(show_edge=False)
    for i in shown_cols:
        c = columns[i]
        table.add_column(
            c.name,
            justify=c.justify,
            no_wrap=c.is_id,
            min_width=widths[i] if c.is_id else None,
            overflow="fold",
        )
    for row in cells:
        table.add_row(*(row[i] for i in shown_cols))
    width = max(console.width, least) if fitting else max(console.width, natural)
    with _width_of(console, width):
        console.print(table)


def _drop_key(column: Column) -> int:
    return column.drop if column.drop is not None else 0


def _width(widths: Iterator[int] | Sequence[int]) -> int:
    """The width of a table without edges: each column padded by a space either side, and a
    rule between columns."""
    ws = list(widths)
    return sum(w + 2 for w in ws) + max(0, len(ws) - 1)


def _text(cell: Cell) -> Text:
    value, style = cell if isinstance(cell, tuple) else (cell, "")
    return Text(shown(value), style=style)


@contextmanager
def _width_of(console: Console, width: int) -> Iterator[None]:
    """``console`` rendering at ``width`` columns for a while."""
    before = console._width  # rich has no public way back to "unset"
    console.width = width
    try:
        yield
    finally:
        console._width = before
