from __future__ import annotations

import pytest

from mae3d.utils.registry import Registry


def test_register_and_lookup():
    reg: Registry[type] = Registry("method")

    @reg.register("mae")
    class Mae:
        pass

    assert reg.get("mae") is Mae and "mae" in reg and reg.names() == ["mae"]
    with pytest.raises(KeyError, match="unknown method 'sd3'; valid: mae"):
        reg.get("sd3")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("mae", Mae)
