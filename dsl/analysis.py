"""Syntactic facts about kernel source the front end needs before it compiles a region."""
from __future__ import annotations

import ast


def assigned_names(stmts) -> list[str]:
    """The variable names a list of statements may assign (in order of first appearance), looking into
    nested loops and branches but not into nested functions."""
    out: dict[str, None] = {}

    def target(t):
        if isinstance(t, ast.Name):
            out.setdefault(t.id, None)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                target(e)
        elif isinstance(t, ast.Starred):
            target(t.value)

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return
        if isinstance(node, ast.Assign):
            for t in node.targets:
                target(t)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            target(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            target(node.target)
        elif isinstance(node, ast.NamedExpr):
            target(node.target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for s in stmts:
        visit(s)
    return list(out)
