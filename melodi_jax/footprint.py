"""Memory kept between windows per sequence, read off the model's own memory pytree (the
accounting of the MELODI paper's footprint table).

  python -m melodi_jax.footprint --gin_file=paper/melodi_s128_l64.gin [--gin_bindings=...] [--json]
  python -m melodi_jax.footprint --all [--config_dir=configs/paper] [--plot=footprint.png] [--json]

Nothing here knows a formula: the numbers come from `jax.eval_shape(model.init_memory)` (no
allocation), so they follow whatever a memory kind really carries. Two accountings:

- as the paper counts: float elements per lane (every floating leaf's elements / B); bool and int
  leaves are bookkeeping (validity masks, counters) and are left out;
- as actually stored: bytes per lane by dtype, bookkeeping included.

On the paper's S192+L96 figure: our config (13 layers, S = M = 192, I = 96, L = 96 x 128 windows
= 12288, long memory stored as K/V) carries 13 x 192 x 1024 + 12288 x 2 x 1024 = 27,721,728
floats, which prints as 27.7M. The paper prints 27.8M. The same rule reproduces every other row
of its table exactly (TXL 13.6M, BRT 13.1M, Memorizing 147.8M, S128+L64 18.5M), and 27.8M is what
one gets by rounding the two parts first (2.6M short-term + 25.2M long-term). So we print both:
the exact total, and "parts summed" = every part rounded to 0.1M, then added, the arithmetic that
reproduces all five of the paper's figures (13.6M, 13.1M, 147.8M, 18.5M, 27.8M).
"""

import glob
import json
import os
from typing import Sequence

from absl import flags

from melodi_jax import gin_config
from melodi_jax.models.footprint import Footprint, measure_model, millions
from melodi_jax.train import cli

PAPER_DIR = os.path.join(gin_config.CONFIG_DIR, 'paper')
# Rows of the paper's main table in its order; other configs follow alphabetically.
PAPER_ORDER = ('transformer_xl', 'block_recurrent', 'memorizing_dense_64k', 'melodi_s128_l64',
               'melodi_s192_l96')
REFERENCE = 'melodi_s128_l64'   # the row the paper's "8x smaller" is measured against


def measure(gin_files: Sequence[str], bindings: Sequence[str] = (), name: str | None = None,
            search_paths: Sequence[str] = ()) -> Footprint:
  """Parses the gin files (clearing gin first) and measures the model they configure."""
  cli.parse_gin(gin_files, bindings, search_paths)
  model = cli.build_model()
  if name is None:
    name = os.path.splitext(os.path.basename(gin_files[-1]))[0] if gin_files else 'model'
  return measure_model(model, name)


def measure_folder(folder: str, bindings: Sequence[str] = (),
                   search_paths: Sequence[str] = ()) -> list[Footprint]:
  """One footprint per *.gin file in `folder`: the paper's rows in its order, then the rest."""
  def order(path):
    name = os.path.splitext(os.path.basename(path))[0]
    return (PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER), name)
  paths = sorted(glob.glob(os.path.join(folder, '*.gin')), key=order)
  if not paths:
    raise cli.UserError(f'--config_dir: no *.gin files in {folder!r}; point it at a folder of '
                        'model configs such as configs/paper')
  return [measure([path], bindings, search_paths=search_paths) for path in paths]


# ---------------------------------------------------------------------------------------------
# Printing


def mebibytes(count: int) -> str:
  return f'{count / 2**20:.1f} MiB'


def describe(footprint: Footprint) -> str:
  """Both accountings of one model, several lines."""
  parts = ' + '.join(f'{part} {millions(n)}' for part, n in footprint.paper_parts.items())
  stored = ', '.join(f'{dtype} {mebibytes(n)} ({n:,} B)'
                     for dtype, n in footprint.stored_bytes.items())
  return '\n'.join([
      f'{footprint.name}: memory kept between windows, per sequence (lane)',
      f'  as the paper counts: {millions(footprint.paper_floats)} floats '
      f'({footprint.paper_floats:,}; {parts or "none"}; parts summed '
      f'{footprint.parts_summed:.1f}M)',
      f'  as stored:           {mebibytes(footprint.stored_total)} '
      f'({footprint.stored_total:,} B; {stored or "nothing"})',
  ])


