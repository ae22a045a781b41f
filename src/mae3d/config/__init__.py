"""Typed run configuration: dataclasses, config files, ``--set a.b=value`` overrides, provenance.

Every stage defines its own dataclass (next to the stage); this package only knows how to build,
override, validate and save such dataclasses. Values are parsed with ``yaml.safe_load`` (never
executed) and then checked against the field's type annotation.
"""

from mae3d.config.core import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    to_dict,
)
from mae3d.config.provenance import provenance, write_run_config

__all__ = [
    "ConfigError",
    "apply_overrides",
    "from_dict",
    "load_config",
    "provenance",
    "to_dict",
    "write_run_config",
]
