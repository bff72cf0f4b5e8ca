"""Deprecated module paths from before analysis/ was grouped (vaelab 0.1): ``vaelab.analysis.common`` and the other
names in :data:`MOVED` still import, with a DeprecationWarning naming the new home. Delete this module (and its one
line in ``vaelab/analysis/__init__.py``) once no user code imports the old paths."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

PREFIX = "vaelab.analysis."
MOVED = {"common": "framework.common", "registry": "framework.registry", "runner": "framework.runner",
         "subject": "framework.subject", "codes": "stats.codes", "geodesic": "stats.geodesic",
         "pareto": "stats.pareto", "synthetic": "stats.synthetic", "two_sample": "stats.two_sample",
         "two_stage": "samplers.two_stage"}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path as the module at its new one (the same module object), warning once per path."""

    def find_spec(self, name, path, target=None):
        if name.startswith(PREFIX) and name[len(PREFIX):] in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        new = PREFIX + MOVED[spec.name[len(PREFIX):]]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass  # the module at the new path is already executed


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
