"""tilec's benchmarks: tilec against the best library on the same GPU, in one run (benchmarks/README.md).

    python benchmarks/run.py [--quick|--smoke] [--only gemm,attention] [--out DIR] [--list|--dry-run]

One file per family (`gemm.py`, `attention.py`, `moe.py`, `lowbit_gemm.py`, `launch.py`,
`compile_times.py`), registered by name in `run.py`'s FAMILIES; what they share: `common.py` (modes,
tolerances, JSON helpers, the gallery kernels; no torch), `timing.py` (CUDA events, median after
warm-up, L2 rotation / flush), `peers.py` (cuBLAS, Triton, SDPA flash / cuDNN, grouped_mm,
tinygemm), `tilec_side.py` (the child's context and tilec's autotuned runs), `child.py` /
`parent.py` (processes), `report.py` (table, plot, listing).

Importing this package (or any of those modules) needs neither torch nor a GPU; the families import
torch inside `run(ctx)`.
"""
