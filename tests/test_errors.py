"""Every mistake in a kernel is a tile.CompileError at file:line:col with the source line and a caret
under the offending expression, raised without a traceback through the compiler; launch mistakes are
TypeError / ValueError naming the parameter."""
from __future__ import annotations

import traceback

import numpy as np
import pytest

import tile
from tile import bf16, f32
from tile.dsl import builtins as B

T2 = tile.Tensor[f32, 2]
T1 = tile.Tensor[f32, 1]


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")


def line_of(kernel, text):
    """(line, 1-based col) of the first occurrence of `text` in the kernel's source."""
    import inspect
    lines, first = inspect.getsourcelines(kernel.fn)
    for i, ln in enumerate(lines):
        if text in ln:
            return first + i, ln.index(text) + 1
    raise AssertionError(f"{text!r} not in the source")


def compile_error(kernel, *args, at=None, match=None, width=None, **kw) -> tile.CompileError:
    """Compile and expect a CompileError located at the source text `at` (its first occurrence)."""
    with pytest.raises(tile.CompileError) as ei:
        kernel.compile(*args, **kw)
    err = ei.value
    s = str(err)
    if match is not None:
        assert match in err.msg, s
    if at is not None:
        line, col = line_of(kernel, at)
        assert (err.line, err.col) == (line, col), s
        assert f"test_errors.py:{line}:{col}: " in s, s
        src, caret = s.splitlines()[1:3]
        assert at in src and caret.index("^") == src.index(at), s
        if width is not None:
            assert caret.strip() == "^" + "~" * (width - 1), s
    # the traceback has no frames from inside the compiler
    frames = traceback.extract_tb(err.__traceback__)
    assert not any("/dsl/" in f.filename or "/ir/" in f.filename for f in frames), frames
    assert err.__cause__ is None and err.__suppress_context__
    return err


# ================================================================== unsupported syntax
@tile.kernel
def k_lambda(X: tile.Tensor[f32]):
    f = lambda v: v + 1
    tile.store(X, (0,), f(tile.zeros((4,), f32)))


@tile.kernel
def k_with(X: tile.Tensor[f32]):
    with open("x") as fh:
        pass


@tile.kernel
def k_try(X: tile.Tensor[f32]):
    try:
        X[0] = 1.0
    except Exception:
        pass


@tile.kernel
def k_listcomp(X: tile.Tensor[f32]):
    xs = [i * 2 for i in range(4)]


@tile.kernel
def k_brk(X: tile.Tensor[f32], n: int):
    for i in range(n):
        break


@pytest.mark.parametrize("kernel,at,match", [
    (k_lambda, "lambda v: v + 1", "lambda is not supported"),
    (k_with, "with open", "`with` blocks are not supported"),
    (k_try, "try:", "`try` is not supported"),
    (k_listcomp, "[i * 2 for i in range(4)]", "list comprehensions are not supported"),
    (k_brk, "break", "`break` is not supported"),
])
def test_unsupported_syntax(kernel, at, match):
    args = (T1, int) if kernel is k_brk else (T1,)
    compile_error(kernel, *args, at=at, match=match)


# ================================================================== names
@tile.kernel
def k_unknown(X: tile.Tensor[f32]):
    y = tile.zeros((4,), f32) + undefined_thing
    tile.store(X, (0,), y)


def test_unknown_name():
    err = compile_error(k_unknown, T1, at="undefined_thing", match="name 'undefined_thing' is not defined",
                        width=len("undefined_thing"))
    assert str(err).splitlines()[2].strip() == "^" + "~" * 14


# ================================================================== dot
@tile.kernel
def k_dot_shape(A: tile.Tensor[bf16], B: tile.Tensor[bf16], C: tile.Tensor[f32]):
    a = tile.load(A, (0, 0), (64, 32))
    b = tile.load(B, (0, 0), (16, 64))
    acc = tile.zeros((64, 64), f32)
    acc = tile.dot(a, b, acc)
    tile.store(C, (0, 0), acc)


