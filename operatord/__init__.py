"""operatord: a multi-process, sharded daemon for Kubernetes operators written in Python."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from operatord.conditions import set_condition
from operatord.config import Config, ConfigError, load_config
from operatord.handler import (
    Children,
    Event,
    FinalizeResponse,
    Handler,
    Related,
    SyncRequest,
    SyncResponse,
)

try:
    __version__ = _version("operatord")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "Children",
    "Config",
    "ConfigError",
    "Event",
    "FinalizeResponse",
    "Handler",
    "Related",
    "SyncRequest",
    "SyncResponse",
    "__version__",
    "load_config",
    "set_condition",
]
