"""A function's source as the front end reads it: its AST with absolute line numbers and original
columns, its file, globals and closure variables. Kernels and inline helpers must live in a file."""
from __future__ import annotations

import ast
import inspect
import os
import textwrap
from functools import lru_cache

from .errors import CompileError


class Source:
    """A function's AST with its file and absolute line numbers."""

    def __init__(self, fn):
        fn = inspect.unwrap(fn)
        self.fn = fn
        self.name = fn.__name__
        try:
            lines, first = inspect.getsourcelines(fn)
            self.file = inspect.getsourcefile(fn) or fn.__code__.co_filename
        except (OSError, TypeError) as e:
            raise CompileError(f"cannot read the source of {fn.__qualname__} ({e}): kernels and inline helpers "
                               f"must be defined in a file") from None
        text = "".join(lines)
        if text[:1].isspace():                        # an indented def: keep its columns, parse it inside an `if`
            tree = ast.parse("if 1:\n" + text)
            tree = tree.body[0].body
            offset = first - 2
        else:
            tree = ast.parse(textwrap.dedent(text)).body
            offset = first - 1
        node = tree[0]
        if not isinstance(node, ast.FunctionDef):
            raise CompileError(f"{fn.__qualname__} is not a plain `def` function")
        ast.increment_lineno(node, offset)
        self.node: ast.FunctionDef = node
        self.short = os.path.basename(self.file)
        self.globals = fn.__globals__
        self.closure = {}
        if fn.__closure__:
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
                try:
                    self.closure[name] = cell.cell_contents
                except ValueError:
                    pass


@lru_cache(maxsize=512)
def _source_of_code(fn) -> Source:
    return Source(fn)


def source_of(fn) -> Source:
    try:
        return _source_of_code(fn)
    except TypeError:            # unhashable: parse each time
        return Source(fn)
