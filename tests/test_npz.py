"""Hostile .npz input: every file normspec reads goes through normspec._npz.load_npz."""

import io
import os
import re
import zipfile

import numpy as np
import pytest

from normspec._npz import load_npz
from normspec.cli import main
from normspec.errors import InputFileError


def _member(z, name, raw):
    z.writestr(name, raw)


def _header(shape, descr="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_hostile_npz_files_are_refused_by_name(tmp_path, monkeypatch, capsys):
    no_header = tmp_path / "no_header.npz"
    with zipfile.ZipFile(no_header, "w") as z:
        _member(z, "x.npy", b"just bytes, no npy header")
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w") as z:
        _member(z, "x.npy", _header((2**40,)))  # declares 8 TB
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}], dtype=object))
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.save(buf, np.zeros(2**20))  # 8 MiB of zeros: a few kB on disk
        _member(z, "x.npy", buf.getvalue())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [
        (no_header, "member 'x.npy' has no valid .npy header"),
        (huge, "declares shape (1099511627776,)"),
        (objects, "would need unpickling"),
        (fifo, "not a regular file"),
        (tmp_path, "not a regular file"),
        (tmp_path / "missing.npz", "no such file"),
    ]
    for path, message in cases:
        with pytest.raises(InputFileError, match=re.escape(message)):
            load_npz(path)
        assert main(["eval", str(path), "--training", "-o", str(tmp_path / "out.npz")]) == 2
        assert message.split("'")[0].split("(")[0] in capsys.readouterr().err
    assert set(load_npz(bomb)) == {"x"}  # under the default limit
    monkeypatch.setenv("NORMSPEC_MAX_NPZ_BYTES", str(2**20))
    with pytest.raises(InputFileError, match=r"would decompress to .* past the limit of 1048576"):
        load_npz(bomb)
