"""Source-located errors of the front end.

`CompileError` is what a kernel author sees: ``file:line:col: message``, the source line, and a caret
line under the offending expression. Its traceback is kept short: the front end raises it with
``from None`` and the launch API re-raises it from its own frame, so no compiler internals show.

`SemanticError` is internal: helpers that do not know the AST node raise it, and the front end turns it
into a `CompileError` at the expression (or the argument) being compiled.
"""
from __future__ import annotations

import linecache
import os

from ..ir.errors import TileError


class CompileError(TileError):
    """A mistake in a kernel, located in its source: ``str(err)`` shows file:line:col, the line and a caret.
    `internal` is True for a compiler bug reported at the source line it hit (its cause is chained)."""

    internal = False

    def __init__(self, msg: str, file: str | None = None, line: int | None = None, col: int | None = None,
                 end_col: int | None = None, source_line: str | None = None):
        self.msg = msg
        self.file = file
        self.line = line
        self.col = col              # 1-based
        self.end_col = end_col      # 1-based, exclusive; None when the expression spans lines
        if source_line is None and file and line:
            source_line = linecache.getline(file, line).rstrip("\n") or None
        self.source_line = source_line
        super().__init__(self._format())
        self.__suppress_context__ = True

    @property
    def where(self) -> str:
        if not self.file:
            return ""
        s = _display_path(self.file)
        if self.line:
            s += f":{self.line}"
            if self.col:
                s += f":{self.col}"
        return s

    def _format(self) -> str:
        head = f"{self.where}: {self.msg}" if self.where else self.msg
        if not self.source_line or not self.col:
            return head
        src = self.source_line.rstrip()
        # keep tabs where the source has them so the caret lines up in any terminal
        pad = "".join(c if c == "\t" else " " for c in src[:self.col - 1])
        width = 1
        if self.end_col and self.end_col > self.col:
            width = min(self.end_col, len(src) + 1) - self.col
        caret = "^" + "~" * max(0, width - 1)
        return f"{head}\n    {src}\n    {pad}{caret}"


class SemanticError(Exception):
    """Internal: a front-end rule broken somewhere below the AST walk; `node` (optional) says where."""

    def __init__(self, msg: str, node=None):
        super().__init__(msg)
        self.msg = msg
        self.node = node


def _display_path(path: str) -> str:
    """A path relative to the working directory when the file lies below it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
