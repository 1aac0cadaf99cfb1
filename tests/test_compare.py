"""bert_jax.tools.compare: two fine-tuning runs' results.json, medians and the one-sided U test."""

import json
import math

import pytest

from bert_jax.tools import compare


def _run(tmp_path, name, scores, task="sst2", metric="accuracy"):
  d = tmp_path / name
  d.mkdir()
  seeds = [{"eval": {"validation": {metric: s, "loss": 0.5}}} for s in scores]
  median = {"validation": {metric: sorted(scores)[len(scores) // 2]}}
  (d / "results.json").write_text(json.dumps({"task": task, "seeds": seeds, "median": median}))
  return str(d)


def test_separated_runs_give_the_exact_u_test_p(tmp_path, capsys):
  a = _run(tmp_path, "a", [0.70, 0.72, 0.71, 0.73, 0.74])
  b = _run(tmp_path, "b", [0.60, 0.65, 0.62, 0.61, 0.64])
  out = compare.compare(compare.load(a), compare.load(b))
  assert out["metric"] == "accuracy"
  assert out["a"]["median"] == pytest.approx(0.72) and out["b"]["median"] == pytest.approx(0.62)
  assert (out["b"]["min"], out["b"]["max"]) == (0.60, 0.65)
  assert out["median_difference"] == pytest.approx(0.10)
  # Every A above every B: one ordering of C(10, 5) = 252 is as extreme (exact test, no ties).
  assert out["p_a_greater"] == pytest.approx(1 / math.comb(10, 5))
  # The other direction is not significant at all.
  assert compare.compare(compare.load(b), compare.load(a))["p_a_greater"] == pytest.approx(1.0)
  compare.main([a, b])
  assert "A - B medians: +0.1000" in capsys.readouterr().out


def test_bad_input_is_named(tmp_path):
  a = _run(tmp_path, "a", [0.7, 0.8])
  with pytest.raises(ValueError, match="different tasks"):
    compare.compare(compare.load(a), compare.load(_run(tmp_path, "b", [0.5, 0.6], task="cola")))
  with pytest.raises(KeyError, match="no validation/f1.*--metric"):
    compare.compare(compare.load(a), compare.load(a), metric="f1")
  with pytest.raises(FileNotFoundError, match="results.json not found"):
    compare.load(str(tmp_path / "missing"))