def table(rows: Sequence[Footprint], reference: str = REFERENCE) -> str:
  """A table of every row, with each row's ratio to `reference` (when that row is present)."""
  ref = next((r for r in rows if r.name == reference), None)
  width = max([len(r.name) for r in rows] + [5])
  lines = [f'{"model":<{width}}  {"paper floats":>12}  {"exact":>13}  {"parts summed":>12}  '
           f'{"stored":>12}' + (f'  {"/ " + reference:>{len(reference) + 2}}' if ref else '')]
  for row in rows:
    line = (f'{row.name:<{width}}  {millions(row.paper_floats):>12}  {row.paper_floats:>13,}  '
            f'{row.parts_summed:>11.1f}M  {mebibytes(row.stored_total):>12}')
    if ref and ref.paper_floats:
      line += f'  {row.paper_floats / ref.paper_floats:>{len(reference) + 1}.1f}x'
    lines.append(line)
  return '\n'.join(lines)


def plot(rows: Sequence[Footprint], path: str) -> None:
  """Bar chart of the paper-counted footprint per model, written as PNG."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = [r.name for r in rows]
  values = [r.paper_floats / 1e6 for r in rows]
  fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
  bars = ax.bar(names, values, color='tab:blue')
  ax.bar_label(bars, labels=[millions(r.paper_floats) for r in rows])
  ax.set_ylabel('floats kept per sequence (millions)')
  ax.set_title('Memory footprint between windows (as the MELODI paper counts)')
  ax.tick_params(axis='x', rotation=20)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Entry point

cli.define_gin_flags()
cli.define_json_flag()
flags.DEFINE_bool('all', False, 'a table of every *.gin in --config_dir')
flags.DEFINE_string('config_dir', PAPER_DIR, 'folder of model configs for --all')
flags.DEFINE_string('reference', REFERENCE, 'row the --all table divides by')
flags.DEFINE_string('plot', None, 'write a PNG bar chart of footprint vs model here')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}: pass configs with --gin_file')
  FLAGS = flags.FLAGS
  if FLAGS.all:
    rows = measure_folder(FLAGS.config_dir, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  elif FLAGS.gin_file:
    rows = [measure(FLAGS.gin_file, FLAGS.gin_bindings, search_paths=FLAGS.gin_search_paths)]
  else:
    raise cli.UserError('--gin_file: give a model config (e.g. --gin_file=paper/melodi_s128_l64'
                        '.gin) or --all for every config in --config_dir')
  if FLAGS.plot:
    try:
      plot(rows, FLAGS.plot)
    except OSError as e:
      raise cli.UserError(f'--plot: cannot write {FLAGS.plot!r} ({e.strerror}); choose a '
                          'writable path') from e
  by_name = {r.name: r for r in rows}
  if FLAGS.json:
    out = {'models': [r.to_json() for r in rows]}
    ref = by_name.get(FLAGS.reference)
    if ref is not None and len(rows) > 1:
      out['ratio_to_' + ref.name] = {r.name: round(r.paper_floats / ref.paper_floats, 3)
                                     for r in rows}
    print(json.dumps(out, indent=1))
    return
  for row in rows:
    print(describe(row))
  if len(rows) > 1:
    print()
    print(table(rows, FLAGS.reference))
    ref = by_name.get(FLAGS.reference)
    if ref is not None:
      for row in rows:
        if row.paper_floats > ref.paper_floats:
          print(f'{row.name} / {ref.name} = {row.paper_floats / ref.paper_floats:.1f}')
  if FLAGS.plot:
    print(f'plot written to {FLAGS.plot}')


if __name__ == '__main__':
  cli.run(main)
