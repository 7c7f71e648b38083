"""The exception a value check raises: pure, so that readers of image lists need no pydantic."""


class Invalid(Exception):
    """A problem with one value, raised by a check and recorded where the value is."""