@tile.kernel
def k_dot_dtype(A: tile.Tensor[bf16], B: tile.Tensor[f32], C: tile.Tensor[f32]):
    a = tile.load(A, (0, 0), (16, 16))
    b = tile.load(B, (0, 0), (16, 16))
    tile.store(C, (0, 0), tile.dot(a, b))


def test_dot_shape_mismatch():
    err = compile_error(k_dot_shape, tile.Tensor[bf16, 2], tile.Tensor[bf16, 2], T2, at="tile.dot(a, b, acc)",
                        match="dot: inner dims differ: a is (64, 32), b is (16, 64)")
    assert str(err).splitlines()[1].strip() == "acc = tile.dot(a, b, acc)"


def test_dot_dtype_mismatch():
    compile_error(k_dot_dtype, tile.Tensor[bf16, 2], T2, T2, at="tile.dot(a, b)",
                  match="a and b must have one dtype (cast one with .astype), got bf16 and f32")


# ================================================================== shapes and constants
@tile.kernel
def k_broadcast(X: tile.Tensor[f32]):
    a = tile.zeros((16, 8), f32)
    b = tile.zeros((4,), f32)
    tile.store(X, (0, 0), a + b)


@tile.kernel
def k_runtime_shape(X: tile.Tensor[f32], n: int):
    t = tile.zeros((n, 4), f32)
    tile.store(X, (0, 0), t)


@tile.kernel
def k_static_range(X: tile.Tensor[f32], n: int):
    for i in tile.static_range(n):
        X[i] = 1.0


def test_elementwise_shape_mismatch():
    compile_error(k_broadcast, T2, at="a + b", match="+: the shapes (16, 8) and (4,) do not broadcast",
                  width=len("a + b"))


def test_runtime_value_where_constant_required():
    err = compile_error(k_runtime_shape, T2, int, at="(n, 4)", match="shape must be made of compile-time constants")
    assert "tile.constexpr" in err.msg
    compile_error(k_static_range, T1, int, at="n)", match="static_range needs compile-time integer bounds")


# ================================================================== builtin arguments
@tile.kernel
def k_nargs(X: tile.Tensor[f32]):
    x = tile.load(X, (0,))
    tile.store(X, (0,), x)


@tile.kernel
def k_kwarg(X: tile.Tensor[f32]):
    x = tile.zeros((4,), f32, layout=None)


def test_wrong_number_of_arguments_to_a_builtin():
    compile_error(k_nargs, T1, at="tile.load(X, (0,))", match="load(): missing a required argument: 'shape'")
    compile_error(k_kwarg, T1, at="tile.zeros(", match="zeros(): got an unexpected keyword argument 'layout'")


# ================================================================== control flow
@tile.kernel
def k_carried_type(X: tile.Tensor[bf16], n: int):
    acc = tile.zeros((16,), f32)
    for i in range(n):
        x = tile.load(X, (i * 16,), (16,))
        acc = acc.astype(bf16) + x
    tile.store(X, (0,), acc)


@tile.kernel
def k_one_branch(X: tile.Tensor[f32], n: int):
    if n > 0:
        y = tile.zeros((4,), f32)
    tile.store(X, (0,), y)


@tile.kernel
def k_after_loop(X: tile.Tensor[f32], n: int):
    for i in range(n):
        z = tile.zeros((4,), f32)
    tile.store(X, (0,), z)


@tile.kernel
def k_if_types(X: tile.Tensor[f32], n: int):
    y = tile.zeros((4,), f32)
    if n > 0:
        y = tile.zeros((4,), f32).astype(bf16)
    tile.store(X, (0,), y.astype(f32))


@tile.kernel
def k_tile_cond(X: tile.Tensor[f32]):
    x = tile.load(X, (0,), (4,))
    if x > 0:
        X[0] = 1.0


def test_loop_carried_variable_changes_type():
    compile_error(k_carried_type, tile.Tensor[bf16, 1], int, at="acc = acc.astype(bf16) + x",
                  match="loop-carried variable 'acc' changes type: tile<16xf32> before the loop, tile<16xbf16>")


