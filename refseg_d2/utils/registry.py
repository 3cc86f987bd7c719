"""Looking up a config-named component in a Detectron2 registry, with an error naming the key."""


def registered(registry, key, name):
    """
    The object registered as ``name`` in ``registry``.

    Args:
        key (str): the config key that names it (for the error message).
    Raises:
        KeyError: naming the key, the value and the registered names.
    """
    if name not in registry:
        raise KeyError("{} = {!r} is not registered in {}; known: {}".format(
            key, name, registry._name, sorted(k for k, _ in registry)))
    return registry.get(name)


def register_as(registry, name):
    """
    Decorator registering an object in a Detectron2 (fvcore) registry under ``name`` instead of
    its ``__name__`` (the config values are short lower-case names, e.g. "boxes_file").
    """

    def deco(obj):
        registry._do_register(name, obj)
        return obj

    return deco
