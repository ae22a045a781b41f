"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from mae3d.config import load_config

C = TypeVar("C")

__all__ = ["add_config_args", "config_from_args"]


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and repeatable ``--set key.sub=value`` to ``parser``."""
    parser.add_argument("--config", metavar="FILE", help="YAML/JSON config file (a run's config.json works)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override one config field, e.g. --set optim.lr=1e-3 (repeatable)")


def config_from_args(cls: type[C], args: argparse.Namespace, **direct: Any) -> C:
    """Resolve a config: defaults <- --config file <- values given as direct options <- --set.

    ``direct`` maps dotted keys to values from dedicated options (e.g. ``workers=4``); ``None``
    values are ignored so that an option left out keeps the config's value.
    """
    overrides = [f"{k}={_fmt(v)}" for k, v in direct.items() if v is not None]
    return load_config(cls, args.config, [*overrides, *args.overrides])


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"  # YAML single-quoted: kept as a string
    return str(v)
