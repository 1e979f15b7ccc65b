"""LLM normalization in mixed precision: the profiles' exact references against real PyTorch code
written as the libraries write it, and the testing helper's verdicts on four kernels (correct, one
that double-rounds at ties, one that multiplies in the wrong order, one that accumulates in
bfloat16), each told apart by its verdict."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from normspec.oracle import rms_norm, rms_norm_backward, ulp_distance

from normspec.errors import DomainError, DTypeError, InvalidArgumentError, ShapeError
from normspec.testing import NormMismatchError, assert_norm_matches, judge_norm

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 is the bfloat16 extra: pip install 'normspec[bfloat16]'")
BF16 = ml_dtypes.bfloat16
EPS = 1e-6
# what the kernels below declare: float32 statistics summed in order, 1/sqrt or rsqrt within 2 ULP
F32_RMS = {"variance": "two_pass", "accumulator": "float32", "compute": "float32", "inv_std": "rsqrt"}


def _rows(n: int = 16, width: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Activations as LLMs have them: normal rows, one with a 1e4 outlier channel, one of small variance."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width))
    x[1, 7] = 1e4
    x[2] = 1e-3 * rng.standard_normal(width) + 0.5
    x[3] = 2.0  # all equal
    w = 1 + 0.1 * rng.standard_normal(width)
    return x.astype(BF16), w.astype(BF16)


def _tie_rows(width: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows whose exact output lies just above a bfloat16 midpoint, closer than float32 can tell:
    rounding to float32 first lands on the midpoint, and ties-to-even then goes the wrong way."""
    x = np.tile([1.0, -1.0], width // 2)[None, :].astype(BF16)  # mean square 1
    w = np.full(width, 1 + 2.0**-7, BF16)
    target = Fraction(1) + Fraction(1, 2**8) + Fraction(1, 2**30)  # above the midpoint 1 + 2**-8
    # (1 + 2**-7) / sqrt(1 + eps) = target  =>  eps = ((1 + 2**-7) / target)**2 - 1
    eps = float((Fraction(1) + Fraction(1, 2**7)) ** 2 / target**2 - 1)
    return x, w, eps


# ---------------------------------------------------------------- the kernels


def correct_torch(x, w, eps):
    torch = pytest.importorskip("torch", reason="torch is the torch extra: pip install 'normspec[torch]'")
    xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    wt = torch.from_numpy(w.view(np.int16)).view(torch.bfloat16)
    y = torch.nn.functional.rms_norm(xt, (x.shape[-1],), wt, eps)
    return y.view(torch.int16).numpy().view(BF16)


def double_rounding(x, w, eps):
    """The reference of many test suites: float64 math, cast to float32, then to bfloat16."""
    xd = x.astype(np.float64)
    y = xd / np.sqrt((xd * xd).mean(-1, keepdims=True) + eps) * w.astype(np.float64)
    return y.astype(np.float32).astype(BF16)


def torch_order(x, w, eps):
    """Scale by the weight in float32 and round once: right for torch_rms_norm, wrong for LlamaRMSNorm."""
    xf = x.astype(np.float32)
    inv = (1 / np.sqrt((xf * xf).mean(-1, keepdims=True, dtype=np.float32) + np.float32(eps))).astype(np.float32)
    return (xf * inv * w.astype(np.float32)).astype(BF16)


def llama_order(x, w, eps):
    xf = x.astype(np.float32)
    inv = (1 / np.sqrt((xf * xf).mean(-1, keepdims=True, dtype=np.float32) + np.float32(eps))).astype(np.float32)
    return ((xf * inv).astype(BF16).astype(np.float32) * w.astype(np.float32)).astype(BF16)


def bf16_accumulation(x, w, eps):
    """Squares summed in bfloat16, one after another: the sum stalls once it is large."""
    acc = np.zeros(x.shape[:-1], BF16)
    for j in range(x.shape[-1]):
        acc = (acc.astype(np.float32) + (x[:, j].astype(np.float32) ** 2).astype(BF16).astype(np.float32)).astype(BF16)
    ms = acc.astype(np.float32)[:, None] / np.float32(x.shape[-1])
    return llama_order_from(x, w, eps, ms)


def llama_order_from(x, w, eps, ms):
    xf = x.astype(np.float32)
    inv = (1 / np.sqrt(ms + np.float32(eps))).astype(np.float32)
    return ((xf * inv).astype(BF16).astype(np.float32) * w.astype(np.float32)).astype(BF16)


# ---------------------------------------------------------------- verdicts


def test_a_correct_kernel_passes_under_the_profile_it_claims():
    x, w = _rows()
    v = assert_norm_matches(llama_order(x, w, EPS), x, w, convention="hf_llama_rms_norm", eps=EPS, algorithm=F32_RMS)
    assert v.counts["correctly rounded"] > 0.99 * x.size and v.closest is None
    assert v.counts["beyond budget"] == v.counts["non-finite"] == 0


def test_real_torch_rms_norm_is_within_budget_of_torch_rms_norm():
    x, w = _rows()
    v = assert_norm_matches(correct_torch(x, w, EPS), x, w, convention="torch_rms_norm", eps=EPS, algorithm=F32_RMS)
    assert v.counts["correctly rounded"] > 0.99 * x.size


def test_double_rounding_is_named_as_such():
    x, w, eps = _tie_rows()
    v = judge_norm(double_rounding(x, w, eps), x, w, convention="torch_rms_norm", eps=eps)
    assert v.counts["double rounding"] == x.size  # every element: the exact value is just above a tie
    assert v.ok  # a tie decided the other way is reported, not failed
    exact = rms_norm(x, 1, w, eps=eps, convention="torch_rms_norm").y
    assert float(exact[0, 0]) == 1 + 2.0**-7 and float(double_rounding(x, w, eps)[0, 0]) == 1.0
    x2, w2 = _rows(n=4, width=1024)
    assert judge_norm(double_rounding(x2, w2, EPS), x2, w2, convention="torch_rms_norm", eps=EPS).ok


def test_the_wrong_multiplication_order_is_closer_to_another_profile():
    x, w = _rows()
    out = torch_order(x, w, EPS)
    v = judge_norm(out, x, w, convention="hf_llama_rms_norm", eps=EPS, algorithm=F32_RMS)
    assert v.closest == "torch_rms_norm" and v.shares["torch_rms_norm"] > v.shares["hf_llama_rms_norm"]
    with pytest.raises(NormMismatchError, match="closer to torch_rms_norm"):
        assert_norm_matches(out, x, w, convention="hf_llama_rms_norm", eps=EPS, algorithm=F32_RMS)


def test_bfloat16_accumulation_is_beyond_the_float32_budget():
    x, w = _rows(n=4)
    v = judge_norm(bf16_accumulation(x, w, EPS), x, w, convention="hf_llama_rms_norm", eps=EPS, algorithm=F32_RMS)
    assert v.counts["beyond budget"] > x.size // 2
    with pytest.raises(NormMismatchError, match=r"(?s)beyond budget.*worst y\["):
        assert_norm_matches(bf16_accumulation(x, w, EPS), x, w, convention="hf_llama_rms_norm", eps=EPS,
                            algorithm=F32_RMS)  # fmt: skip


# ---------------------------------------------------------------- the profiles against PyTorch code


def _torch():
    return pytest.importorskip("torch", reason="torch is the torch extra: pip install 'normspec[torch]'")


def _t(a):
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)


