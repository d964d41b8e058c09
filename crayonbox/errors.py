"""The one exception type users see: its message says what is wrong and what to do."""


class CrayonboxError(Exception):
    """A problem the user can act on. The CLI prints it on one line, without a traceback."""