def test_variable_defined_in_one_branch_only():
    err = compile_error(k_one_branch, T1, int, at="y)", match="'y' is assigned only in the then-branch")
    line, _ = line_of(k_one_branch, "if n > 0")
    assert f"`if` at line {line}" in err.msg
    compile_error(k_after_loop, T1, int, at="z)", match="'z' is first assigned inside the loop")
    compile_error(k_if_types, T1, int, at="y = tile.zeros((4,), f32).astype(bf16)",
                  match="'y' is tile<4xbf16> after the then-branch but tile<4xf32> after the else-branch")
    compile_error(k_tile_cond, T1, at="x > 0", match="must be a scalar")


# ================================================================== verifier failures map to the call
@tile.kernel
def k_verify(X: tile.Tensor[f32]):
    tile.barrier()


def test_verifier_failure_is_located(monkeypatch):
    def bad_barrier(fe, a):
        fe.b.create("async_wait", attrs={"pending": -1})         # the op's verifier rejects this
    monkeypatch.setitem(B.BUILTINS, "barrier", bad_barrier)
    err = compile_error(k_verify, T1, at="tile.barrier()", match="invalid IR for op 'async_wait': pending must be >= 0")
    assert "^~~~" in str(err)


# ================================================================== the error text
def test_error_text_format():
    with pytest.raises(tile.CompileError) as ei:
        k_dot_shape.compile(tile.Tensor[bf16, 2], tile.Tensor[bf16, 2], T2)
    lines = str(ei.value).splitlines()
    line, col = line_of(k_dot_shape, "tile.dot(a, b, acc)")
    assert lines[0] == f"tests/test_errors.py:{line}:{col}: dot: inner dims differ: a is (64, 32), b is (16, 64)" \
        or lines[0].endswith(f"test_errors.py:{line}:{col}: dot: inner dims differ: a is (64, 32), b is (16, 64)")
    assert lines[1] == "        acc = tile.dot(a, b, acc)"
    assert lines[2] == "    " + " " * (col - 1) + "^" + "~" * (len("tile.dot(a, b, acc)") - 1)
    assert isinstance(ei.value, tile.TileError)


def test_launch_compile_error_has_short_traceback():
    x = np.ones((4,), np.float32)
    try:
        k_unknown[(1,)](x)
    except tile.CompileError as e:
        frames = traceback.extract_tb(e.__traceback__)
        assert [f.name for f in frames] == ["test_launch_compile_error_has_short_traceback", "__call__"]
        assert "undefined_thing" in str(e)
    else:
        raise AssertionError("no CompileError")


# ================================================================== launch arguments
@tile.kernel
def k_launch(A: tile.Tensor[bf16, 2], n: int, s: float, B: tile.Tensor[f32], BM: tile.constexpr, F: tile.constexpr = 2):
    tile.store(B, (0,), tile.full((4,), s, f32) + n)


def test_launch_argument_errors():
    a = tile.asarray(np.ones((2, 2)), bf16)
    b = np.ones(4, np.float32)
    with pytest.raises(TypeError, match=r"k_launch\(\): argument 'A' expects a tensor of bf16 of rank 2, "
                                        r"got numpy float64 array"):
        k_launch[(1,)](np.ones((2, 2)), 1, 1.0, b, BM=4)
    with pytest.raises(ValueError, match=r"argument 'A' expects a tensor of bf16 of rank 2, got a rank-1 array"):
        k_launch[(1,)](tile.asarray(np.ones(2), bf16), 1, 1.0, b, BM=4)
    with pytest.raises(TypeError, match=r"argument 'n' expects an int, got float 1.5"):
        k_launch[(1,)](a, 1.5, 1.0, b, BM=4)
    with pytest.raises(TypeError, match=r"argument 's' expects a float, got str"):
        k_launch[(1,)](a, 1, "x", b, BM=4)
    with pytest.raises(ValueError, match=r"argument 'n' = 4294967296 does not fit i32"):
        k_launch[(1,)](a, 2 ** 32, 1.0, b, BM=4)
    with pytest.raises(TypeError, match=r"k_launch\(\): missing a required argument: 'BM'"):
        k_launch[(1,)](a, 1, 1.0, b)
    with pytest.raises(TypeError, match=r"k_launch\(\): missing a required argument: 'B'"):
        k_launch[(1,)](a, 1, 1.0, BM=4)
    with pytest.raises(TypeError, match=r"too many positional arguments"):
        k_launch[(1,)](a, 1, 1.0, b, 4, 2, 7)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'C'"):
        k_launch[(1,)](a, 1, 1.0, b, BM=4, C=1)
    with pytest.raises(TypeError, match=r"grid must be a tuple of 1 to 3 ints"):
        k_launch[(1, 1, 1, 1)](a, 1, 1.0, b, BM=4)
    with pytest.raises(TypeError, match=r"constexpr 'BM' must be a compile-time value"):
        k_launch[(1,)](a, 1, 1.0, b, BM=np.ones(3))
    b[:] = np.nan
    k_launch[(1,)](a, 3, 0.5, b, BM=4)
    assert list(b) == [3.5] * 4


