"""Pieces shared by the family config files (bert.py, albert.py, electra.py).

A family file's `get_config(arg)` takes the string after the colon of
`--config=configs/<family>.py:<arg>` and returns one `ml_collections.ConfigDict`
with four sections that each part of the code owns:

  config.model       the encoder (bert_jax.models), HF-style key names; schema and defaults:
                     bert_jax.models.config.ModelConfig
  config.data        corpus, tokenizer, instance building and masking (bert_jax.data)
  config.objective   what the loss computes (bert_jax.tasks)
  config.train / optimizer / mesh / checkpoint / eval / log / init   the loop (bert_jax.train)

`arg` is a comma separated list: a bare first token is the size variant, other bare
tokens are booleans set to True, `key=value` tokens are typed by their default:
  configs/bert.py:base            configs/electra.py:variant=small,runlocal
"""

from __future__ import annotations

import dataclasses

import ml_collections

from bert_jax.models import config as model_config_lib

# Logical axis names used by the model code. Mapping them to mesh axes happens only in
# bert_jax/sharding.py (presets) and may be overridden by config.mesh.logical_axis_rules.
LOGICAL_AXES = ("batch", "length", "embed", "hidden", "heads", "kv", "mlp", "vocab",
                "type_vocab", "position", "classes", "layers")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `variant=base,runlocal` (or `base,runlocal`) into typed fields."""
  result = ml_collections.ConfigDict(dict(defaults))
  # A bare first token sets `variant`, or else the first string argument (e.g. a task name).
  positional = "variant" if "variant" in defaults else next(
      (k for k, v in defaults.items() if isinstance(v, str)), None)
  if not arg:
    return result
  for i, token in enumerate(t.strip() for t in arg.split(",")):
    if not token:
      continue
    if "=" in token:
      key, value = token.split("=", 1)
    elif i == 0 and positional:
      key, value = positional, token
    else:
      key, value = token, "True"
    if key not in defaults:
      raise ValueError(
          f"Unknown config argument {key!r} in {arg!r}; known arguments: {sorted(defaults)}.")
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"Config argument {key!r} must be a boolean, got {value!r}.")
      result[key] = value.lower() in ("true", "1")
    elif default is None:
      result[key] = value
    else:
      result[key] = type(default)(value)
  return result


def model_config(**overrides) -> ml_collections.ConfigDict:
  """Encoder hyperparameters: the fields and defaults of bert_jax.models.config.ModelConfig.

  Keys, defaults, their order and their meanings are written once, on the dataclass; the
  fields it sets in code (CODE_ONLY_FIELDS) are not config keys.
  """
  c = ml_collections.ConfigDict()
  for field in dataclasses.fields(model_config_lib.ModelConfig):
    if field.name in model_config_lib.CODE_ONLY_FIELDS:
      continue
    if field.default is dataclasses.MISSING:
      raise TypeError(f"ModelConfig.{field.name} needs a default to be a config.model key.")
    c[field.name] = field.default
  c.update(overrides)
  return c


def data_config(**overrides) -> ml_collections.ConfigDict:
  """Corpus, tokenizer, instance building and masking (owned by bert_jax.data)."""
  c = ml_collections.ConfigDict()
  # --- corpus ---
  c.source = "builtin"               # builtin | tfds | text | tfrecord
  c.tfds_name = ""                   # e.g. tiny_shakespeare, wikipedia/20230601.en, c4/en
  c.tfds_split = "train"
  c.tfds_eval_split = ""             # empty: hold out eval_fraction of the train documents
  c.tfds_text_key = "text"
  c.tfds_data_dir = ""               # empty: TFDS default (or $TFDS_DATA_DIR)
  c.text_glob = ""                   # local or gs:// glob of text files
  c.text_eval_glob = ""              # empty: hold out eval_fraction of the text_glob documents; else the
                                     # eval documents' files (every text_glob document then trains)
  c.text_format = "sentence_per_line"  # sentence_per_line (blank line between docs) | document_per_line
  # A text file (plain or gzip'd) with a larger share of lines that are not UTF-8 text (invalid
  # bytes, control characters), and at least 10, is refused naming it: a binary file by mistake.
  c.max_bad_line_fraction = 0.01
  c.max_unk_share = 0.5              # continuing a checkpoint: refuse a corpus its tokenizer reads as more [UNK]
  c.tfrecord_glob = ""               # output of `python -m bert_jax.data.preprocess`
  # source=tfrecord: documents held per host at once (bert_jax.data.stream); the rows of one
  # window are shuffled together, NSP's random B and packing draw from it. 0: load the host's
  # whole share in memory (small record sets; same batches as the source it was made from).
  c.stream_window_docs = 10_000
  c.eval_fraction = 0.02             # share of documents held out for evaluation
  # Row records (`python -m bert_jax.data.rows`): read rows from them instead of building them
  # (a graph-only tf.data source); service_address ("grpc://host:port", a tf.data service
  # dispatcher) then runs reading, masking and batching on the service's CPU workers.
  c.rows_path = ""
  c.service_address = ""
  c.mask_parallelism = 1             # pieces masked at once, order kept (more on many-core workers)
  # --- tokenizer ---
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.kind = "sentencepiece"   # sentencepiece | wordpiece
  c.tokenizer.path = ""              # .model / vocab.txt; empty: train one into the workdir
  c.tokenizer.vocab_size = 30000     # used when training a sentencepiece model
  c.tokenizer.model_type = "unigram"   # unigram | bpe
  c.tokenizer.lower_case = True
  c.tokenizer.train_sentences = 1_000_000  # sentences sampled to train sentencepiece
  c.tokenizer.split_cjk = True       # training sentencepiece: CJK characters one by one (BERT's basic tokenizer)
  c.tokenizer.word_segmenter = ""    # jieba: whole_word / ngram / span masking keep segmented Chinese words whole
  # --- instances ---
  c.max_seq_length = 128
  c.instances = "nsp"                # nsp | sop | segments | full_sentences
  c.short_seq_prob = 0.1
  c.pack_examples = False            # several examples per row with segment ids
  # --- masking ---
  c.masking = "token"                # token | whole_word | ngram | span | electra
  c.mask_rate = 0.15                 # share of maskable tokens predicted
  # Share corrupted ([MASK] / random / keep split), Wettig et al. 2022; 0: = mask_rate (as BERT).
  # The smaller of the two sets is a random subset of the larger (bert_jax.data.masking).
  c.corrupt_rate = 0.0
  c.max_predictions_per_seq = 20
  # Eval batches at a fixed masking, whatever the training masking (e.g. token at 0.15, so MLM
  # figures compare across a mask-rate ablation); empty / 0: the training masking / rate.
  c.eval_masking = ""
  c.eval_mask_rate = 0.0
  c.mask_token_prob = 0.8            # replacement split: [MASK] / random / keep
  c.random_token_prob = 0.1
  c.keep_token_prob = 0.1
  c.random_token_range = "non_special"  # non_special | all
  c.ngram_max = 3
  c.ngram_weights = ""               # comma separated; empty: p(n) proportional to 1/n
  c.span_p = 0.2
  c.span_max = 10
  # --- input pipeline ---
  c.seed = 0
  # Cache of the built-in corpus and tokenized corpora; empty: $BERT_JAX_CACHE or ~/.cache/bert_jax.
  c.cache_dir = ""
  c.update(overrides)
  return c


def objective_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "mlm"                     # mlm (BERT/ALBERT) | electra
  c.sentence_loss = "nsp"            # nsp | sop | none
  c.disc_weight = 50.0               # ELECTRA discriminator loss weight
  c.gen_weight = 1.0
  c.sampling_temperature = 1.0       # Gumbel sampling of replaced tokens
  c.update(overrides)
  return c


def finetune_config(**overrides) -> ml_collections.ConfigDict:
  """Fine-tuning task, data and method (owned by bert_jax.finetune)."""
  c = ml_collections.ConfigDict()
  c.task = "sst2"                    # cola sst2 mrpc stsb qqp mnli qnli rte wnli | tsv (label<TAB>text)
  c.source = "tsv"                   # tsv (GLUE distribution files) | tfds (glue/<task>)
  c.data_dir = ""                    # tsv: the task's directory; tfds: data_dir (empty: TFDS default)
  c.labels = ""                      # tsv task: comma-separated label names; empty: <data_dir>/labels.txt
  c.eval_split = ""                  # empty: the task's (validation; MNLI matched + mismatched)
  c.train_examples = 0               # > 0: a fixed random subset of train (seeded by subset_seed)
  c.subset_seed = 0
  c.truncation = "bert"              # bert (google-research/bert) | hf_fast (transformers' tokenizers)
  c.epochs = 3.0
  c.warmup_proportion = 0.1
  c.seeds = 1                        # runs with seeds seed, seed + 1, ...; results.json has each and the median
  c.method = "full"                  # full | lora (config.model.lora_*) | adapters (config.model.adapter_*)
  c.random_init = False              # the starting point's architecture and tokenizer, random weights
  c.update(overrides)
  return c


def distill_config(**overrides) -> ml_collections.ConfigDict:
  """Knowledge distillation from a frozen teacher (owned by bert_jax.tasks.distill); off without a teacher."""
  c = ml_collections.ConfigDict()
  c.teacher = ""                     # fine-tuning seed dir | pretraining workdir | HF dir; empty: off
  c.alpha = 0.5                      # weight of the soft targets; 1 - alpha: the hard labels (0: labels only)
  c.temperature = 2.0                # T of softmax(logits / T); the soft term is scaled by T^2
  c.student_layers = 0               # the student's depth (0: config.model's / the starting point's)
  c.student_init = "start"           # start (config.init.*) | teacher; every k-th layer of it
  c.student_init_extra_layers = ""   # a student deeper than its source: "" refuses; random: the extra layers start random
  c.hidden_weight = 0.0              # TinyBERT hidden-state MSE through a learned projection
  c.attention_weight = 0.0           # TinyBERT attention-score MSE (same head count)
  c.eval_teacher = False             # task distillation: eval also reports the teacher's accuracy / agreement
  c.update(overrides)
  return c


def base_config() -> ml_collections.ConfigDict:
  """Everything but the model/data/objective sections, with BERT-base recipe defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256           # global batch, sequences per step
  c.train.grad_accum_steps = 1       # micro-batches per step (batch_size must divide)
  c.train.num_steps = 1_000_000
  c.train.max_consecutive_nonfinite = 10  # stop (keeping the last good checkpoint) after this many
  # Stop (with a checkpoint) after this many steps in THIS process, then resume by re-running:
  # for time-boxed queues and the resume tests. 0: run to num_steps.
  c.train.halt_after_steps = 0
  # Persistent XLA compilation cache, so a restart loads the compiled steps: a directory (local or
  # gs://); empty: $JAX_COMPILATION_CACHE_DIR if set, else <workdir>/compilation_cache; "none": off.
  c.train.compilation_cache = ""

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "bert_adamw"    # adamw | bert_adamw (no bias correction) | lamb
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10_000
  c.optimizer.schedule = "linear"    # linear | polynomial | constant
  c.optimizer.power = 1.0
  c.optimizer.end_learning_rate = 0.0
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0   # 0 disables
  # Layer-wise lr decay (ELECTRA fine-tuning): lr * decay ** (depth from the top); 1.0 disables.
  c.optimizer.layerwise_lr_decay = 1.0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                   # one of data/fsdp/tensor may be -1: the rest of the devices
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.preset = "dp"               # dp | fsdp | tp | fsdp_tp
  c.mesh.logical_axis_rules = ""     # optional override: "batch=data+fsdp,embed=fsdp,mlp=tensor"

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 3
  c.checkpoint.keep_best = 1
  c.checkpoint.best_metric = ""      # empty: the task's (eval/mlm_loss, eval/disc_loss, eval/<task metric>)
  c.checkpoint.best_mode = ""        # min | max; empty: the task's
  c.checkpoint.async_save = True

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 1000
  c.eval.num_batches = 20
  c.eval.batch_size = 0              # 0: train.batch_size
  c.eval.early_stop_patience = 0     # stop after this many evals without a better best_metric; 0: never

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 100

  c.init = ml_collections.ConfigDict()
  c.init.hf_checkpoint = ""          # warm start from an HF directory (bert_jax.interop.hf)
  c.init.workdir = ""                # fine-tuning: start from a bert_jax pretraining workdir
  c.init.checkpoint = "latest"       # ... its latest | best | <step> checkpoint
  return c


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config so it runs on a laptop CPU in minutes."""
  config.data.tokenizer.vocab_size = 4000
  config.data.tokenizer.train_sentences = 20_000
  config.data.max_seq_length = 64
  config.data.max_predictions_per_seq = 10
  config.model.vocab_size = 4000
  config.model.max_position_embeddings = 128
  # Encoder capped at BERT-tiny (2 x 128): bigger variants keep their other traits (factorized
  # embedding, sharing, generator fraction) but would take hours on a laptop CPU.
  if config.model.hidden_size > 128 or config.model.num_hidden_layers > 2:
    config.model.update(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                        intermediate_size=512)
  config.train.batch_size = 32
  config.train.num_steps = 600
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 60
  config.optimizer.name = "adamw"
  config.checkpoint.every_steps = 200
  config.eval.every_steps = 200
  config.eval.num_batches = 10
  config.log.every_steps = 50
  return config
