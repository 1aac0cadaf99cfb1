r"""Eval curves of runs side by side: a markdown table (a row per eval step, a column per run) and a plot.

  python -m bert_jax.tools.curves runs/minilm_wt2 runs/random_wt2 --labels="MiniLM continued,random init" \
      --metric=mlm_accuracy --baseline=most_frequent_token_accuracy --out=curves.png

Reads each workdir's eval_history.json (every eval of the run, written by the training loop;
a fine-tuning seed directory has one too). --baseline adds a column of another metric of the
first run (e.g. the most-frequent-token accuracy of its eval batches). Steps that a run did not
evaluate are left empty.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from etils import epath

from bert_jax import cli
from bert_jax.train import EVAL_HISTORY_FILE


def load(workdir: str) -> list[dict[str, Any]]:
  """The evals of a run, oldest first ({"step": s, <metric>: value})."""
  path = epath.Path(os.path.join(workdir, EVAL_HISTORY_FILE))
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: give the workdir of a bert_jax run that has evaluated "
                            "(a pretraining workdir or a fine-tuning seed_<k> directory).")
  try:
    history = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path} is unreadable ({e}); rerun the run's last eval or delete the file.") from None
  return sorted(history, key=lambda e: e["step"])


def series(history: list[dict[str, Any]], metric: str, name: str) -> dict[int, float | None]:
  """step -> value of `metric` in one run's history."""
  have = sorted({k for e in history for k in e if k != "step"})
  if not any(metric in e for e in history):
    raise ValueError(f"{name} has no eval metric {metric!r}; it has {have}: choose one with --metric.")
  return {int(e["step"]): e.get(metric) for e in history}


def table(columns: dict[str, dict[int, float | None]]) -> str:
  """Markdown: a row per step of any column, a column per series."""
  steps = sorted({s for c in columns.values() for s in c})
  fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
  lines = ["| step | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
  lines += [f"| {s} | " + " | ".join(fmt(c.get(s)) for c in columns.values()) + " |" for s in steps]
  return "\n".join(lines)


def plot(columns: dict[str, dict[int, float | None]], metric: str, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top  # only when a plot is asked for
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for name, c in columns.items():
    points = [(s, v) for s, v in sorted(c.items()) if v is not None]
    ax.plot(*zip(*points), marker="o", label=name, linestyle="--" if name.startswith("baseline:") else "-")
  ax.set_xlabel("step")
  ax.set_ylabel(metric)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def curves(workdirs: Sequence[str], metric: str, labels: Sequence[str] = (), baseline: str = ""
           ) -> dict[str, dict[int, float | None]]:
  """{column name: {step: value}}: `metric` of each run, then `baseline` of the first."""
  if labels and len(labels) != len(workdirs):
    raise ValueError(f"--labels has {len(labels)} names for {len(workdirs)} workdirs; give one per workdir.")
  names = list(labels) or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  histories = [load(w) for w in workdirs]
  columns = {n: series(h, metric, w) for n, h, w in zip(names, histories, workdirs)}
  if baseline:
    columns[f"baseline: {baseline}"] = series(histories[0], baseline, workdirs[0])
  return columns


def main(argv: list[str] | None = None) -> int:
  parser = cli.Parser(prog="bert_jax.tools.curves", description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+", help="run directories (each with eval_history.json)")
  parser.add_argument("--metric", default="mlm_accuracy", help="the eval metric to compare (default: mlm_accuracy)")
  parser.add_argument("--baseline", default="", help="another metric of the first run, as a last column")
  parser.add_argument("--labels", default="", help="comma-separated column names, one per workdir")
  parser.add_argument("--out", default="", help="write the plot there (PNG)")
  args = parser.parse_args(argv)
  try:
    columns = curves(args.workdirs, args.metric, [s.strip() for s in args.labels.split(",")] if args.labels else (),
                     args.baseline)
  except cli.INPUT_ERRORS as e:
    print(f"{parser.prog}: error: {cli.one_line(e)}", file=sys.stderr)
    return cli.EXIT_USAGE
  print(table(columns))
  if args.out:
    plot(columns, args.metric, args.out)
    print(f"plot: {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
