"""The SQuAD and token-classification parts of configs/finetune.py (bert_jax.tasks.qa, bert_jax.tasks.tagging).

Settings of the BERT paper (Devlin et al. 2018, section 4): SQuAD v1.1 lr 5e-5, batch 32,
3 epochs; SQuAD v2.0 lr 5e-5, batch 48, 2 epochs; sequence length 384, document stride 128,
questions cut to 64 pieces, answers up to 30 pieces, 20-best (google-research/bert run_squad.py);
NER (CoNLL-2003) lr 5e-5, batch 32, 3 epochs, length 128.
"""

import ml_collections

SQUAD_TASKS = ("squad", "squad_v2")
TAGGING_TASKS = ("conll2003", "conll")


def squad_config() -> ml_collections.ConfigDict:
  """config.finetune.squad: windows, answers, files (bert_jax.tasks.qa, bert_jax.data.squad)."""
  c = ml_collections.ConfigDict()
  c.train_file = ""                  # empty: <data_dir>/train-v1.1.json (v2: train-v2.0.json); source=json
  c.eval_file = ""                   # empty: <data_dir>/dev-v1.1.json (v2: dev-v2.0.json)
  c.train_articles = ""              # "a:b": only these articles of the train file (Python slice)
  c.eval_articles = ""               # "a:b": only these articles of the eval file
  c.doc_stride = 128                 # pieces between the starts of a context's windows
  c.max_query_length = 64            # question pieces kept
  c.max_answer_length = 30           # longest predicted answer, in pieces
  c.n_best_size = 20                 # start / end candidates per window, answers kept per question
  c.null_score_diff_threshold = 0.0  # v2.0: predict "" when null score - best span score exceeds it
  return c


def tagging_config() -> ml_collections.ConfigDict:
  """config.finetune.tagging: CoNLL columns and labels (bert_jax.tasks.tagging, bert_jax.data.conll)."""
  c = ml_collections.ConfigDict()
  c.label_column = "ner"             # conll2003 (TFDS): ner | pos | chunks; conll files: column index (-1: last)
  c.labels = ""                      # comma-separated label names; empty: TFDS's, or the train file's (sorted)
  c.entities = True                  # entity-level P/R/F1 as seqeval (IOB1/IOB2 chunks); False: token accuracy
  return c


def apply(config: ml_collections.ConfigDict, task: str, recipe: str, runlocal: bool) -> None:
  """Sets the SQuAD or tagging sections and recipe of a finetune.py config (other tasks: no-op)."""
  if task in SQUAD_TASKS:
    v2 = task == "squad_v2"
    config.finetune.source = "json"
    config.finetune.squad = squad_config()
    config.data.max_seq_length = 256 if runlocal else 384
    config.train.batch_size = 48 if v2 else 32
    config.eval.batch_size = 32
    config.finetune.epochs = 2.0 if v2 else 3.0
    if recipe == "bert":
      config.optimizer.learning_rate = 5e-5
  elif task in TAGGING_TASKS:
    config.finetune.source = "tfds" if task == "conll2003" else "conll"
    config.finetune.tagging = tagging_config()
    if recipe == "bert":
      config.optimizer.learning_rate = 5e-5
