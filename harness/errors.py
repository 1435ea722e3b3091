"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a data root): one line saying what, where, and what is allowed."""


def printable(text: str) -> str:
    """`text` for a terminal: control characters (from file names, keys or values a user gave) shown as
    escapes such as \\x1b, so that they cannot move the cursor or recolour the screen; line breaks kept."""
    return "\n".join("".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in line)
                     for line in str(text).split("\n"))


def one_line(e: BaseException) -> str:
    """An exception's message squeezed onto one line (errors quote library messages)."""
    return " ".join(str(e).split())[:200]
