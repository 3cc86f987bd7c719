"""Reading the JSON files users hand us (errors name the file), and atomic writes."""
import contextlib
import json
import os
import tempfile

_UMASK = os.umask(0)  # the file-creation mask, read once (reading it means setting it)
os.umask(_UMASK)


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


def atomic_write(path, write, mode="wb", what="a file"):
    """
    Write ``path`` through ``write(file)`` into a temporary file beside it, flushed to disk, then
    renamed over ``path``: a reader sees the complete old file or the complete new one, never a
    part. The temporary name is unique, so concurrent writers of one path do not disturb each
    other (the last rename wins). On any failure the temporary file is removed and ``path`` is
    left as it was; an operating-system error (a full disk, no permission), also one that the
    writer wrapped in its own exception, is raised as an OSError reading
    "Cannot save <what> to <path>: <reason>".

    Args:
        what (str): what is written, e.g. "the memory"; named in errors with the path.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".part")
    except OSError as e:
        raise _save_error(e, what, path) from e
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would create it (mkstemp makes it 0600)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        cause = _os_error_in(e)
        if cause is not None:
            raise _save_error(cause, what, path) from e
        raise


def _os_error_in(error):
    """The first OSError in ``error``'s chain of causes and contexts, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _save_error(error, what, path):
    reason = error.strerror or str(error)
    return OSError(error.errno, "Cannot save {} to {}: {}".format(what, path, reason))
