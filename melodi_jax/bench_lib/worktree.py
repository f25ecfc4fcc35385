"""A temporary git worktree of a revision, for measuring it beside this tree (ab.py, numerics.py)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from typing import Iterator

from absl import flags

from melodi_jax.train import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def define_against_flag() -> None:
  """--against (ab, numerics); defined once."""
  if 'against' not in flags.FLAGS:
    flags.DEFINE_string('against', None, 'git revision to compare the working tree with (commit, '
                        'tag or branch)')


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[str]:
  """A temporary detached git worktree of `revision`, removed on the way out."""
  parsed = subprocess.run(['git', '-C', REPO, 'rev-parse', '--verify', '--quiet',
                           f'{revision}^{{commit}}'], capture_output=True, text=True)
  if parsed.returncode != 0:
    raise cli.UserError(f'--against={revision}: not a commit of {REPO}; give a commit, tag or '
                        'branch (git log --oneline)')
  path = tempfile.mkdtemp(prefix='melodi_jax_ab_')
  subprocess.run(['git', '-C', REPO, 'worktree', 'add', '--detach', '--force', path,
                  parsed.stdout.strip()], check=True, capture_output=True)
  try:
    yield path
  finally:
    subprocess.run(['git', '-C', REPO, 'worktree', 'remove', '--force', path],
                   capture_output=True)