def _n(t):
    torch = _torch()
    return t.view(torch.int16).numpy().view(BF16)


def test_hf_llama_profile_against_the_llama_code():
    torch = _torch()
    x, w = _rows()
    xt, wt = _t(x).clone().requires_grad_(), _t(w).clone().requires_grad_()
    h = xt.to(torch.float32)  # LlamaRMSNorm.forward, as written in transformers
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)
    y = wt * h.to(torch.bfloat16)
    v = assert_norm_matches(_n(y.detach()), x, w, convention="hf_llama_rms_norm", eps=EPS, algorithm=F32_RMS)
    assert v.counts["correctly rounded"] > 0.99 * x.size
    dy = np.random.default_rng(6).standard_normal(x.shape).astype(BF16)
    y.backward(_t(dy))
    exact = rms_norm_backward(x, dy, 1, w, eps=EPS, convention="hf_llama_rms_norm")
    assert (ulp_distance(_n(xt.grad), exact.dx) == 0).mean() > 0.999
    assert (ulp_distance(_n(wt.grad), exact.dweight) == 0).mean() > 0.99


@pytest.mark.parametrize(
    ("module", "convention"),
    [
        ("llama.modeling_llama:LlamaRMSNorm", "hf_llama_rms_norm"),
        ("mistral.modeling_mistral:MistralRMSNorm", "hf_llama_rms_norm"),
        ("t5.modeling_t5:T5LayerNorm", "hf_llama_rms_norm"),
        ("gemma.modeling_gemma:GemmaRMSNorm", "gemma_rms_norm"),
    ],
)
def test_the_real_transformers_modules(module, convention):
    """The modules themselves, in bfloat16 as a model loads them, against the profiles' exact references."""
    torch = _torch()
    pytest.importorskip("transformers", reason="transformers is in the audit extra: pip install 'normspec[audit]'")
    import importlib

    path, name = module.split(":")
    cls = getattr(importlib.import_module(f"transformers.models.{path}"), name)
    x, w = _rows()
    if convention == "gemma_rms_norm":
        w = (np.asarray(w, np.float32) - 1).astype(BF16)  # zero-centred weights
    layer = cls(x.shape[-1], eps=EPS).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(_t(w))
    xt = _t(x).clone().requires_grad_()
    y = layer(xt)
    v = assert_norm_matches(_n(y.detach()), x, w, convention=convention, eps=EPS, algorithm=F32_RMS)
    assert v.counts["correctly rounded"] > 0.99 * x.size
    if name == "T5LayerNorm":  # the same forward; its backward rounds two gradient paths to bfloat16
        return  # before adding them (it multiplies the bfloat16 input itself): not this profile's backward
    # the exact backward: autograd's gradient, exact between the roundings the module's code makes
    dy = np.random.default_rng(5).standard_normal(x.shape).astype(BF16)
    y.backward(_t(dy))
    exact = rms_norm_backward(x, dy, 1, w, eps=EPS, convention=convention)
    d_dx = ulp_distance(_n(xt.grad), exact.dx)
    d_dw = ulp_distance(_n(layer.weight.grad), exact.dweight)
    assert (d_dx == 0).mean() > 0.999 and d_dx.max() <= 1  # float32 arithmetic in between: rarely 1 ULP
    assert (d_dw == 0).mean() > 0.99 and d_dw.max() <= 1


