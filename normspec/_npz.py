"""Reading ``.npz`` files safely: arrays only, never unpickled, bounded in size.

Only regular files are read (not a FIFO or a device such as /dev/zero).  Each member must be an
``.npy`` array whose header declares a plain dtype (no objects, so nothing is ever unpickled);
the sizes the archive declares are checked before anything is decompressed, against
:data:`MAX_BYTES` (``NORMSPEC_MAX_NPZ_BYTES`` in the environment overrides it), so a
decompression bomb or a header declaring terabytes is refused by name instead of exhausting memory.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from normspec.errors import InputFileError

__all__ = ["MAX_BYTES", "load_npz", "output_path", "output_folder"]

MAX_BYTES = 2 * 2**30  # 2 GiB of arrays in one file, decompressed


def _limit() -> int:
    text = os.environ.get("NORMSPEC_MAX_NPZ_BYTES")
    if text is None:
        return MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        raise InputFileError(f"NORMSPEC_MAX_NPZ_BYTES must be a whole number of bytes, not {text!r}") from None
    return value


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file, refusing anything that would need unpickling, anything that is not
    a regular file, and archives whose arrays would decompress past the size limit."""
    name = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(f"no such file: {name!r}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {name!r}: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(f"{name!r} is not a regular file (a directory, a pipe or a device): refused")
    if not zipfile.is_zipfile(path):
        raise InputFileError(f"{name!r} is not a readable .npz file (not a zip archive)")
    limit = _limit()
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if declared > limit:
                raise InputFileError(
                    f"{name!r} would decompress to {declared} bytes, past the limit of {limit} "
                    "(set NORMSPEC_MAX_NPZ_BYTES to allow more)"
                )
            for m in members:
                _check_header(archive, m, name, limit)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except InputFileError:
        raise
    except ValueError as exc:  # object arrays need pickle
        raise InputFileError(f"{name!r} holds arrays that need unpickling, refused: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputFileError(f"{name!r} is not a readable .npz file: {exc}") from None


def _check_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo, name: str, limit: int) -> None:
    """The member is an .npy array of a plain dtype, and no larger than the limit."""
    where = f"{name!r}, member {member.filename!r}"
    if not member.filename.endswith(".npy"):
        raise InputFileError(f"{where} is not an .npy array")
    with archive.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, EOFError) as exc:
            raise InputFileError(f"{where} has no valid .npy header: {exc}") from None
    if dtype.hasobject:
        raise InputFileError(f"{where} holds Python objects, which would need unpickling: refused")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > limit:
        raise InputFileError(
            f"{where} declares shape {shape} ({size} bytes), past the limit of {limit} "
            "(set NORMSPEC_MAX_NPZ_BYTES to allow more)"
        )


def output_path(path: Path, suffix: str = ".npz") -> Path:
    """Where an output file will be written: ``suffix`` added when missing (as numpy does), its
    folder existing, and not a directory; refused by name before any work is done."""
    path = Path(path)
    if path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    if path.is_dir():
        raise InputFileError(f"the output {str(path)!r} is a directory")
    if not path.parent.is_dir():
        raise InputFileError(f"the output folder {str(path.parent)!r} does not exist")
    return path


def output_folder(path: Path) -> Path:
    """A folder to write into: created when missing; refused when a file is in the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputFileError(f"{str(path)!r} is a file, not a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"cannot create the folder {str(path)!r}: {exc}") from None
    return path
