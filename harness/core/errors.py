"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, data, model path): say what and where, exit 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name): what a UserError
    quotes from a library's multi-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
