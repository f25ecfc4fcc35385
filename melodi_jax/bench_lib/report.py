"""Markdown tables from `bench.py --json` result files (the tables in benchmarks/README.md).

  python -m melodi_jax.bench_lib.report benchmarks/results/cpu_*.json
"""

import json
import sys


def _pct(value):
  return '' if value is None else f'{100 * value:.0f}%'


def step_table(results: list[dict]) -> str:
  lines = ['| model | params | GFLOP/step (model / executed) | train compile s | train step s '
           '(min-max) | train CPU-s | tokens/s | roofline: wall / per CPU-s | eval step s | eval roofline wall '
           '/ CPU-s | train temp MiB | peak RSS MiB |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results:
    t, e = r['train'], r.get('eval', {})
    name = r['model'].split(' + ')[0].replace('models/', '').replace('.gin', '')
    lines.append(
        f'| {name} | {r["parameters"] / 1e6:.2f}M | {t["matmul_flops"] / 1e9:.0f} / '
        f'{t.get("executed_flops", t["matmul_flops"]) / 1e9:.0f} | {t["compile_s"]:.1f} | '
        f'{t["median_s"]:.2f} ({t["min_s"]:.2f}-{t["max_s"]:.2f}) | '
        f'{t.get("cpu_median_s", float("nan")):.2f} | {t["tokens_per_s"]:.0f} | '
        f'{_pct(t.get("roofline_fraction"))} / {_pct(t.get("cpu_roofline_fraction"))} | '
        f'{e.get("median_s", float("nan")):.2f} | {_pct(e.get("roofline_fraction"))} / '
        f'{_pct(e.get("cpu_roofline_fraction"))} | '
        f'{t["compiled_memory"].get("temp_size_in_bytes", 0) / 2**20:.0f} | '
        f'{r["peak_rss_bytes"] / 2**20:.0f} |')
  return '\n'.join(lines)


def sweep_table(result: dict) -> str:
  lines = ['| N windows | T | compile s (wall / CPU) | step s | us/token | CPU-s/token (us) | '
           'roofline wall / CPU-s | temp MiB |',
           '|---|---|---|---|---|---|---|---|']
  nan = float('nan')
  for r in result['sweep']:
    temp = r.get('temp_bytes')
    cpu_token = (1e6 * r['cpu_median_s'] * r['us_per_token'] / (1e6 * r['median_s'])
                 if r.get('cpu_median_s') else nan)   # (steps=0 sweeps: compile only)
    step_s = r['median_s'] if r.get('median_s') is not None else nan
    lines.append(f'| {r["num_windows"]} | {r["segment_length"]} | {r["compile_s"]:.1f} / '
                 f'{r.get("compile_cpu_s", nan):.1f} | '
                 f'{step_s:.2f} | {r.get("us_per_token") or nan:.0f} | {cpu_token:.0f} | '
                 f'{_pct(r.get("roofline_fraction"))} / {_pct(r.get("cpu_roofline_fraction"))} | '
                 f'{(temp or 0) / 2**20:.0f} |')
  return '\n'.join(lines)


def main(paths):
  steps, sweeps = [], []
  for path in paths:
    with open(path) as f:
      result = json.load(f)
    (sweeps if 'sweep' in result else steps).append(result)
  if steps:
    print(step_table(steps))
  for result in sweeps:
    print(f'\n{result["model"]}\n')
    print(sweep_table(result))


if __name__ == '__main__':
  main(sys.argv[1:])
