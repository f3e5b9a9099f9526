"""Ahead-of-time artifacts: `tilec compile K.py::k --target sm_90a -o k.tilec` writes one file (code,
ABI, launch facts, IR signature: ir/artifact.py); `tile.load_compiled("k.tilec")` launches it with
`kernel[grid](*args)` through the runtime alone -- no front end, passes or code generator run."""
from __future__ import annotations

from .ir.artifact import Artifact

__all__ = ["load_compiled", "LoadedKernel"]


class LoadedKernel:
    """A kernel loaded from an artifact file; launch with `k[grid](*args, stream=None)`."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact

    @property
    def name(self) -> str:
        return self.artifact.name

    def __getitem__(self, grid):
        def launch(*args, stream=None):
            from .runtime.launch import launch as _launch
            _launch(self.artifact, grid, list(args), stream)
        return launch

    def __repr__(self) -> str:
        sig = ", ".join(f"{n}: {t}" for n, t in self.artifact.signature)
        return f"<tile.LoadedKernel {self.name}({sig}) for {self.artifact.target}>"


def load_compiled(path) -> LoadedKernel:
    """The kernel in an artifact file written by `tilec compile ... -o K.tilec`."""
    return LoadedKernel(Artifact.load(path))