def test_torch_rms_norm_default_eps_on_16_bit_inputs():
    """torch 2.13's F.rms_norm adds float32's machine epsilon when eps is None, for float16 and
    bfloat16 inputs alike (its documentation says finfo(x.dtype).eps); the profile follows the code."""
    torch = _torch()
    x = (1e-3 * np.random.default_rng(3).standard_normal((4, 64))).astype(np.float16)
    got = torch.nn.functional.rms_norm(torch.from_numpy(x), (64,)).numpy()
    assert (got.view(np.int16) == rms_norm(x, 1).y.view(np.int16)).mean() > 0.99
    xb = x.astype(BF16)
    got_b = _n(torch.nn.functional.rms_norm(_t(xb), (64,)))
    assert (got_b.view(np.int16) == rms_norm(xb, 1).y.view(np.int16)).mean() > 0.99


def test_gemma_profile_against_the_gemma_code():
    torch = _torch()
    x, w = _rows()
    w = (np.asarray(w, np.float32) - 1).astype(BF16)  # Gemma stores weights centred on zero
    xt, wt = _t(x), _t(w)
    h = xt.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)  # GemmaRMSNorm._norm
    out = _n((h * (1.0 + wt.float())).type_as(xt))
    v = assert_norm_matches(out, x, w, convention="gemma_rms_norm", eps=EPS, algorithm=F32_RMS)
    assert v.counts["correctly rounded"] > 0.99 * x.size


