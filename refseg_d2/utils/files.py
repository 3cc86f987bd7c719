"""Reading the JSON files users hand us (errors name the file), and atomic writes."""
import json
import os
import tempfile


def read_json(path, what):
    """
    Parse a JSON file.

    Args:
        what (str): what the file is, e.g. "Results file"; named in errors with the path.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError("{} not found: {}".format(what, path)) from e
    except ValueError as e:
        raise ValueError("{} {} is not valid JSON: {}".format(what, path, e)) from e


def atomic_write(path, write, mode="wb"):
    """
    Write ``path`` through ``write(file)`` into a temporary file beside it, then rename it, so
    that readers never see a half-written file (the temporary file is removed on failure).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
