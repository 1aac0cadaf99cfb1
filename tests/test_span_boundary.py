"""SpanBERT's span-boundary objective (bert_jax.tasks.span_boundary): boundary indices on hand-built
spans, the loss terms, the config's checks, and a sharded run that resumes bit for bit."""

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import state
from bert_jax import train
from bert_jax.data import synthetic
from bert_jax.tasks import registry
from bert_jax.tasks import span_boundary
from train_testlib import load_config, tiny_config, tree_max_diff


def boundaries(positions, weights=None, seq_len=16):
  positions = np.asarray(positions, np.int32)
  weights = (positions > 0).astype(np.float32) if weights is None else np.asarray(weights, np.float32)
  left, right, offset = span_boundary.span_boundaries(jnp.asarray(positions), jnp.asarray(weights), seq_len)
  return np.asarray(left).tolist(), np.asarray(right).tolist(), np.asarray(offset).tolist()


def test_span_at_the_start_and_at_the_end_of_a_row():
  # [CLS]=0, tokens 1..10, [SEP]=11 (L=12): a span right after [CLS] and one right before [SEP].
  left, right, offset = boundaries([[1, 2, 3, 9, 10, 0]], seq_len=12)
  assert left == [[0, 0, 0, 8, 8, 0]]        # [CLS] is the left boundary of the first span
  assert right == [[4, 4, 4, 11, 11, 0]]     # [SEP] is the right boundary of the last span
  assert offset == [[1, 2, 3, 1, 2, 1]]      # padding slot: (0, 0, 1), weighted out


def test_adjacent_spans_are_one_run_and_gaps_split_them():
  # 3,4 and 5,6 touch: one run 3..6 (the batch cannot tell them apart); 8 is alone (gap at 7).
  left, right, offset = boundaries([[3, 4, 5, 6, 8]])
  assert left == [[2, 2, 2, 2, 7]]
  assert right == [[7, 7, 7, 7, 9]]
  assert offset == [[1, 2, 3, 4, 1]]


def test_unsorted_slots_and_padding_in_the_middle():
  # Slots need not be sorted; a weight-0 slot between real ones does not join or split runs.
  left, right, offset = boundaries([[7, 2, 0, 3, 8, 6]], weights=[[1, 1, 0, 1, 1, 1]])
  assert left == [[5, 1, 0, 1, 5, 5]]
  assert right == [[9, 4, 0, 4, 9, 9]]
  assert offset == [[2, 1, 1, 2, 3, 1]]


def test_packed_rows_take_the_separators_as_boundaries():
  # Two packed sequences: [CLS] a b [SEP] [CLS] c d e [SEP] at 0..8; spans a b (1,2) and c d e (5,6,7).
  left, right, offset = boundaries([[1, 2, 5, 6, 7, 0, 0, 0]], seq_len=9)
  assert left == [[0, 0, 4, 4, 4, 0, 0, 0]]   # each sequence's own [CLS]
  assert right == [[3, 3, 8, 8, 8, 0, 0, 0]]  # each sequence's own [SEP]
  assert offset == [[1, 2, 1, 2, 3, 1, 1, 1]]
  # A run at the very end of a row without a separator is clipped to the row.
  left, right, _ = boundaries([[7, 8]], seq_len=9)
  assert left == [[6, 6]] and right == [[8, 8]]


def sbo_config(steps=4):
  c = tiny_config("bert", steps=steps, batch=8, seq=16)
  c.objective.update(name="sbo", sentence_loss="none")
  c.objective.sbo_max_targets = 20
  c.data.update(masking="span", instances="full_sentences", span_max=4)
  return c


def test_loss_is_mlm_plus_sbo_and_both_heads_learn():
  config = sbo_config()
  task = registry.get_task(config)
  assert isinstance(task, span_boundary.SpanBoundary)
  params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
  assert sorted(params) == ["bert", "mlm", "sbo", "sentence"]
  batch = synthetic.batch(config, 0, 8, 0)
  grad_fn = jax.jit(jax.value_and_grad(lambda p, b, r: task.loss(p, b, r, deterministic=True), has_aux=True))
  (loss, metrics), grads = grad_fn(params, batch, jax.random.PRNGKey(1))
  np.testing.assert_allclose(float(loss), float(metrics["mlm_loss"][0] / (metrics["mlm_loss"][1] + 1e-5)
                                                + metrics["sbo_loss"][0] / (metrics["sbo_loss"][1] + 1e-5)),
                             rtol=1e-5)
  norm = lambda t: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(t)))  # noqa: E731
  assert norm(grads["sbo"]) > 0 and norm(grads["bert"]["encoder"]) > 0
  assert norm(grads["sentence"]) == 0  # no sentence loss (SpanBERT drops NSP)


@pytest.mark.parametrize("edit,match", [
    (dict(sentence_loss="nsp"), "config.objective.sentence_loss=none"),
    (dict(sbo_max_targets=0), "config.objective.sbo_max_targets"),
])
def test_bad_settings_are_refused_naming_the_key(edit, match):
  config = sbo_config()
  config.objective.update(edit)
  with pytest.raises(ValueError, match=match):
    state.validate(config)


def test_token_masking_is_refused():
  config = sbo_config()
  config.data.masking = "token"
  with pytest.raises(ValueError, match="config.data.masking=span"):
    state.validate(config)


def test_packaged_config_is_span_masking_without_nsp():
  config = load_config("spanbert", "tiny,runlocal")
  assert (config.objective.name, config.objective.sentence_loss, config.data.masking) == ("sbo", "none", "span")
  state.validate(config)


@pytest.mark.slow  # three compiled runs
def test_sharded_run_resumes_bit_for_bit(tmp_path):
  """fsdp over 8 devices: 4 steps at once == 2 steps, stop, 2 more from the checkpoint."""
  config = sbo_config(steps=4)
  config.mesh.update(preset="fsdp", data=2, fsdp=4)
  config.checkpoint.every_steps = 2
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"))
  config.train.halt_after_steps = 2
  first = train.train_and_evaluate(config, str(tmp_path / "split"))
  assert first["status"] == "halted" and first["step"] == 2
  config.train.halt_after_steps = 0
  second = train.train_and_evaluate(config, str(tmp_path / "split"))
  assert second["status"] == "done" and second["step"] == 4
  assert tree_max_diff(whole["state"]["params"], second["state"]["params"]) == 0.0
  assert 0.0 <= second["eval"]["sbo_accuracy"] <= 1.0 and "mlm_accuracy" in second["eval"]
  shardings = {x.sharding.spec for x in jax.tree.leaves(second["state"]["params"]["sbo"])}
  assert any(spec != jax.sharding.PartitionSpec() for spec in shardings)  # the head is sharded too
