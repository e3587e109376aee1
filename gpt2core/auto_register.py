"""`import gpt2core` makes transformers' Auto classes open the project's own folders (model_type "gpt2core").

Registering means importing `gpt2core.model`, which imports torch and transformers (about 4 s here); doing that on
every `import gpt2core` would make `gpt2suite --help` and every one-line error slow. So registration happens when
it can first matter: at once if transformers' Auto modules are already loaded, otherwise right after Python
finishes loading them (a post-import hook on `sys.meta_path`, as `wrapt.when_imported` does). `gpt2core.config` and
`gpt2core.model` also register themselves when they are imported, so the hook never has to import a module that is
halfway through its own import.

Folders written by `gpt2core.checkpoint.save_hf_folder` are vanilla GPT-2 (model_type "gpt2") and need none of this.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from types import ModuleType
from typing import Any

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODEL_AUTO = "transformers.models.auto.modeling_auto"
# transformers' Auto module -> our module whose import registers the class that Auto module maps
_REGISTERS = {_CONFIG_AUTO: "gpt2core.config", _MODEL_AUTO: "gpt2core.model"}


def _register_for(auto_module: str) -> None:
    ours = _REGISTERS[auto_module]
    if ours not in sys.modules:  # present means imported or being imported: it registers itself at its end
        importlib.import_module(ours)


class _AfterAutoImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of transformers' Auto modules so that registration runs once
    the module has executed completely."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _REGISTERS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisteringLoader(spec.loader, name)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str) -> None:
        self._loader, self._name = loader, name

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _register_for(self._name)


def install() -> None:
    """Register now for the Auto modules already loaded, and on load for the others (idempotent)."""
    pending = [name for name in _REGISTERS if name not in sys.modules]
    for name in _REGISTERS:
        if name in sys.modules:
            _register_for(name)
    if pending and not any(isinstance(f, _AfterAutoImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterAutoImport())
