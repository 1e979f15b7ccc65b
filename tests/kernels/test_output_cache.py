"""The CPU kernels' output cache: a buffer is reused only once nothing outside the cache refers to it."""

import gc

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is the kernels extra: pip install 'normspec[kernels]'")

from normspec.kernels import _buffers, batch_norm, output_cache_info, set_output_cache

from normspec.errors import DomainError

F32 = np.float32
SHAPE = (4, 8, 96, 96)  # 1.2 MB: above the cache's 1 MiB floor


@pytest.fixture
def cache():
    old = set_output_cache(1 << 30)
    _buffers._cache.clear()
    yield
    set_output_cache(old)


def _x(seed):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(F32)


def _base(a):
    return a.base if a.base is not None else a


def test_a_dropped_output_is_reused_and_fully_rewritten(cache):
    y1, _, _ = batch_norm(_x(0), training=True)
    first = _base(y1).ctypes.data
    ref = y1.copy()
    del y1
    gc.collect()
    before = output_cache_info().hits
    y2, _, _ = batch_norm(_x(1), training=True)
    assert output_cache_info().hits == before + 1 and _base(y2).ctypes.data == first
    assert y2.ctypes.data % 64 == 0
    fresh, _, _ = batch_norm(_x(1), training=True, out=np.empty(SHAPE, F32))
    assert np.array_equal(y2, fresh) and not np.array_equal(y2, ref)


@pytest.mark.parametrize("keep", ["array", "view", "memoryview"])
def test_an_output_still_referenced_is_never_reused(cache, keep):
    y1, _, _ = batch_norm(_x(0), training=True)
    held = y1 if keep == "array" else y1[1:, ::2] if keep == "view" else memoryview(y1)
    snapshot = np.array(held, copy=True)
    del y1
    gc.collect()
    y2, _, _ = batch_norm(_x(1), training=True)
    assert np.array_equal(np.asarray(held), snapshot)
    assert not np.shares_memory(np.asarray(held), y2)


def test_the_cache_can_be_turned_off(cache):
    set_output_cache(0)
    assert output_cache_info().buffers == 0
    y, _, _ = batch_norm(_x(0), training=True)
    del y
    assert output_cache_info().held_bytes == 0
    for bad in (-1, 1.5, "1"):
        with pytest.raises(DomainError, match="limit_bytes"):
            set_output_cache(bad)
    set_output_cache(np.int64(1 << 20))
    assert output_cache_info().limit_bytes == 1 << 20
