"""Explicit 16-lane LLVM vector code for the normalizing pass, as numba intrinsics.

numba's loop vectorizer already turns the normalizing loop into AVX-512 code, but it
stores ``y`` with ordinary stores: each output cache line is first read from memory
(read for ownership), so a pass that reads ``x`` once and writes ``y`` once moves
three bytes per byte.  The full chunks here store with non-temporal (streaming)
stores instead, which write whole lines without reading them.  Chunks follow y's
cache lines, not its rows: a chunk may straddle two rows (two parameter sets and a
split lane).  Measured on the development machine, this made the pass 1.3-1.6x faster
on tensors of 25-51 MB, rows of 196 values included; on a tensor that stays in cache
it is slower, so the host turns it on for large outputs only.

Arithmetic, lane by lane, is exactly the scalar loop's: ``y64 = fma(x - mu, s, beta')`` in
float64, rounded once to float32 (r); an element is flagged when its rounding is not decided,
``|y64 - r| > fma(2**E, gap_k, -G)`` with ``2**E`` the power of two at or below ``|y64|`` (its
exponent bits; 0 for 0), ``gap_k = HALF_GAP - 4K`` and ``G`` the doubled bound per row (see
``_numba_cpu.plan_finish``);
a finite y64 that rounds to infinity is flagged too (|y64 - r| is infinite), a NaN or infinite
one is not (ordered compares, as in the scalar loop).

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
# The rounding certificate's gap: with 2**E <= |y64| < 2**(E+1), the float32 r nearest y64 is
# at least 2**(E-24) from the rounding boundary on y64's side (exactly that far at a power of
# two approached from below; farther below 2**-126, where the spacing is fixed at 2**-149).  The
# factor 1 - 2**-40 is the margin that covers the rounding of the certificate's own arithmetic.
HALF_GAP = 2.0**-24 * (1 - 2.0**-40)
_EXPONENT_BITS = 0x7FF0000000000000
MAX_F32 = 3.4028234663852886e38
_F32, _F64, _I32, _I1 = ir.FloatType(), ir.DoubleType(), ir.IntType(32), ir.IntType(1)
_V32, _V64, _VI1, _VI32 = ir.VectorType(_F32, W), ir.VectorType(_F64, W), ir.VectorType(_I1, W), ir.VectorType(_I32, W)


def _fn(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _splat(builder: ir.IRBuilder, v: ir.Value, vty: ir.VectorType) -> ir.Value:
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), v, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(_VI32, [0] * W))


def _lanes(builder: ir.IRBuilder, ctx: Any, sig: Any, args: Any, masked: bool) -> ir.Value:
    """The chunk at q: lanes below ``split`` take the first parameter set (row r), the others
    the second (row r + 1); returns bit 0 when a lane of the first kind is flagged, bit 1 for
    the second."""
    x, y, q, lo, hi, split, *params = args
    mu_a, s_a, b_a, k_a, g_a, mu_b, s_b, b_b, k_b, g_b = params
    xa = ctx.make_array(sig.args[0])(ctx, builder, x)
    ya = ctx.make_array(sig.args[1])(ctx, builder, y)
    xp = builder.bitcast(builder.gep(xa.data, [q]), _V32.as_pointer())
    yp = builder.bitcast(builder.gep(ya.data, [q]), _V32.as_pointer())
    idx = ir.Constant(_VI32, list(range(W)))

    def below(v: ir.Value) -> ir.Value:  # lanes < v
        return builder.icmp_signed("<", idx, _splat(builder, builder.trunc(v, _I32), _VI32))

    first = below(split)

    def per_lane(a: ir.Value, b: ir.Value) -> ir.Value:
        return builder.select(first, _splat(builder, a, _V64), _splat(builder, b, _V64))

    if masked:
        mask = builder.and_(builder.not_(below(lo)), below(hi))
        load = _fn(builder, "llvm.masked.load.v16f32.p0", _V32, [xp.type, _I32, _VI1, _V32])
        xv = builder.call(load, [xp, ir.Constant(_I32, 4), mask, ir.Constant(_V32, [0.0] * W)])
    else:
        xv = builder.load(xp, align=4)
    fma = _fn(builder, "llvm.fma.v16f64", _V64, [_V64, _V64, _V64])
    fabs = _fn(builder, "llvm.fabs.v16f64", _V64, [_V64])
    d = builder.fsub(builder.fpext(xv, _V64), per_lane(mu_a, mu_b))
    # + 0.0: an exact 0 is +0 (fma(-0, s, -0) is -0); no fast-math flags, so LLVM keeps it
    yv = builder.fadd(builder.call(fma, [d, per_lane(s_a, s_b), per_lane(b_a, b_b)]), ir.Constant(_V64, [0.0] * W))
    r = builder.fptrunc(yv, _V32)
    if masked:
        store = _fn(builder, "llvm.masked.store.v16f32.p0", ir.VoidType(), [_V32, yp.type, _I32, _VI1])
        builder.call(store, [r, yp, ir.Constant(_I32, 4), mask])
    else:
        st = builder.store(r, yp, align=64)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(_I32, 1)]))
    dist = builder.call(fabs, [builder.fsub(yv, builder.fpext(r, _V64))])
    vi64 = ir.VectorType(ir.IntType(64), W)
    floor = builder.bitcast(builder.and_(builder.bitcast(yv, vi64), ir.Constant(vi64, [_EXPONENT_BITS] * W)), _V64)
    room = builder.call(fma, [floor, per_lane(k_a, k_b), builder.fneg(per_lane(g_a, g_b))])
    bad = builder.fcmp_ordered(">", dist, room)
    if masked:
        bad = builder.and_(bad, mask)
    reduce_or = _fn(builder, "llvm.vector.reduce.or.v16i1", _I1, [_VI1])
    bad_a = builder.call(reduce_or, [builder.and_(bad, first)])
    bad_b = builder.call(reduce_or, [builder.and_(bad, builder.not_(first))])
    i64 = ir.IntType(64)
    return builder.or_(builder.zext(bad_a, i64), builder.shl(builder.zext(bad_b, i64), ir.Constant(i64, 1)))


def _chunk(masked: bool) -> Any:
    """The typing function of :data:`chunk_stream` (``masked`` False: elements q .. q+15 of the
    flat float32 arrays x -> y, y + 4q 64-byte aligned, stored non-temporally; ``lo`` and ``hi``
    are ignored) or of :data:`chunk_masked` (lanes lo .. hi-1 only, 0 <= lo <= hi <= 16, with
    masked loads and ordinary masked stores: lanes outside [lo, hi) are neither read nor
    written).  Lanes from ``split`` on belong to the next row.  Parameters: mu, s, beta', gap_k, G
    of the two rows.  Returns the two rows' flags (bits 0 and 1)."""

    def typer(
        typingctx: Any,
        x: Any,
        y: Any,
        q: Any,
        lo: Any,
        hi: Any,
        split: Any,
        mu_a: Any,
        s_a: Any,
        b_a: Any,
        k_a: Any,
        g_a: Any,
        mu_b: Any,
        s_b: Any,
        b_b: Any,
        k_b: Any,
        g_b: Any,
    ) -> Any:
        sig = types.int64(x, y, types.intp, types.intp, types.intp, types.intp, *(types.float64,) * 10)

        def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
            return _lanes(builder, ctx, s, args, masked)

        return sig, codegen

    typer.__name__ = typer.__qualname__ = "chunk_masked" if masked else "chunk_stream"
    return typer


