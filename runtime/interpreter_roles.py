"""The interpreter's mbarriers and warp roles (`warp_specialize`): the producer region runs in a
second host thread beside the consumer region, and `mbarrier_wait` blocks until the phase it waits
for has completed -- so the interpreter executes the specialized protocol (phase parities, the
`empty` releases) instead of assuming it, and a protocol that would hang on the GPU is an error here.

An mbarrier is one i64 word of a shared tile; the interpreter keeps its number of completed phases
there. `mbarrier_arrive` completes a phase (the op stands for every arrival the mbarrier's count asks
for: all the warps, or thread 0, executing it; its copies have completed already); `mbarrier_wait(p)`
returns once completed % 2 != p: the phase of parity p is done (for a fresh mbarrier, parity 1 at
once: the phase "before" the first, as try_wait.parity reports it on the GPU).

A wait that cannot return -- no other role is running, or every running role is waiting, or the
other role failed -- raises InterpreterError naming the op, instead of hanging.
"""
from __future__ import annotations

import threading

import numpy as np

_CV = threading.Condition()


class _Roles:
    """The roles of one warp_specialize execution: how many run, what each waiting one waits for,
    whether one failed."""
    def __init__(self, n: int):
        self.running, self.waits, self.failed = n, {}, False

    def stuck(self) -> bool:
        """Every running role waits for a phase that has not completed (a woken waiter that has not
        run yet is not stuck: its phase has completed)."""
        return len(self.waits) >= self.running and not any(_done(b, p) for b, p in self.waits.values())


def _state(ctx):
    return getattr(ctx, "_roles", None)


def _done(bar, parity: int) -> bool:
    return int(bar.buf.reshape(-1)[0]) % 2 != parity % 2


def mbarrier_init(bars) -> None:
    with _CV:
        bars.buf[...] = 0


def mbarrier_arrive(ctx, bar) -> None:
    with _CV:
        bar.buf[...] += 1
        _CV.notify_all()


def mbarrier_wait(ctx, op, bar, parity: int) -> None:
    from .interpreter import InterpreterError
    me = threading.get_ident()
    with _CV:
        st = _state(ctx)
        if st is not None:
            st.waits[me] = (bar, parity)
        try:
            while not _done(bar, parity):
                if st is None or st.failed or st.stuck():
                    why = "the other role failed" if st is not None and st.failed else \
                        "no other thread can arrive on it" if st is None or st.running == 1 else "every role waits"
                    raise InterpreterError(f"waits forever for phase parity {parity} of an mbarrier that has "
                                           f"completed {int(bar.buf.reshape(-1)[0])} phases ({why})", op, ctx.block)
                _CV.wait(timeout=1.0)
        finally:
            if st is not None:
                st.waits.pop(me, None)


def run_roles(ctx, op) -> None:
    """Region 0 (producer) in a helper thread, region 1 (consumers) here; errors of either are raised."""
    from .interpreter import InterpreterError
    if _state(ctx) is not None:
        raise InterpreterError("warp_specialize inside warp_specialize", op, ctx.block)
    st = ctx._roles = _Roles(2)
    errors: list = []

    def role(region):
        try:
            with np.errstate(all="ignore"):
                ctx.run_region(region, [])
        except BaseException as e:             # noqa: BLE001 -- handed to the caller below
            errors.append(e)
            with _CV:
                st.failed = True
        finally:
            with _CV:
                st.running -= 1
                _CV.notify_all()

    producer = threading.Thread(target=role, args=(op.regions[0],), name="tilec-producer", daemon=True)
    producer.start()
    role(op.regions[1])
    producer.join()
    ctx._roles = None
    if errors:
        # the first failure is the cause; a wait that failed because of it is only its consequence
        first = next((e for e in errors if "the other role failed" not in str(e)), errors[0])
        raise first
