"""The launcher's exceptions. Kept out of ``__init__`` because Hydra's plugin scan executes the
package's public modules again, which would make new classes of the same name."""

from __future__ import annotations


class RushhpcJobError(RuntimeError):
    """A Hydra job that failed on rushhpc without an exception of its own to return: its worker was
    lost or killed, it timed out, or no worker was left to run it. The message says which."""


class RemoteTraceback(Exception):
    """The traceback of a job's exception as the worker formatted it (set as the exception's
    ``__cause__``, so Python prints it under the exception)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text.rstrip()
