"""The 16-lane streaming-store normalizing code (kernels/_simd.py) against the scalar loop,
and the CPU kernel taking it (forced on for small outputs) against the oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba", reason="numba is the kernels extra: pip install 'normspec[kernels]'")

import bn_cases
from normspec.kernels import _numba_cpu as cpu
from normspec.kernels import batch_norm
from normspec.kernels import batchnorm as kb

F32 = np.float32


def _values(rng, n):
    """|x| >= 1 with NaN, infinities and a huge value: under (mu, s, beta) = (0, 1, 0) and
    (gap_k, G) = (2**-24, 1e-30) nothing finite is flagged, while a lane read outside the span
    (as 0) would be."""
    x = (rng.choice([-1.0, 1.0], n) * (1 + np.abs(rng.standard_normal(n)))).astype(F32)
    x[rng.integers(0, n, 4)] = [np.nan, np.inf, -np.inf, 3e38]
    return x


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 4),  # channels
    st.integers(16, 60),  # row length B
    st.data(),
    st.integers(0, 15),  # y's offset from a 64-byte line, in elements
    st.sampled_from([0.0, 1e-30, 1e-9, 0.5, np.inf]),
    st.sampled_from([2.0**-24, 2.0**-24 - 2.0**-40, 2.0**-30, -1.0]),
    st.integers(0, 2**32 - 1),
)
def test_span_matches_the_scalar_loop(c_n, b_len, data, yoff, g, k, seed):
    """Rows r0 .. r1-1 in 16-lane chunks (aligned to y's lines, straddling rows): the same y bits
    and the same row flags as _normalize_row, every flagged element inside its row's recorded
    span, nothing written outside the span."""
    rng = np.random.default_rng(seed)
    rows = 2 * c_n + 3
    r0 = data.draw(st.integers(0, rows - 1))
    r1 = data.draw(st.integers(r0 + 1, rows))
    x = _values(rng, rows * b_len)
    raw = np.zeros(x.size + 32, F32)
    base = (-raw.ctypes.data % 64) // 4
    y = raw[base + yoff : base + yoff + x.size]
    y[:] = -7.0
    ref = y.copy()
    params = [(0.0, 1.0, 0.0), (0.0, 1.3, 0.5), (1e4, 7.0, -3.0), (0.25, 3e38, 1e37)]
    mu, sc, bt = (np.array(v) for v in zip(*[params[i % 4] for i in range(c_n)], strict=True))
    gg, kk = np.full(c_n, g), np.full(c_n, k)
    one = rng.integers(0, c_n)
    gg[one], kk[one] = 1e-30, 2.0**-24  # the certificate's constants differ between channels too
    flags = np.full(rows, 7, np.int64)
    spans = np.full((rows, 2), -1, np.int64)
    cpu._normalize_span(x, y, r0, r1, b_len, c_n, mu, sc, bt, kk, gg, flags, spans)
    for r in range(r0, r1):
        c, lo = r % c_n, r * b_len
        row = (x[lo : lo + b_len], ref[lo : lo + b_len])
        want = cpu._normalize_row(*row, mu[c], sc[c], bt[c], kk[c], gg[c])
        assert flags[r] == int(want), r
        for i in range(b_len):  # every flagged element lies in the row's span
            one = (row[0][i : i + 1], row[1][i : i + 1].copy())
            if cpu._normalize_row(*one, mu[c], sc[c], bt[c], kk[c], gg[c]):
                assert spans[r, 0] <= i < spans[r, 1], (r, i, spans[r])
    assert (flags[:r0] == 7).all() and (flags[r1:] == 7).all()
    assert np.array_equal(y.view(np.int32), ref.view(np.int32))  # outside the span: untouched


@pytest.fixture
def streaming(monkeypatch):
    """Streaming stores for every output, however small (normally from 4 MiB on)."""
    monkeypatch.setattr(kb, "_STREAM_BYTES", 0)


@pytest.mark.parametrize("b_len", [16, 17, 196, 300])
def test_streamed_rows_correctly_rounded(streaming, b_len):
    """Streamed rows (chunks straddling rows when B % 16 != 0), with cancelling outputs, NaN,
    inf and overflow in them."""
    rng = np.random.default_rng(b_len)
    x = rng.standard_normal((6, 4, b_len)).astype(F32)  # A >= 2 threads: slabs in memory order
    x[0, 1, 7] = np.nan
    x[1, 2, b_len - 3] = np.inf
    x[2, 3] = 1e4 + rng.random(b_len).astype(F32)
    w = np.array([1.0, 2.0, 3.4e38, 0.5], F32)
    b = np.array([-0.1, 1.0, 1e37, -2.0], F32)
    bn_cases.check(batch_norm, x, w, b, np.zeros(4, F32), np.ones(4, F32), True)
    bn_cases.check(batch_norm, x, w, b, np.zeros(4, F32), np.ones(4, F32), False)


def test_streamed_rows_misaligned_out_and_exact_fallback(streaming):
    """``out`` starting off a cache line, and elements no bound can decide: x alternates 0 and 2
    (mean 1, var 1), eps = 3, so y at x = 2 is (2 - 1) / 2 - 0.5 = 0 exactly."""
    x = np.tile(np.array([0.0, 2.0], F32), (2, 1, 150))
    b = np.array([-0.5], F32)
    raw = np.empty(x.size + 1, F32)
    out = raw[1:].reshape(x.shape)
    y, _, _ = batch_norm(x, None, b, None, None, True, eps=3.0, out=out)
    assert y is out
    ref, _ = bn_cases.check(batch_norm, x, None, b, None, None, True, eps=3.0)
    assert np.array_equal(out, ref)
    assert kb.last_run.refined_channels == 1 and kb.last_run.fallback_elements == 300
