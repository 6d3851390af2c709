"""The one error type: ContainerError, "what failed: why", with its errno.

Owns: ContainerError and one_line (a message on one line, whatever it holds).
Every failure of minicontainer's is one of these; only the front prints it.
May import: constants.
"""
import os

from .constants import EXIT_OWN_FAILURE

# ---------------------------------------------------------------------------
# Errors
# One exception type. It prints as "what failed: why"; only the CLI prints it.
# ---------------------------------------------------------------------------

class ContainerError(Exception):
    """A failure to report as `minicontainer: what: why` with exit `code`.

    The library raises it as minicontainer.ContainerError: str() is the
    command line's one line (without "minicontainer: "), .code its exit
    status (125; 126 or 127 for a command that cannot run or is not found).
    """

    __module__ = "minicontainer"  # its public name

    def __init__(self, what, why=None, errno=None, code=EXIT_OWN_FAILURE):
        super().__init__(what)
        self.what, self.errno, self.code = what, errno, code
        self.why = why if why is not None else (os.strerror(errno) if errno else None)

    def __str__(self):
        return f"{self.what}: {self.why}" if self.why else self.what

    def within(self, context):
        """The same error, with where it happened in front: "context: what: why"."""
        self.what = f"{context}: {self.what}"
        return self

    @classmethod
    def from_os(cls, what, exc, code=EXIT_OWN_FAILURE):
        """Wrap an OSError, keeping its errno and strerror."""
        return cls(what, exc.strerror or str(exc), exc.errno, code)


def one_line(text, limit=1000):
    """A message as one printable line of sensible length: control characters
    (a file name or an ELF interpreter from a container can hold any) shown
    escaped, each very long word (a 4,000-character path) cut in its middle."""
    words = []
    for word in text.split(" "):
        word = "".join(c if c.isprintable() else repr(c)[1:-1] for c in word)
        words.append(word if len(word) <= 120 else f"{word[:60]}...{word[-40:]}")
    line = " ".join(words)
    return line if len(line) <= limit else line[:limit - 3] + "..."
