"""The one map from a config to its task: `get_task(config)` (and `task_class(config)`).

Pretraining tasks by config.objective.name; fine-tuning tasks (objective "classify") by
config.finetune.task; a teacher in config.distill turns MLM or classification into its
distillation variant. Adding a task is a line here (docs/adding_an_objective.md).
"""

from __future__ import annotations

from bert_jax.tasks import base
from bert_jax.tasks import classification
from bert_jax.tasks import distill
from bert_jax.tasks import pretraining
from bert_jax.tasks import qa
from bert_jax.tasks import span_boundary
from bert_jax.tasks import tagging

PRETRAINING = {
    "mlm": pretraining.Pretraining,
    "electra": pretraining.Electra,
    "sbo": span_boundary.SpanBoundary,
}
FINETUNING = "classify"  # config.objective.name of every fine-tuning task
# Fine-tuning tasks other than sequence classification, by config.finetune.task (the others are
# GLUE task names or tsv: classification.Classification).
FINETUNING_TASKS = {
    "squad": qa.QuestionAnswering,
    "squad_v2": qa.QuestionAnswering,
    "conll2003": tagging.TokenClassification,
    "conll": tagging.TokenClassification,
}
OBJECTIVES = (*PRETRAINING, FINETUNING)


def task_class(config) -> type[base.Task]:
  """The Task class of `config` (an unknown objective or task name fails here, naming the key)."""
  name = config.objective.name
  if name == FINETUNING:
    cls = FINETUNING_TASKS.get(config.finetune.task)
    if cls is None:
      classification.task_info(config)  # an unknown task name fails here
      cls = classification.Classification
    if distill.active(config):
      if cls is not classification.Classification:
        raise ValueError(f"config.distill is set but config.finetune.task={config.finetune.task!r} is not a "
                         "sequence classification task: distillation covers classification and regression "
                         "(GLUE, tsv).")
      return distill.TaskDistillation
    return cls
  if name not in PRETRAINING:
    raise ValueError(f"Unknown config.objective.name={name!r}; choose one of {OBJECTIVES}.")
  if name == "mlm" and distill.active(config) and config.distill.teacher:
    return distill.MLMDistillation
  return PRETRAINING[name]


def get_task(config) -> base.Task:
  """The Task of `config`, built."""
  return task_class(config)(config)
