"""Provenance written next to every output: command line, git commit, package versions, date."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mae3d.config.core import to_dict
from mae3d.io.atomic import write_json

__all__ = ["provenance", "write_run_config"]

_PACKAGES = ("mae3d", "torch", "nnunetv2", "dynamic_network_architectures", "batchgeneratorsv2",
             "numpy", "blosc2", "SimpleITK", "nibabel")


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """What produced an output: enough to rerun it or to explain a difference."""
    commit = _git("rev-parse", "HEAD")
    return {
        "command": list(sys.argv if command is None else command),
        "cwd": os.getcwd(),
        "git_commit": commit,
        "git_dirty": bool(_git("status", "--porcelain")) if commit else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in _PACKAGES},
    }


def write_run_config(out_dir: str | Path, cfg: Any, *, name: str = "config.json",
                     command: list[str] | None = None) -> Path:
    """Write the resolved ``cfg`` plus provenance as ``out_dir/name`` (atomically)."""
    return write_json(Path(out_dir) / name, {"config": to_dict(cfg), "provenance": provenance(command)})
