"""All Orbax use lives here: async saves, keep-last-K plus best-by-eval, sharded restore, fallback.

A checkpoint is two items: "state" (params, optimizer state, step, rng, counters: arrays, restored
directly into the shardings of the CURRENT mesh, so a run saved on 8 devices resumes on 4 or 1)
and "meta" (JSON: step, data batches consumed, model family, ...). Orbax writes each step into a
temporary directory and renames it when complete, so an interrupted save is never listed.

Restore tells two failures apart:
  - a checkpoint that is readable but does not fit the configured model (another family, a
    parameter or optimizer key more or less, another shape) raises CheckpointMismatchError
    naming the differences, before anything is touched: resuming another model in the same
    workdir would otherwise start from scratch and let keep-last-K delete the old run;
  - a checkpoint that cannot be read (truncated or missing files) is skipped with a warning in
    favour of the previous one, and moved aside to `<step>.unreadable-<time>` (a name Orbax
    does not list, kept for inspection) so that the retrained step is saved in its place.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm


UNREADABLE = ".unreadable-"  # <step>.unreadable-<time>: set aside, never listed by Orbax


class CheckpointMismatchError(ValueError):
  """A readable checkpoint that does not fit the configured model."""


def _abspath(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)


def _key_str(path) -> str:
  """'params/bert/embeddings/...' from a jax key path (dict keys, attributes and indices alike,
  so a namedtuple's `.mu` in the abstract state matches the `['mu']` of Orbax's metadata)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'params/bert/...': shape} of a pytree of arrays, ShapeDtypeStructs or Orbax metadata."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_key_str(p): tuple(leaf.shape) for p, leaf in flat if hasattr(leaf, "shape")}


