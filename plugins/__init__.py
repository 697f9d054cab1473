"""Built-in plugins, installed as gateway.plugins."""
