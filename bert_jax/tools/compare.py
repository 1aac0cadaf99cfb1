r"""Compares two multi-seed fine-tuning runs (bert_jax.finetune results.json): is A better than B?

  python -m bert_jax.tools.compare runs/ph/pretrained runs/ph/random_init [--split validation] [--metric accuracy]

Prints each run's seeds, median and range, the difference of the medians, and the one-sided
Mann-Whitney U test of "A's seeds score higher than B's" (scipy.stats.mannwhitneyu), the
test README uses for "pretraining helps". Runs of different tasks are refused.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np
from scipy import stats

from bert_jax.finetune import RESULTS_FILE


def load(workdir: str) -> dict[str, Any]:
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(os.path.join(workdir, RESULTS_FILE))
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: give the workdir of a finished bert_jax fine-tune "
                            "(python -m bert_jax.main --config=configs/finetune.py:<task> ...).")
  return json.loads(path.read_text())


def seed_scores(results: dict[str, Any], split: str, metric: str, name: str) -> list[float]:
  scores = []
  for i, seed in enumerate(results["seeds"]):
    value = seed.get("eval", {}).get(split, {}).get(metric)
    if value is None:
      have = {s: sorted(m) for s, m in seed.get("eval", {}).items()}
      raise KeyError(f"{name}: seed {i} has no {split}/{metric}; it has {have}. "
                     "Choose them with --split and --metric.")
    scores.append(float(value))
  return scores


def compare(a: dict[str, Any], b: dict[str, Any], split: str = "validation",
            metric: str | None = None) -> dict[str, Any]:
  """A against B on split/metric (default: A's first median metric on the split)."""
  if a.get("task") != b.get("task"):
    raise ValueError(f"The runs are of different tasks ({a.get('task')!r}, {b.get('task')!r}).")
  if metric is None:
    metric = next(iter(a.get("median", {}).get(split, {})), None)
    if metric is None:
      raise KeyError(f"Run A has no median on split {split!r}; choose it with --split.")
  sa, sb = seed_scores(a, split, metric, "A"), seed_scores(b, split, metric, "B")
  out = {"split": split, "metric": metric}
  for k, s in (("a", sa), ("b", sb)):
    out[k] = {"seeds": s, "median": float(np.median(s)), "min": min(s), "max": max(s)}
  out["median_difference"] = out["a"]["median"] - out["b"]["median"]
  out["p_a_greater"] = float(stats.mannwhitneyu(sa, sb, alternative="greater").pvalue)
  return out


def format_report(out: dict[str, Any], name_a: str, name_b: str) -> str:
  lines = []
  for k, name in (("a", name_a), ("b", name_b)):
    r = out[k]
    lines.append(f"{k.upper()} {name}: {out['split']} {out['metric']} median {r['median']:.4f} "
                 f"({r['min']:.4f}-{r['max']:.4f}, {len(r['seeds'])} seeds: "
                 + ", ".join(f"{v:.4f}" for v in r["seeds"]) + ")")
  lines.append(f"A - B medians: {out['median_difference']:+.4f}; one-sided Mann-Whitney "
               f"p(A > B) = {out['p_a_greater']:.2g}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("a", help="workdir of run A (results.json)")
  parser.add_argument("b", help="workdir of run B (results.json)")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--metric", default=None, help="default: the task's first metric")
  args = parser.parse_args(argv)
  out = compare(load(args.a), load(args.b), args.split, args.metric)
  print(format_report(out, args.a, args.b))


if __name__ == "__main__":
  main()