def test_fused_add_profile_returns_the_exact_residual():
    torch = _torch()
    x, w = _rows(n=8)
    r, _ = _rows(n=8, seed=1)
    h = _t(x) + _t(r)  # in bfloat16: one correctly rounded addition
    hf = h.float()
    out = _n(_t(w) * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + EPS)).to(torch.bfloat16))
    v = assert_norm_matches(out, x, w, convention="fused_add_rms_norm", eps=EPS, residual=r,
                            output_residual=_n(h), algorithm=F32_RMS)  # fmt: skip
    assert v.residual_differs == 0
    res = rms_norm(x, 1, w, eps=EPS, convention="fused_add_rms_norm", residual=r)
    assert (res.residual.view(np.int16) == _n(h).view(np.int16)).all()


def test_the_float32_sum_variants_normalize_what_vllm_native_and_flashinfer_normalize():
    """vLLM's forward_native (written here as vLLM writes it) normalizes float32(x) + float32(r) and
    stores only the residual in bfloat16: its profile explains it (within the float32 budget), and
    the judge tells it from the rounded-sum profile, which explains far fewer of its elements.
    FlashInfer's fused form is the same sum, normalized and scaled in float32, rounded once."""
    torch = _torch()
    x, w = _rows(n=8)
    r, _ = _rows(n=8, seed=1)
    r = (r.astype(np.float32) * 3).astype(BF16)  # a residual larger than x: the sums round in bfloat16
    hf = _t(x).float() + _t(r).float()
    out = _n((hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + EPS)).to(torch.bfloat16) * _t(w))
    stream = _n(hf.to(torch.bfloat16))
    v = assert_norm_matches(out, x, w, convention="vllm_native_fused_add_rms_norm", eps=EPS, residual=r,
                            output_residual=stream, algorithm=F32_RMS)  # fmt: skip
    assert v.residual_differs == 0 and v.counts["correctly rounded"] > 0.99 * x.size
    rounded = judge_norm(out, x, w, convention="fused_add_rms_norm", eps=EPS, residual=r, algorithm=F32_RMS)
    assert rounded.closest == "vllm_native_fused_add_rms_norm"
    assert rounded.shares["fused_add_rms_norm"] < 0.9 < rounded.shares["vllm_native_fused_add_rms_norm"]
    # FlashInfer: one rounding of the float32 sum's RMSNorm; the same residual stream
    fi = rms_norm(x, 1, w, eps=EPS, convention="flashinfer_fused_add_rms_norm", residual=r)
    h32 = hf.numpy().astype(np.float64)  # the float32 sums, exact in float64
    once = rms_norm(h32, 1, w.astype(np.float64), eps=EPS, convention="torch_rms_norm", y_dtype="bfloat16")
    assert (fi.y.view(np.int16) == once.y.view(np.int16)).all()
    assert (fi.residual.view(np.int16) == stream.view(np.int16)).all()


def _fused_autograd(x, r, w, dy, dres, *, float32_sum):
    """The fused add + LlamaRMSNorm as PyTorch code writes it, differentiated by autograd:
    vLLM's forward_native (float32 sum normalized, the residual stored in bfloat16) or the rounded
    sum normalized (what vLLM's CUDA kernel computes forward).  Returns (dx, dresidual, dweight)."""
    torch = _torch()
    xt, rt, wt = (_t(a).clone().requires_grad_() for a in (x, r, w))
    if float32_sum:
        h = xt.to(torch.float32) + rt.to(torch.float32)
        stream = h.to(torch.bfloat16)
    else:
        stream = xt + rt
        h = stream.to(torch.float32)
    y = wt * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)).to(torch.bfloat16)
    torch.autograd.backward([y, stream], [_t(dy), _t(dres)])
    return _n(xt.grad), _n(rt.grad), _n(wt.grad)


