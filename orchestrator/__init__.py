"""labeljob: crowdsourced bounding-box labeling jobs, from a bucket of images to training-ready outputs."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, list[str]]) -> Callable[[str], Any]:
    """A package's `__getattr__` re-exporting `exports` (submodule -> names), each submodule imported on
    first use: `labeljob --help` or a Lambda cold start must not pay for modules it never calls."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in exports:  # a submodule, as `import package` then `package.submodule` allows
            return importlib.import_module(f"{package}.{name}")
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__
