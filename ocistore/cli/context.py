"""What every verb receives: the opened store, the output streams and the output mode."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from ocistore import errors

if TYPE_CHECKING:
    import re

    from ocistore.cli.progress import ProgressPrinter
    from ocistore.store import Store

__all__ = ["Context", "UsageError", "cli_wording", "error_line"]

# API messages name the options that would help as Python keywords; the command line says
# which flag does the same. Only whole keywords are rewritten (``all_platforms=True`` is not
# ``platform=``). Compiled on the first error message, not at every start.
_API_TO_CLI = (
    (r"\ball_platforms=True\b", "--all-platforms"),
    (r"\bstrict=False\b", "--non-strict"),
    (r"\bplatform=(?=\w)", "--platform "),
    (r"\bplatform=", "--platform"),
    (r"\bcheck\(repair=True\)", "'ocistore check --repair'"),
    (r"\bstore\.convert\('([^']*)', to='estargz'\)", r"'ocistore images convert --estargz \1 DST'"),
    (r"\bwithout lazy=True\b", "without --lazy"),
)
_compiled: list[tuple[re.Pattern[str], str]] = []


class UsageError(Exception):
    """A command line that parses but makes no sense (``k=v`` without ``=``, a bad duration).

    Reported like argparse's own errors, with exit code 2.
    """


def cli_wording(text: str) -> str:
    """``text`` with the API keywords it suggests (``all_platforms=True``) as command-line flags."""
    if not _compiled:
        import re

        _compiled.extend((re.compile(pattern), flag) for pattern, flag in _API_TO_CLI)
    for compiled, flag in _compiled:
        text = compiled.sub(flag, text)
    return text


def error_line(err: BaseException) -> str:
    """An error as one line of text (messages never span lines on the terminal), in CLI words."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    return cli_wording(text)


class Context:
    """The state one invocation shares between parsing, the verb and error reporting.

    The store opens on first use, so ``--help`` and usage errors never touch the root.
    """

    def __init__(
        self, root: Path, namespace: str, *, json: bool = False, stdout: TextIO | None = None,
        stderr: TextIO | None = None, stdin: TextIO | None = None,
    ) -> None:
        """Bind to ``root``/``namespace``; streams default to the process's."""
        self.root = root
        self.namespace = namespace
        self.json = json
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.stdin = stdin if stdin is not None else sys.stdin
        self._store: Store | None = None
        self.failed = False

    @property
    def store(self) -> Store:
        """The store at ``root`` in ``namespace``, opened on first use."""
        if self._store is None:
            from ocistore.store import Store

            self._store = Store(self.root, namespace=self.namespace)
        return self._store

    def close(self) -> None:
        """Close the store if it was opened."""
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- streams ----------------------------------------------------------------------------
    @property
    def stdout_bytes(self) -> BinaryIO:
        """stdout as a binary stream (for ``content get``)."""
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is None:
            raise errors.FailedPrecondition("standard output cannot take binary data here")
        self.stdout.flush()
        return buffer  # type: ignore[no-any-return]

    @property
    def stdin_bytes(self) -> BinaryIO:
        """stdin as a binary stream (for ``content ingest -``)."""
        buffer = getattr(self.stdin, "buffer", None)
        if buffer is None:
            raise errors.FailedPrecondition("standard input cannot give binary data here")
        return buffer  # type: ignore[no-any-return]

    def out(self, text: str = "") -> None:
        """One line of result on stdout."""
        self.stdout.write(text + "\n")

    def report(self, err: BaseException, what: str = "") -> None:
        """One error line on stderr (``what`` names the object when the message does not)."""
        line = error_line(err)
        if what and what not in line:
            line = f"{what}: {line}"
        self.stderr.write(f"ocistore: {line}\n")
        self.stderr.flush()
        self.failed = True

    def progress(self) -> ProgressPrinter | None:
        """A progress printer on stdout (as ctr shows it), or ``None`` in ``--json`` mode.

        stderr stays for errors, so a failed command still says exactly one line there.
        """
        if self.json:
            return None
        from ocistore.cli.progress import ProgressPrinter

        isatty = getattr(self.stdout, "isatty", None)
        return ProgressPrinter(self.stdout, tty=bool(isatty and isatty()))