def test_bad_annotation():
    def f(X: np.ndarray):
        pass
    with pytest.raises(TypeError, match="parameter 'X' has annotation"):
        tile.kernel(f)


# ================================================================== more located errors
@tile.kernel
def k_store_dtype(X: tile.Tensor[bf16]):
    tile.store(X, (0,), tile.zeros((4,), f32))


@tile.kernel
def k_plain_call(X: tile.Tensor[f32]):
    tile.store(X, (0,), helper(tile.zeros((4,), f32)))


def helper(x):
    return x


@tile.inline
def bad_inline(x):
    return x + tile.zeros((3,), f32)


@tile.kernel
def k_inline_err(X: tile.Tensor[f32]):
    tile.store(X, (0,), bad_inline(tile.zeros((4,), f32)))


@tile.kernel
def k_return_value(X: tile.Tensor[f32]):
    return 1


@tile.kernel
def k_runtime_tile_index(X: tile.Tensor[f32], n: int):
    x = tile.load(X, (0,), (4,))
    X[0] = x[n]


def test_more_located_errors():
    compile_error(k_store_dtype, tile.Tensor[bf16, 1], at="tile.zeros((4,), f32))",
                  match="value is f32 but the tensor holds bf16: convert it first (.astype(tile.bf16))")
    compile_error(k_plain_call, T1, at="helper(", match="plain Python function 'helper'")
    err = compile_error(k_inline_err, T1, at=None, match="the shapes (4,) and (3,) do not broadcast")
    assert "x + tile.zeros((3,), f32)" in str(err) and "inlined at test_errors.py:" in str(err)
    compile_error(k_return_value, T1, at="return 1", match="a kernel cannot return a value")
    compile_error(k_runtime_tile_index, T1, int, at="n]", match="a tile index must be a compile-time int")


@tile.kernel
def k_tile_and(X: tile.Tensor[f32]):
    x = tile.load(X, (0,), (4,))
    m = (x > 0) and (x < 1)
    tile.store(X, (0,), tile.where(m, x, 0.0))


def test_and_on_masks_suggests_ampersand():
    compile_error(k_tile_and, T1, at="x > 0) and", match="combine masks with & and |")


@tile.kernel
def k_static_assert(X: tile.Tensor[f32], BM: tile.constexpr):
    tile.static_assert(BM % 16 == 0, "BM must be a multiple of 16")
    X[0] = 1.0


@tile.kernel
def k_while_true(X: tile.Tensor[f32]):
    while True:
        X[0] = 1.0


@tile.kernel
def k_other_runtime(X: tile.Tensor[f32], v: float):
    tile.store(X, (0,), tile.load(X, (0,), (4,), other=v))


def test_compile_time_checks():
    compile_error(k_static_assert, T1, BM=24, at="BM % 16 == 0", match="static_assert: failed: BM must be a multiple of 16")
    assert "BM = 32" in k_static_assert.compile(T1, BM=32).ir
    compile_error(k_while_true, T1, at="True:", match="endless loop")
    compile_error(k_other_runtime, T1, float, at="v))", match="load: other must be a compile-time constant")
