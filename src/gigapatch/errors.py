"""The one exception type gigapatch raises for problems a user can fix."""

from __future__ import annotations


class GigapatchError(Exception):
    """A problem with an input, a setting or an output path.

    The message names the offending input and says what to change; the CLI prints it as
    one line and exits with status 2.
    """
