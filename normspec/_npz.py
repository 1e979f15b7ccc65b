"""Reading ``.npz`` files safely: arrays only, never unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from normspec.errors import InputFileError

__all__ = ["load_npz"]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file, refusing anything that would need unpickling."""
    if path.exists() and not zipfile.is_zipfile(path):
        raise InputFileError(f"{str(path)!r} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputFileError(f"no such file: {str(path)!r}") from None
    except ValueError as exc:  # object arrays need pickle
        raise InputFileError(f"{str(path)!r} holds arrays that need unpickling, refused: {exc}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputFileError(f"{str(path)!r} is not a readable .npz file: {exc}") from None
