"""Plain-text tables for the terminal: the dry run, the summary after a grid, the claims.

    print(text_table(["arm", "finished"], [["on", "5"], ["off", "5"]]))
"""
from __future__ import annotations


def text_table(head: list[str], rows: list[list[str]]) -> str:
    """Aligned columns, two spaces apart, trailing blanks stripped."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [head, *rows])
