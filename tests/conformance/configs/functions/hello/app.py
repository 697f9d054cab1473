"""A handler for config tests: the loader checks that the handler's module exists."""


def handler(event: object, context: object) -> object:
    return event
