"""A one-file operator without a config file: ``operatord run handlers.py``.

The parent and child types come from flags (``--parent example.com/v1/Widget --child
v1/ConfigMap``) or from module-level declarations in the handler file::

    PARENT = "example.com/v1/Widget"
    CHILDREN = ["v1/ConfigMap"]
    NAME = "widget-operator"          # optional

Guarantees:
- The result is the same validated `Config` a config file gives (`Config.from_dict` of a
  YAML-shaped dict), so every default, check and override applies; ``operatord check-config
  handlers.py --show`` prints it as YAML to copy into a file.
- A flag beats the file's declaration. ``NAME`` defaults to ``<kind>-operator``.
- The handler is ``FILE.py:Attribute`` when given; otherwise the one `Handler` subclass the file
  defines, else its ``sync`` function. Anything else is a `ConfigError` that says what to add.
- The file's directory becomes the config's ``pythonPath`` and the file's stem its module.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from operatord.config import Config, ConfigError
from operatord.handler import Handler


def parse_type(text: str, where: str) -> dict[str, str]:
    """``"example.com/v1/Widget"`` -> ``{"apiVersion": "example.com/v1", "kind": "Widget"}``."""
    api_version, _, kind = str(text).strip().rpartition("/")
    if not api_version or not kind:
        raise ConfigError.at(
            where, f"must be APIVERSION/KIND (e.g. example.com/v1/Widget), got {text!r}"
        )
    return {"apiVersion": api_version, "kind": kind}


@dataclass(frozen=True)
class QuickStart:
    """A handler file and the flags that complete it into a config."""

    handler_file: str  # path/to/file.py, optionally ":Attribute"
    parent: str | None = None
    children: Sequence[str] = ()
    name: str | None = None

    def __call__(self) -> Config:
        """The validated config (raises `ConfigError`)."""
        return Config.from_dict(self.config_dict())

    def config_dict(self) -> dict[str, Any]:
        """The YAML-shaped config the file and flags describe."""
        path, _, attr = self.handler_file.partition(".py:")
        path = path if path.endswith(".py") else path + ".py"
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise ConfigError([f"handler file {self.handler_file!r} does not exist"])
        directory, module_name = os.path.dirname(path), os.path.basename(path)[: -len(".py")]
        module = _import(directory, module_name)
        attr = attr or _find_handler(module, self.handler_file)
        parent_text = self.parent or getattr(module, "PARENT", None)
        if not parent_text:
            raise ConfigError(
                [
                    f"{self.handler_file}: no parent type: pass --parent APIVERSION/KIND or "
                    'declare PARENT = "example.com/v1/Widget" in the file'
                ]
            )
        parent = parse_type(parent_text, "--parent" if self.parent else "PARENT")
        if self.children:
            children = [parse_type(c, "--child") for c in self.children]
        else:
            declared = getattr(module, "CHILDREN", ())
            if isinstance(declared, str):
                declared = [declared]
            children = [parse_type(c, "CHILDREN") for c in declared]
        name = self.name or getattr(module, "NAME", None) or f"{parent['kind'].lower()}-operator"
        return {
            "name": name,
            "handler": f"{module_name}:{attr}",
            "pythonPath": [directory],
            "parent": parent,
            "children": children,
        }


def _import(directory: str, module_name: str) -> Any:
    if directory in sys.path:
        sys.path.remove(directory)
    sys.path.insert(0, directory)
    importlib.invalidate_caches()
    where = os.path.join(directory, module_name + ".py")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - user code: report whatever it raised
        raise ConfigError([f"cannot import {where}: {type(exc).__name__}: {exc}"]) from None
    found = os.path.abspath(getattr(module, "__file__", "") or "")
    if found != where:
        raise ConfigError(
            [f"cannot import {where}: a module {module_name!r} from {found} is imported already"]
        )
    return module


def _find_handler(module: Any, where: str) -> str:
    classes = [
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, Handler)
        and obj is not Handler
        and obj.__module__ == module.__name__
    ]
    if len(classes) == 1:
        return classes[0]
    if len(classes) > 1:
        raise ConfigError(
            [
                f"{where}: defines several Handler classes ({', '.join(sorted(classes))}); name one "
                f"as {where}:{sorted(classes)[0]}"
            ]
        )
    if callable(getattr(module, "sync", None)):
        return "sync"
    raise ConfigError(
        [
            f"{where}: no handler: define a Handler subclass or a sync(request) function, or name "
            f"one as {where}:Name"
        ]
    )
