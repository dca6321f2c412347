"""Markdown helpers shared by the steps that write Markdown reports.

    md_table(["task", "acc"], [["OrganA", "61.0"], ["a|b", "1"]])
    -> | task | acc |
       |---|---|
       | OrganA | 61.0 |
       | a\\|b | 1 |

Cells are display strings: the caller formats numbers and marks emphasis (e.g. "**group**") itself.
"""

from __future__ import annotations


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown pipe table: header, separator, one line per row; `|` in a cell is escaped, newlines become
    spaces, a short row is padded with empty cells. No trailing newline."""
    width = len(head)
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * width]
    for row in rows:
        cells = [_cell(c) for c in row] + [""] * (width - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