def _store_fence(typingctx: Any) -> Any:
    """sfence: orders this thread's streaming stores before what it stores next (run once per
    task after its last streaming store, before the task's results are read elsewhere)."""
    sig = types.void()

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        builder.call(_fn(builder, "llvm.x86.sse.sfence", ir.VoidType(), []), [])
        return ctx.get_dummy_value()

    return sig, codegen


def _pow2_floor(typingctx: Any, v: Any) -> Any:
    """2**E for a float64 with 2**E <= |v| < 2**(E+1): v's exponent bits alone (0 for 0 and
    subnormals, inf for inf and NaN)."""
    sig = types.float64(types.float64)

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        bits = builder.and_(builder.bitcast(args[0], i64), ir.Constant(i64, _EXPONENT_BITS))
        return builder.bitcast(bits, _F64)

    return sig, codegen


def _fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c rounded once (llvm.fma.f64), for float64 arguments."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        return builder.call(_fn(builder, "llvm.fma.f64", _F64, [_F64, _F64, _F64]), list(args))

    return sig, codegen


def _two_sum(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """Knuth's TwoSum, lane-wise: (s, e) with s = fl(a + b) and a + b = s + e exactly (no
    overflow; the instructions carry no fast-math flags, so LLVM keeps them as written)."""
    s = builder.fadd(a, b)
    bb = builder.fsub(s, a)
    e = builder.fadd(builder.fsub(a, builder.fsub(s, bb)), builder.fsub(b, bb))
    return s, e


def _block_sums(eft: bool) -> Any:
    """The typing function of :data:`block_sums16` (``eft`` False) or :data:`block_sums16_eft`."""

    def typer(typingctx: Any, v: Any, q: Any, nvec: Any, shift: Any) -> Any:
        if not (isinstance(v, types.Array) and v.dtype == types.float32 and v.layout == "C"):
            return None
        sig = types.UniTuple(types.float64, 4 if eft else 2)(v, types.intp, types.intp, types.float64)

        def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
            return _sums_code(ctx, builder, s, args, eft)

        return sig, codegen

    typer.__name__ = typer.__qualname__ = "block_sums16_eft" if eft else "block_sums16"
    return typer


def _sums_code(ctx: Any, builder: Any, s: Any, args: Any, eft: bool) -> Any:
    """(S1, S2) or, with ``eft``, (S1, S1_lo, S2, S2_lo) over v[q : q + 16 nvec] of a contiguous
    float32 array, d = v[i] - shift, in a fixed order: 16 lane-wise running sums (no
    reassociation), then the lanes added by a fixed tree (halves, four levels).

    Plain: a term of S2 = sum d**2 meets at most nvec - 1 + 4 roundings after its own (the
    subtraction and the product, fused into the first step), a term of S1 as many after its
    subtraction.

    ``eft``: both sums carried error-free, up to the rounding of their low parts.  TwoSum gives
    d + de = x - shift, each running-sum step and each tree addition; d**2 = p + pe (an fma),
    and (d + de)**2 - d**2 is taken as 2 d de (dropping de**2 <= u**2 d**2).  With k = nvec
    terms per lane:
    * S1's low parts sum to at most (k + 5)(1 + 3u) u sum|d| and each meets at most 2k + 8
      roundings: S1 + S1_lo is within (2k + 8)(k + 5) u**2 sum|d| (1 + 1e-14) of sum d
      (144 u**2 sum|d| at k = 4);
    * S2's sum to at most (k + 7)(1 + 3u) u sum d**2 and each meets at most 2k + 10:
      S2 + S2_lo is within ((2k + 10)(k + 7) + 1) u**2 sum d**2 (1 + 1e-14) of sum d**2
      (199 u**2 at k = 4).
    About three times the arithmetic of the plain sums: the host uses it to re-sum the few
    channels whose plain bounds leave elements open."""
    arr = ctx.make_array(s.args[0])(ctx, builder, args[0])
    base = builder.gep(arr.data, [args[1]])
    neg_sh = _splat(builder, builder.fneg(args[3]), _V64)
    fma = _fn(builder, "llvm.fma.v16f64", _V64, [_V64, _V64, _V64])
    zero = ir.Constant(_V64, [0.0] * W)
    acc1, lo1, acc2, lo2 = (cgutils.alloca_once_value(builder, zero) for _ in range(4))
    with cgutils.for_range(builder, args[2]) as loop:
        ptr = builder.bitcast(
            builder.gep(base, [builder.mul(loop.index, ir.Constant(loop.index.type, W))]), _V32.as_pointer()
        )
        xv = builder.fpext(builder.load(ptr, align=4), _V64)
        if eft:
            d, de = _two_sum(builder, xv, neg_sh)
            t, te = _two_sum(builder, builder.load(acc1), d)
            builder.store(builder.fadd(builder.load(lo1), builder.fadd(de, te)), lo1)
            p = builder.fmul(d, d)
            pe = builder.call(fma, [d, d, builder.fneg(p)])
            q, qe = _two_sum(builder, builder.load(acc2), p)
            cross = builder.call(fma, [builder.fadd(d, d), de, builder.fadd(pe, qe)])
            builder.store(builder.fadd(builder.load(lo2), cross), lo2)
            builder.store(q, acc2)
        else:
            d = builder.fadd(xv, neg_sh)
            t = builder.fadd(builder.load(acc1), d)
            builder.store(builder.call(fma, [d, d, builder.load(acc2)]), acc2)
        builder.store(t, acc1)

    def halves(v: ir.Value, n: int) -> tuple[ir.Value, ir.Value]:
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n, 2 * n))))
        return lo, hi

    def add(hi: ir.Value, lo: ir.Value, n: int) -> tuple[ir.Value, ir.Value]:
        (ha, hb), (la, lb) = halves(hi, n), halves(lo, n)
        if not eft:
            return builder.fadd(ha, hb), la
        h, e = _two_sum(builder, ha, hb)
        return h, builder.fadd(builder.fadd(la, lb), e)

    h1, l1, h2, l2 = (builder.load(a) for a in (acc1, lo1, acc2, lo2))
    n = W
    while n > 1:
        n //= 2
        h1, l1 = add(h1, l1, n)
        h2, l2 = add(h2, l2, n)
    first = ir.Constant(_I32, 0)
    parts = [builder.extract_element(v, first) for v in ((h1, l1, h2, l2) if eft else (h1, h2))]
    return ctx.make_tuple(builder, s.return_type, parts)


def _address(typingctx: Any, arr: Any) -> Any:
    """The address of an array's first element, as an integer (``arr.ctypes.data`` would stop
    numba from caching the compiled function)."""
    sig = types.intp(arr)

    def codegen(ctx: Any, builder: Any, s: Any, args: Any) -> Any:
        a = ctx.make_array(s.args[0])(ctx, builder, args[0])
        return builder.ptrtoint(a.data, ctx.get_value_type(types.intp))

    return sig, codegen


# typed Any: mypy reads numba's intrinsic objects as needing the typing context argument
chunk_stream: Any = intrinsic(_chunk(masked=False))
chunk_masked: Any = intrinsic(_chunk(masked=True))
store_fence: Any = intrinsic(_store_fence)
pow2_floor: Any = intrinsic(_pow2_floor)
block_sums16: Any = intrinsic(_block_sums(eft=False))
block_sums16_eft: Any = intrinsic(_block_sums(eft=True))
fma: Any = intrinsic(_fma)
address: Any = intrinsic(_address)
