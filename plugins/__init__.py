"""Built-in plugins, installed as gateway.plugins, and the plugin API they are written against.

The API (Plugin, Request, Response, ...) is defined in ``gateway.plugins._api`` and re-exported
here, so plugin authors write ``from gateway.plugins import Plugin``. (A ``gateway/plugins.py``
module would shadow this package, which is why the API lives inside it.)
"""

from ._api import (
    ENTRY_POINT_GROUP,
    PHASES,
    Consumer,
    Headers,
    Phase,
    PhaseError,
    Plugin,
    PluginChain,
    PluginConfigError,
    PluginRegistry,
    Request,
    Response,
    ResponseHead,
    builtin_plugin_classes,
    default_registry,
    entry_point_plugin_classes,
    validate_plugin_class,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PHASES",
    "Consumer",
    "Headers",
    "Phase",
    "PhaseError",
    "Plugin",
    "PluginChain",
    "PluginConfigError",
    "PluginRegistry",
    "Request",
    "Response",
    "ResponseHead",
    "builtin_plugin_classes",
    "default_registry",
    "entry_point_plugin_classes",
    "validate_plugin_class",
]
