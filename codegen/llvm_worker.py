"""Entry point of the LLVM worker process: `python -m tile.codegen.llvm_worker` (see llvm_isolated.py)."""
from .llvm_isolated import serve

if __name__ == "__main__":
    serve()
