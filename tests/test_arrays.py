"""tile.runtime.arrays: host tensors of any dtype (storage, round trips) and dtype_of.

Random inputs are fresh on every run; the seed is in every failure message (TILE_TEST_SEED replays).
"""
from __future__ import annotations

import os

import ml_dtypes as md
import numpy as np
import pytest

from tile.ir import dtypes as D
from tile.ir import numerics as N
from tile.runtime.arrays import Array, asarray, dtype_of, from_codes, from_packed

SEED = int(os.environ.get("TILE_TEST_SEED") or np.random.SeedSequence().entropy)


def rng(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, *name.encode()])


def randvals(name, shape, scale=4.0):
    r = rng(name)
    x = r.standard_normal(shape) * scale
    return np.where(x == 0, 0.5, x)


SUBBYTE = ["int3", "uint5", "int1", "uint1", "i1", "int4", "uint2", "int7", "f6e3m2", "f6e2m3", "f4e2m1",
           "f5e2m2", "f3e1m1"]


@pytest.mark.parametrize("name", SUBBYTE)
@pytest.mark.parametrize("shape", [(37,), (5, 7), (3, 4, 5), (1,)])
def test_subbyte_round_trip(name, shape):
    t = D.dtype(name)
    x = randvals(f"sub{name}{shape}", shape)
    a = asarray(x, name)
    msg = f"{name} {shape} seed {SEED}"
    assert a.dtype == t and a.shape == shape and a.ndim == len(shape)
    want_codes = N.encode(x, t)
    assert np.array_equal(a.codes(), want_codes), msg
    assert a.data.dtype == np.uint8 and a.data.ndim == 1
    assert a.nbytes == (np.prod(shape) * t.bits + 7) // 8 == a.data.size
    assert np.array_equal(a.data, N.pack(want_codes, t.bits)), msg
    vals = a.numpy()
    want = N.quantize(x, t)
    if t.kind == "bool":
        assert vals.dtype == np.bool_ and np.array_equal(vals, want != 0), msg
    elif t.is_float:
        assert vals.dtype == np.float32 and np.array_equal(vals, want), msg
    else:
        assert vals.dtype == np.int64 and np.array_equal(vals, want), msg
    # from the codes, from the packed bytes, from its own values: the same array
    for b in (from_codes(a.codes(), name), from_packed(a.data, name, shape), asarray(a.numpy(), name),
              from_packed(a.data.tobytes(), name, shape)):
        assert b.shape == shape and np.array_equal(b.codes(), want_codes), msg
    assert asarray(a) is a and asarray(a, t) is a


@pytest.mark.parametrize("name,store", [("f32", np.float32), ("f16", np.float16), ("f64", np.float64),
                                        ("i8", np.int8), ("u16", np.uint16), ("i32", np.int32),
                                        ("bf16", np.uint16), ("f8e4m3fn", np.uint8), ("f8e5m2", np.uint8)])
def test_byte_types(name, store):
    t = D.dtype(name)
    x = randvals(f"byte{name}", (6, 9), scale=50.0)
    a = asarray(x, name)
    msg = f"{name} seed {SEED}"
    assert a.data.dtype == store and a.data.shape == (6, 9)
    assert a.strides == (9, 1)
    assert np.array_equal(a.codes(), N.encode(x, t)), msg
    v = a.numpy()
    assert v.dtype == (np.float64 if name == "f64" else np.float32 if t.is_float else np.int64)
    np.testing.assert_array_equal(v, N.quantize(x, t), err_msg=msg)


def test_ml_dtypes_inputs_are_bit_exact():
    x = randvals("mlin", (50,), 10.0)
    for mlt, name in ((md.bfloat16, "bf16"), (md.float8_e4m3fn, "f8e4m3fn"), (md.float8_e5m2, "f8e5m2"),
                      (md.float4_e2m1fn, "f4e2m1"), (md.float6_e3m2fn, "f6e3m2"), (md.int4, "int4"),
                      (md.uint2, "uint2")):
        with np.errstate(all="ignore"):
            m = x.astype(mlt)
        a = asarray(m)                                      # dtype from the array
        assert a.dtype == D.dtype(name)
        np.testing.assert_array_equal(a.numpy(), m.astype(np.float64), err_msg=f"{name} seed {SEED}")
        # asking another dtype converts values
        b = asarray(m, "f32")
        np.testing.assert_array_equal(b.numpy(), m.astype(np.float32))


def test_conversions_and_repr():
    x = np.array([[1.26, -3.5, 100.0], [0.1, -0.2, 7.49]])
    a = asarray(x, "int3")
    assert a.numpy().tolist() == [[1, -4, 3], [0, 0, 3]]
    b = a.astype("f32")
    assert b.dtype == D.f32 and b.numpy().tolist() == [[1, -4, 3], [0, 0, 3]]
    r = repr(a)
    assert "int3" in r and "(2, 3)" in r
    c = a.copy()
    assert c is not a and np.array_equal(c.codes(), a.codes())
    assert np.asarray(a).tolist() == a.numpy().tolist()
    assert len(a) == 2 and a.size == 6 and a.nbits == 18 and a.nbytes == 3
    # Python lists and scalars
    assert asarray([1.0, 2.0]).dtype == D.f64
    assert asarray(3.7, "uint2").numpy() == 3 and asarray(3.7, "uint2").shape == ()


def test_from_codes_checks_widths():
    with pytest.raises(ValueError):
        from_codes(np.array([8]), "int3")
    with pytest.raises(ValueError):
        from_codes(np.array([256]), "f8e4m3fn")
    with pytest.raises(ValueError):
        from_packed(b"\x00", "int4", (3,))


def test_set_values_rounds_exactly():
    a = asarray(np.zeros((2, 3)), "f6e3m2")
    v = np.array([[0.3, -1.1, 29.0], [1e9, -0.0, 0.7]])
    a._set_values(v)
    np.testing.assert_array_equal(a.numpy(), N.quantize(v, "f6e3m2").astype(np.float32))
    b = asarray(np.zeros(4), "f32")
    b._set_values(np.array([1, 2, 3, 4], np.float32))
    assert b.numpy().tolist() == [1, 2, 3, 4]


def test_dtype_of():
    cases = {np.float32: "f32", np.float16: "f16", np.float64: "f64", np.int8: "i8", np.int16: "i16",
             np.int32: "i32", np.int64: "i64", np.uint8: "u8", np.uint16: "u16", np.uint32: "u32",
             np.uint64: "u64", np.bool_: "i1", md.bfloat16: "bf16", md.float8_e4m3fn: "f8e4m3fn",
             md.float8_e5m2: "f8e5m2", md.float6_e3m2fn: "f6e3m2", md.float6_e2m3fn: "f6e2m3",
             md.float4_e2m1fn: "f4e2m1", md.int4: "int4", md.uint4: "uint4", md.int2: "int2"}
    for npt, name in cases.items():
        assert dtype_of(np.zeros(3, npt)) == D.dtype(name), npt
    assert dtype_of(np.zeros((2, 2), md.bfloat16)).name == "bf16"
    assert dtype_of(asarray(np.ones(3), "int3")) == D.dtype("int3")
    assert dtype_of(np.float32(1.0)) == D.f32
    assert dtype_of(True) == D.bool_ and dtype_of(3) == D.i32 and dtype_of(2.0) == D.f32
    for bad in (np.zeros(2, np.complex64), np.zeros(2, md.float8_e4m3fnuz), np.zeros(2, md.float8_e4m3),
                np.zeros(2, "U3"), "hello", [1, 2]):
        with pytest.raises(TypeError):
            dtype_of(bad)
