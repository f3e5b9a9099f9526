"""Errors raised by the IR layer. The front end's CompileError derives from TileError too."""
from __future__ import annotations


class TileError(Exception):
    """Base of every error tilec raises on purpose."""


class VerifyError(TileError):
    """The IR breaks a rule; the message names the op, its source location and the rule."""

    def __init__(self, op, rule: str):
        self.op = op
        self.rule = rule
        where = f"{op.loc}: " if getattr(op, "loc", None) else ""
        name = getattr(op, "name", "?")
        super().__init__(f"{where}op '{name}': {rule}")


class ParseError(TileError):
    """Malformed IR text: carries the line and column."""

    def __init__(self, msg: str, line: int, col: int, text_line: str | None = None):
        self.line, self.col = line, col
        detail = f"\n    {text_line}\n    {' ' * (col - 1)}^" if text_line is not None else ""
        super().__init__(f"line {line}, column {col}: {msg}{detail}")


class PerformanceWarning(UserWarning):
    """A compiled kernel will run, but slower than it should: register spills reported by ptxas
    (`tile.PerformanceWarning`; filter it with the `warnings` module)."""


def warn_performance(fn, op, message: str, stacklevel: int = 2) -> None:
    """A PerformanceWarning about a choice a pass could not make (or made for the worse) at `op`:
    "tilec: kernel 'name' at file:line:col: message" -- the kernel and the source line to change."""
    import warnings
    where = f" at {op.loc}" if getattr(op, "loc", None) is not None else ""
    warnings.warn(f"tilec: kernel '{fn.name}'{where}: {message}", PerformanceWarning, stacklevel=stacklevel + 1)
