"""Grid orders: which tile a block computes, for the caches' sake.

`xcd_remap(pid, n, xcds)` -- the `xcd_remap` op's arithmetic (the interpreter runs this function; the
code generators emit the same steps). AMD Instinct GPUs are built from XCDs (MI300X and MI355X: 8),
each with its own L2; the dispatcher deals workgroups to them round-robin (block b runs on XCD
b % xcds). Renumbering the blocks so that XCD x gets one contiguous range of ids puts neighbouring
tiles (which read the same rows of A or columns of B) on the same L2:

    XCD x runs blocks x, x + X, x + 2X, ...: count(x) = ceil(n / X) for the first n % X XCDs (all X
    when X divides n), one less for the others; its j-th block gets id  sum(count(y), y < x) + j.
"""
from __future__ import annotations

__all__ = ["xcd_remap"]


def xcd_remap(pid: int, n: int, xcds: int) -> int:
    """The id block `pid` of `n` computes when blocks are grouped by XCD (`xcds` of them)."""
    if xcds <= 1 or n <= 0:
        return pid
    per = -(-n // xcds)                        # blocks on the fuller XCDs
    tall = n % xcds or xcds                    # how many XCDs are full
    x, j = pid % xcds, pid // xcds
    if x < tall:
        return x * per + j
    return tall * per + (x - tall) * (per - 1) + j