def differences(saved: dict[str, tuple], expected: dict[str, tuple], limit: int = 6) -> list[str]:
  """Lines naming the keys only one side has and the shapes that differ (parameters first)."""
  order = lambda k: (not k.startswith("params/"), k)  # noqa: E731
  lines = [f"{k}: shape {saved[k]} in the checkpoint, {expected[k]} in this config"
           for k in sorted(saved.keys() & expected.keys(), key=order) if saved[k] != expected[k]]
  lines += [f"{k}: in this config, not in the checkpoint" for k in sorted(expected.keys() - saved.keys(), key=order)]
  lines += [f"{k}: in the checkpoint, not in this config" for k in sorted(saved.keys() - expected.keys(), key=order)]
  if len(lines) > limit:
    lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
  return lines


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager with the policy of config.checkpoint."""

  def __init__(self, directory: str, ckpt_config, *, read_only: bool = False, best_metric: str = "",
               best_mode: str = ""):
    """`best_metric` / `best_mode` (the task's choice) apply where config.checkpoint leaves them empty."""
    self.directory = _abspath(directory)
    self.best_metric = ckpt_config.best_metric or best_metric
    best_mode = ckpt_config.best_mode or best_mode or "min"
    if best_mode not in ("min", "max"):
      raise ValueError(f"config.checkpoint.best_mode must be 'min' or 'max', got {best_mode!r}.")
    if ckpt_config.keep < 1:
      raise ValueError(f"config.checkpoint.keep must be >= 1, got {ckpt_config.keep}.")
    policies = [ocm.LatestN(n=int(ckpt_config.keep))]
    if ckpt_config.keep_best > 0 and self.best_metric:
      metric = self.best_metric
      policies.append(ocm.BestN(get_metric_fn=lambda m: m[metric], n=int(ckpt_config.keep_best),
                                reverse=best_mode == "min",
                                keep_checkpoints_without_metrics=False))
    # best_fn makes Orbax write each checkpoint's metrics (the preservation policy alone keeps
    # them in memory only): a resumed run still knows its best checkpoint, and best_step works.
    best_fn = (lambda m, key=self.best_metric: m[key]) if self.best_metric else None
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=bool(ckpt_config.async_save),
        best_fn=best_fn, best_mode=best_mode,
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        cleanup_tmp_directories=True, create=not read_only, read_only=read_only)
    # Handlers (not just item names) so that a fresh manager can read a step's metadata.
    self.read_only = read_only
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The saved step with the best `best_metric` (None when no checkpoint has it)."""
    return self.manager.best_step() if self.best_metric else None

  def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> bool:
    """Starts an (async) save; returns False when this step is already saved."""
    if step in self.manager.all_steps():
      return False
    if metrics is not None and self.best_metric not in metrics:
      metrics = None
    return self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=True)

  def check_fits(self, step: int, abstract_state: Any, family: str | None = None) -> dict:
    """The meta of `step` if its state fits `abstract_state` (and `family`); raises
    CheckpointMismatchError naming the differences if not, and any other exception when the
    checkpoint cannot be read. Reads metadata only."""
    meta = dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    metadata = self.manager.item_metadata(step)
    saved = leaf_shapes(metadata["state"] if metadata is not None and metadata["state"] is not None else {})
    if not saved:
      raise ValueError(f"step {step} has no readable state metadata")
    lines = []
    if family and meta.get("family") and meta["family"] != family:
      lines.append(f"model family: {meta['family']!r} in the checkpoint, {family!r} in this config")
    lines += differences(saved, leaf_shapes(abstract_state))
    if lines:
      raise CheckpointMismatchError(
          f"The checkpoint at step {step} in {self.directory} does not fit the configured model:\n  "
          + "\n  ".join(lines) + "\nNothing was changed. Resume with the config that wrote it, or "
          "train this model in another --workdir.")
    return meta

  def restore(self, abstract_state: Any, step: int | None = None,
              family: str | None = None) -> tuple[Any, dict, int] | None:
    """(state, meta, step) of the newest restorable checkpoint (or of `step`); None if there is none.

    `abstract_state` holds jax.ShapeDtypeStruct leaves carrying the target shardings; `family`
    (config.model.family) is compared with the family the checkpoint was saved with. A readable
    checkpoint that does not fit raises CheckpointMismatchError before anything is changed; an
    unreadable one is skipped (unless `step` is given) and, unless read-only, set aside once a
    usable one is found (see the module docstring).
    """
    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    unreadable: list[int] = []
    found = None
    for s in steps:
      try:
        self.check_fits(s, abstract_state, family)
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # any other failure means "not usable"
        if step is not None:
          raise
        logging.warning("Checkpoint at step %d in %s is unreadable (%s: %s); falling back to the "
                        "previous one.", s, self.directory, type(e).__name__, str(e)[:300])
        unreadable.append(s)
        continue
      found = out["state"], dict(out["meta"]), s
      break
    self.set_aside(unreadable)
    return found

  def set_aside(self, steps: list[int]) -> None:
    """Renames unreadable step directories to `<step>.unreadable-<time>` (kept, never listed),
    so a new save of the same step is not skipped as already present."""
    if not steps or self.read_only:
      return
    if jax.process_index() == 0:
      from etils import epath  # pylint: disable=g-import-not-at-top
      stamp = time.strftime("%Y%m%dT%H%M%S")
      for s in steps:
        src = epath.Path(self.directory) / str(s)
        dst = src.parent / f"{s}{UNREADABLE}{stamp}"
        src.rename(dst)
        logging.warning("Moved the unreadable checkpoint %s aside to %s; the step will be saved again.",
                        src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("bert_jax_checkpoint_set_aside")
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def read_params(directory: str, step: int) -> Any:
  """The params of one saved train state, as numpy, by the shapes stored with them: no model,
  optimizer or other state is built or read (each process reads whole arrays)."""
  manager = ocp.CheckpointManager(_abspath(directory), options=ocp.CheckpointManagerOptions(
      read_only=True, create=False), item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  try:
    metadata = manager.item_metadata(step)
    if metadata is None or metadata["state"] is None or "params" not in metadata["state"]:
      raise ValueError(f"No readable checkpoint at step {step} in {directory}.")
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = {"params": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                                       metadata["state"]["params"])}
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract), partial_restore=True)))
  finally:
    manager.close()
  return jax.device_get(out["state"]["params"])
