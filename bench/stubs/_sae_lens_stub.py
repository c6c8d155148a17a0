"Shared helper for the stub packages in bench/stubs (see README.md): placeholders that raise when used."


def placeholder(module, name):
    "A class standing in for `module.name`: importable, usable in annotations and as a base class, raises when called."
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"{module}.{name} is a stub (bench/stubs): the real {module.split('.')[0]} "
                                  "is not installed on this machine")
    return type(name, (), {"__init__": __init__, "__module__": module})


def fill(namespace, module, names):
    "Define each placeholder in `names` in a stub module's namespace."
    for n in names: namespace[n] = placeholder(module, n)
