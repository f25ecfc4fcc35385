"""The one exception type for mistakes a user can fix (a flag, gin binding, data file, workdir):
every entry point prints it as one line, `error: ...`, and exits with status 2."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

_Fn = TypeVar('_Fn', bound=Callable[..., object])


class UserError(ValueError):
  """A setting that cannot work; the message names the flag, gin parameter or file to change."""


def exit_on_user_error(main: _Fn, stop: Callable[[int], object] = sys.exit) -> _Fn:
  """Wraps an entry point so a `UserError` prints one line and exits with status 2 (through
  `stop`: train/cli.py's ends a process joined to others at once)."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      sys.stderr.flush()
      print(f'error: {e}', file=sys.stderr)
      stop(2)

  return wrapped  # type: ignore[return-value]
