"""Atomic writes: a reader sees either the old file or the complete new one, never a partial file.

Every output of mae3d goes through these helpers, so a killed job leaves no half-written result
under a final name. The temporary file lives in the destination folder so that ``os.replace`` is a
rename on the same file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_dir", "atomic_path", "read_json", "write_json", "write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success rename it onto ``dest``.

    Args:
        dest: final file path.
        overwrite: if False and ``dest`` exists, raise ``FileExistsError`` instead of replacing it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and dest.exists():
        raise FileExistsError(f"{dest}: already exists (pass overwrite to replace it)")
    # keep the real suffix last so that libraries choosing a format by extension still work
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + "".join(dest.suffixes),
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would have
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``dest``; on success rename it to ``dest``.

    ``dest`` must not exist yet (a finished folder is never replaced silently).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        raise FileExistsError(f"{dest}: already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700 folders
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(dest: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Atomically write ``text`` to ``dest``."""
    with atomic_path(dest, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(dest)


def _default(obj: Any) -> Any:
    # numpy scalars/arrays and paths appear in fingerprints and reports
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(dest: str | os.PathLike, obj: Any, *, overwrite: bool = True, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (numpy values and paths are converted)."""
    return write_text(dest, json.dumps(obj, indent=indent, default=_default) + "\n", overwrite=overwrite)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a parse error names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
