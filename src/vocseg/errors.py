"""The one exception type vocseg raises for problems a user can fix."""

from __future__ import annotations


class VocsegError(Exception):
    """A user-facing error: bad input, missing file, wrong setting. The CLI prints it without a traceback."""
