"""Byte-stable .npz files and a manifest that guards them.

``numpy.savez`` stamps the current time into the zip entries, so the same
arrays saved twice differ.  :func:`write_npz` writes the same zip layout
(one ``.npy`` member per array, readable by ``numpy.load``) with a fixed
timestamp and sorted members, so regenerating vectors gives identical bytes.
:func:`normspec._npz.load_npz` reads them back, never unpickling.  The manifest lists every file with its
SHA-256; :func:`load_manifest` refuses entries that point outside the
vector directory and :func:`verified_path` refuses files whose hash differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from normspec.errors import InputFileError

__all__ = ["write_npz", "sha256", "write_manifest", "load_manifest", "verified_path", "MANIFEST"]

MANIFEST = "manifest.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    path.write_bytes(buf.getvalue())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    (directory / MANIFEST).write_text(text)


def load_manifest(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise InputFileError(f"{str(directory)!r} is not a folder: a vector directory holds {MANIFEST} and the cases")
    if not path.is_file():
        raise InputFileError(f"no {MANIFEST} in {str(directory)!r}: not a normspec vector directory")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{str(path)!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputFileError(f"{str(path)!r} is nested too deeply to be a manifest") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
        raise InputFileError(f"{str(path)!r} has no list of cases")
    root = directory.resolve()
    for i, case in enumerate(manifest["cases"]):
        _check_entry(path, i, case)
        rel = str(case.get("file", ""))
        target = (root / rel).resolve()
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or root not in target.parents:
            raise InputFileError(f"manifest entry points outside {str(directory)!r}: file={rel!r}")
    return manifest


# What each manifest entry holds: a strict schema, so that "training": "false" or a string entry
# is refused by name instead of being read as something else.
_ENTRY: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "convention": (str,),
    "kind": (str,),
    "dtype": (str,),
    "file": (str,),
    "sha256": (str,),
    "training": (bool,),
    "seed": (int,),
    "axis": (int,),
    "steps": (int,),
    "momentum": (int, float),
    "eps": (int, float),
}


def _check_entry(path: Path, index: int, entry: Any) -> None:
    where = f"{str(path)!r}, case {index}"
    if not isinstance(entry, dict):
        raise InputFileError(f"{where} is a {type(entry).__name__}, not an object")
    for key, types in _ENTRY.items():
        if key not in entry:
            raise InputFileError(f"{where} ({entry.get('name', '?')!r}) has no {key!r}")
        value = entry[key]
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise InputFileError(f"{where} ({entry.get('name', '?')!r}): {key} = {value!r} is not a {names}")
    if not isinstance(entry.get("arrays", {}), dict):
        raise InputFileError(f"{where} ({entry['name']!r}): arrays is not an object")


def verified_path(directory: Path, entry: dict[str, Any]) -> Path:
    """The entry's file, after checking it exists and its SHA-256 matches the manifest."""
    path = directory / entry["file"]
    if not path.is_file():
        raise InputFileError(f"missing vector file {str(path)!r} listed in the manifest")
    digest = sha256(path)
    if digest != entry.get("sha256"):
        raise InputFileError(
            f"{str(path)!r} does not match the manifest (sha256 {digest[:16]}..., expected "
            f"{str(entry.get('sha256'))[:16]}...): the file was changed or truncated"
        )
    return path
