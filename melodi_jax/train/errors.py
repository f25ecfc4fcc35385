"""The one exception type for mistakes a user can fix; entry points print it as one line, exit 2."""


class UserError(Exception):
  """A bad flag, gin file, corpus or workdir: the message says what is wrong and how to fix it."""
