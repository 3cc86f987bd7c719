"""Reading the JSON files users hand us, with errors that name the file."""
import json


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
