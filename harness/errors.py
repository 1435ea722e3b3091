"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a data root): one line saying what, where, and what is allowed."""
