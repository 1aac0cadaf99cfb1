"""All Orbax use lives here: async saves, keep-last-K plus best-by-eval, sharded restore, fallback.

A checkpoint is two items: "state" (params, optimizer state, step, rng, counters: arrays, restored
directly into the shardings of the CURRENT mesh, so a run saved on 8 devices resumes on 4 or 1)
and "meta" (JSON: step, data batches consumed, ...). Orbax writes each step into a temporary
directory and renames it when complete, so an interrupted save is never listed; a listed step
that fails to restore (corrupt files) is skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm


def _abspath(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)


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
    self.manager = ocp.CheckpointManager(self.directory, item_names=("state", "meta"), options=options)

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

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int] | None:
    """(state, meta, step) of the newest restorable checkpoint (or of `step`); None if there is none.

    `abstract_state` holds jax.ShapeDtypeStruct leaves carrying the target shardings.
    """
    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    for s in steps:
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"]), s
      except Exception as e:  # pylint: disable=broad-except  # any failure means "not usable"
        if step is not None:
          raise
        logging.warning("Checkpoint at step %d in %s is unreadable (%s: %s); falling back to the "
                        "previous one.", s, self.directory, type(e).__name__, str(e)[:300])
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