@pytest.mark.parametrize(
    ("convention", "float32_sum"), [("vllm_native_fused_add_rms_norm", True), ("fused_add_rms_norm", False)]
)
def test_fused_add_backward_against_autograd_of_the_torch_code(convention, float32_sum):
    """The exact gradient of a fused add (dx, which is also the residual's gradient, and dweight)
    against autograd through the same code.  Autograd rounds the layer's gradient ``g`` (to float32
    in forward_native, to bfloat16 in the other) before adding the new residual's gradient, then
    rounds the sum to bfloat16; the exact reference rounds the sum once.  So autograd is within one
    bfloat16 spacing of the exact value plus the error of its ``g`` (its float32 arithmetic: a few
    float32 units, 2**-20 |g| with room; a bfloat16 rounding: half a spacing of g), which is large
    only where g and the residual's gradient cancel."""
    x, w = _rows(n=8)
    r, _ = _rows(n=8, seed=1)
    rng = np.random.default_rng(9)
    dy, dres = (rng.standard_normal(x.shape).astype(BF16) for _ in range(2))
    dx_t, dr_t, dw_t = _fused_autograd(x, r, w, dy, dres, float32_sum=float32_sum)
    assert (dx_t.view(np.int16) == dr_t.view(np.int16)).all()  # the sum passes one gradient to both
    exact = rms_norm_backward(x, dy, 1, w, eps=EPS, convention=convention, residual=r, dresidual=dres)
    alone = rms_norm_backward(x, dy, 1, w, eps=EPS, convention=convention, residual=r)  # g, rounded once

    def spacing(v):  # of bfloat16 at v (normal range)
        return np.ldexp(1.0, np.frexp(np.asarray(v, np.float64))[1] - 8)

    g = alone.dx.astype(np.float64)
    err_g = 2.0**-20 * np.abs(g) if float32_sum else spacing(g)
    gap = np.abs(dx_t.astype(np.float64) - exact.dx.astype(np.float64))
    assert (gap <= spacing(exact.dx) + spacing(g) + err_g).all()
    assert (ulp_distance(dx_t, exact.dx) == 0).mean() > (0.99 if float32_sum else 0.7)
    d_dw = ulp_distance(dw_t, exact.dweight)
    assert d_dw.max() <= 1 and (d_dw == 0).mean() > 0.99
    # the new residual's gradient counts: without it dx is the plain layer's, far from autograd's
    assert (ulp_distance(dx_t, alone.dx) > 1).mean() > 0.5
    # and the layer's gradient is taken at the normalized sum, not at x
    at_x = rms_norm_backward(x, dy, 1, w, eps=EPS, convention="hf_llama_rms_norm")
    assert (ulp_distance(exact.dweight, at_x.dweight) > 1).mean() > 0.5


@pytest.mark.parametrize("dtype", [BF16, np.float16])
def test_the_residual_sum_is_correctly_rounded_on_any_pair_of_values(dtype):
    """x + residual rounded once, to the inputs' dtype and to float32 (the float32-sum profiles),
    against exact rationals: random bit patterns (subnormals, huge, NaN, inf), near-cancelling
    pairs, equal pairs and signed zeros (which keep IEEE's signs)."""
    from normspec.oracle.formats import FLOAT32, format_of
    from normspec.oracle.layers import _round_sum
    from normspec.oracle.sqrtform import round_fraction

    rng = np.random.default_rng(4)
    n = 6000
    a, b = (rng.integers(0, 2**16, n).astype(np.uint16).view(dtype) for _ in range(2))
    with np.errstate(invalid="ignore", over="ignore"):
        near = -(a[:2000].astype(np.float32)) * (1 + rng.integers(-3, 4, 2000) * 2.0**-8)
        b[:2000] = near.astype(dtype)
    b[2000:3000] = a[2000:3000]
    a[3000:3003], b[3000:3003] = np.array([-0.0, 0.0, -0.0]), np.array([-0.0, -0.0, 0.0])  # IEEE: -0, +0, +0
    with np.errstate(invalid="ignore"):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for to in (None, FLOAT32):
        fmt = to or format_of(a.dtype)
        got = _round_sum(a, b, to).astype(np.float64)
        for x, y, g in zip(a64, b64, got, strict=True):
            if np.isfinite(x) and np.isfinite(y):
                want = round_fraction(Fraction(x) + Fraction(y), fmt)
                assert g == want and (want != 0 or np.signbit(g) == np.signbit(x + y)), (x, y, g, want)
            else:
                with np.errstate(invalid="ignore"):
                    assert np.isnan(g) if np.isnan(x + y) else g == x + y


