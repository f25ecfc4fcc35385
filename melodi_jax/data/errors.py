"""The data layer's user-facing error and the one-line exit used by its entry points."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

_Fn = TypeVar("_Fn", bound=Callable[..., object])


class DataError(ValueError):
    """Bad data or data flags; the message names the file/flag and says what to change."""


def exit_on_data_error(main: _Fn) -> _Fn:
    """Wraps an entry point so a `DataError` prints one line and exits with status 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped  # type: ignore[return-value]
