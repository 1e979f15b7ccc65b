"""Explicit 16-lane LLVM vector code for the normalizing pass, as numba intrinsics.

numba's loop vectorizer already turns the normalizing loop into AVX-512 code, but it
stores ``y`` with ordinary stores: each output cache line is first read from memory
(read for ownership), so a pass that reads ``x`` once and writes ``y`` once moves
three bytes per byte.  The full chunks here store with non-temporal (streaming)
stores instead, which write whole lines without reading them.  Measured on the
development machine, this made the pass 1.3-1.5x faster on rows of 3136 values and
more, and about even on rows of 196 (where the masked partial chunks at row ends
weigh more).

Arithmetic, lane by lane, is exactly the scalar loop's: ``y64 = fma(x - mu, s, beta)``
in float64, rounded once to float32; an element is flagged when ``|y64| < thr`` or
``|y64| > ymax`` (ordered compares: NaN is not flagged, as in the scalar loop).

numba's on-disk cache keys a compiled function on its own source file only: after editing
this file, clear the cache (``__pycache__/*.nbi``/``*.nbc`` under ``kernels``) or the callers
in ``_numba_cpu.py`` keep the old code.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

W = 16  # lanes: one 64-byte line of float32 output
_F32, _F64, _I32, _I1 = ir.FloatType(), ir.DoubleType(), ir.IntType(32), ir.IntType(1)
_V32, _V64, _VI1, _VI32 = ir.VectorType(_F32, W), ir.VectorType(_F64, W), ir.VectorType(_I1, W), ir.VectorType(_I32, W)


def _fn(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _splat(builder: ir.IRBuilder, v: ir.Value, vty: ir.VectorType) -> ir.Value:
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), v, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(_VI32, [0] * W))


def _lanes(builder: ir.IRBuilder, ctx: Any, sig: Any, args: Any, masked: bool) -> ir.Value:
    if masked:
        x, y, q, lo, hi, mu, sc, bt, thr, ymax = args
    else:
        x, y, q, mu, sc, bt, thr, ymax = args
    xa = ctx.make_array(sig.args[0])(ctx, builder, x)
    ya = ctx.make_array(sig.args[1])(ctx, builder, y)
    xp = builder.bitcast(builder.gep(xa.data, [q]), _V32.as_pointer())
    yp = builder.bitcast(builder.gep(ya.data, [q]), _V32.as_pointer())
    if masked:
        idx = ir.Constant(_VI32, list(range(W)))
        lo32, hi32 = builder.trunc(lo, _I32), builder.trunc(hi, _I32)
        mask = builder.and_(
            builder.icmp_signed(">=", idx, _splat(builder, lo32, _VI32)),
            builder.icmp_signed("<", idx, _splat(builder, hi32, _VI32)),
        )
        load = _fn(builder, "llvm.masked.load.v16f32.p0", _V32, [xp.type, _I32, _VI1, _V32])
        xv = builder.call(load, [xp, ir.Constant(_I32, 4), mask, ir.Constant(_V32, [0.0] * W)])
    else:
        xv = builder.load(xp, align=4)
    fma = _fn(builder, "llvm.fma.v16f64", _V64, [_V64, _V64, _V64])
    d = builder.fsub(builder.fpext(xv, _V64), _splat(builder, mu, _V64))
    yv = builder.call(fma, [d, _splat(builder, sc, _V64), _splat(builder, bt, _V64)])
    r = builder.fptrunc(yv, _V32)
    if masked:
        store = _fn(builder, "llvm.masked.store.v16f32.p0", ir.VoidType(), [_V32, yp.type, _I32, _VI1])
        builder.call(store, [r, yp, ir.Constant(_I32, 4), mask])
    else:
        st = builder.store(r, yp, align=64)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(_I32, 1)]))
    ay = builder.call(_fn(builder, "llvm.fabs.v16f64", _V64, [_V64]), [yv])
    bad = builder.or_(
        builder.fcmp_ordered("<", ay, _splat(builder, thr, _V64)),
        builder.fcmp_ordered(">", ay, _splat(builder, ymax, _V64)),
    )
    if masked:
        bad = builder.and_(bad, mask)
    return builder.call(_fn(builder, "llvm.vector.reduce.or.v16i1", _I1, [_VI1]), [bad])


def _chunk_stream(typingctx: Any, x: Any, y: Any, q: Any, mu: Any, sc: Any, bt: Any, thr: Any, ymax: Any) -> Any:
    """Elements q .. q+15 of the flat float32 arrays x -> y (y + 4q must be 64-byte aligned),
    stored non-temporally; True when one is flagged."""
    sig = types.boolean(x, y, types.intp, types.float64, types.float64, types.float64, types.float64, types.float64)

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        return _lanes(builder, ctx, s, args, masked=False)

    return sig, codegen


def _chunk_masked(
    typingctx: Any, x: Any, y: Any, q: Any, lo: Any, hi: Any, mu: Any, sc: Any, bt: Any, thr: Any, ymax: Any
) -> Any:
    """Elements q+lo .. q+hi-1 (0 <= lo <= hi <= 16) of the flat float32 arrays x -> y, with
    masked loads and stores (lanes outside [lo, hi) are neither read nor written)."""
    f8 = types.float64
    sig = types.boolean(x, y, types.intp, types.intp, types.intp, f8, f8, f8, f8, f8)

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        return _lanes(builder, ctx, s, args, masked=True)

    return sig, codegen


def _store_fence(typingctx: Any) -> Any:
    """sfence: orders this thread's streaming stores before what it stores next (run once per
    task after its last streaming store, before the task's results are read elsewhere)."""
    sig = types.void()

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        builder.call(_fn(builder, "llvm.x86.sse.sfence", ir.VoidType(), []), [])
        return ctx.get_dummy_value()

    return sig, codegen


def _address(typingctx: Any, arr: Any) -> Any:
    """The address of an array's first element, as an integer (``arr.ctypes.data`` would stop
    numba from caching the compiled function)."""
    sig = types.intp(arr)

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        a = ctx.make_array(s.args[0])(ctx, builder, args[0])
        return builder.ptrtoint(a.data, ctx.get_value_type(types.intp))

    return sig, codegen


# typed Any: mypy reads numba's intrinsic objects as needing the typing context argument
chunk_stream: Any = intrinsic(_chunk_stream)
chunk_masked: Any = intrinsic(_chunk_masked)
store_fence: Any = intrinsic(_store_fence)
address: Any = intrinsic(_address)