def test_fused_add_backward_refuses_what_does_not_fit():
    x, w = _rows(n=4, width=8)
    with pytest.raises(InvalidArgumentError, match="adds no residual"):
        rms_norm_backward(x, x, 1, w, convention="hf_llama_rms_norm", dresidual=x)
    with pytest.raises(InvalidArgumentError, match="residual=None"):
        rms_norm_backward(x, x, 1, w, convention="fused_add_rms_norm", dresidual=x)
    with pytest.raises(ShapeError, match=r"dresidual\.dtype='float32'"):
        rms_norm_backward(x, x, 1, w, convention="fused_add_rms_norm", residual=x, dresidual=x.astype(np.float32))
    with pytest.raises(ShapeError, match="dresidual of shape"):
        rms_norm_backward(x, x, 1, w, convention="fused_add_rms_norm", residual=x, dresidual=x[:2])
    nan = x.copy()
    nan[0, 0] = np.inf
    with pytest.raises(DomainError, match="finite dresidual"):
        rms_norm_backward(x, x, 1, w, convention="fused_add_rms_norm", residual=x, dresidual=nan)
    # a NaN in the sum makes its row's gradient NaN, and only that row's
    g = rms_norm_backward(nan, x, 1, w, eps=EPS, convention="fused_add_rms_norm", residual=x, dresidual=x)
    assert np.isnan(g.dx.astype(np.float32)[0]).all() and np.isfinite(g.dx.astype(np.float32)[1:]).all()


# ---------------------------------------------------------------- bad input and IEEE special values


def test_mismatched_dtypes_and_residuals_are_refused_by_name():
    x, w = _rows(n=4, width=8)
    with pytest.raises(DTypeError, match=r"hf_llama_rms_norm.*weight.dtype='float32'"):
        rms_norm(x, 1, w.astype(np.float32), convention="hf_llama_rms_norm")
    with pytest.raises(InvalidArgumentError, match="residual=None"):
        rms_norm(x, 1, w, convention="fused_add_rms_norm")
    with pytest.raises(InvalidArgumentError, match="adds none"):
        rms_norm(x, 1, w, convention="hf_llama_rms_norm", residual=x)
    with pytest.raises(ShapeError, match="residual"):
        rms_norm(x, 1, w, convention="fused_add_rms_norm", residual=x.astype(np.float32))


def test_zeros_keep_the_sign_the_llama_code_gives_them():
    """Under a cast point a zero x-hat is a rounded value and the weight's product is an IEEE
    product: +0 times a negative weight is -0, as PyTorch computes LlamaRMSNorm.  (An input of -0
    has the exact x-hat 0, which the oracle writes +0 where IEEE arithmetic carries the sign; ULP
    distances count the two zeros equal.)"""
    torch = _torch()
    x, w = _rows(n=4, width=64)
    x[:, ::3] = 0.0
    w[::2] = -w[::2]
    h = _t(x).float()
    want = _n(_t(w) * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)).to(torch.bfloat16))
    got = rms_norm(x, 1, w, eps=EPS, convention="hf_llama_rms_norm").y
    zero = want.astype(np.float32) == 0
    assert zero.sum() >= x.shape[0] * 20 and np.signbit(want.astype(np.float32))[zero].any()
    assert (got.view(np.uint16)[zero] == want.view(np.uint16)[zero]).all()


def test_nan_and_inf_follow_ieee_through_the_cast_points():
    """A NaN row is NaN; a row with an infinity has mean square +inf, 1/sqrt(inf) = 0: its finite
    elements give 0 and its infinities inf * 0 = NaN, as PyTorch computes it."""
    torch = _torch()
    x, w = _rows(n=4, width=8)
    x[0, 2] = np.nan
    x[1, 3] = np.inf
    x[1, 5] = -np.inf
    for name in ("hf_llama_rms_norm", "gemma_rms_norm", "torch_rms_norm"):
        y = rms_norm(x, 1, w, eps=EPS, convention=name).y.astype(np.float32)
        assert np.isnan(y[0]).all()
        assert np.isnan(y[1, [3, 5]]).all() and (y[1, [0, 1, 2, 4, 6, 7]] == 0).all()
        assert np.isfinite(y[2:]).all()
    ref = torch.nn.functional.rms_norm(_t(x).float(), (8,), _t(w).float(), EPS).numpy()
    got = rms_norm(x, 1, w, eps=EPS, convention="torch_rms_norm").y.astype(np.float32)
    assert (np.isnan(ref) == np.isnan(got)).all() and (ref[1][~np.isnan(ref[1])] == 0).all()
