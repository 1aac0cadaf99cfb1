r"""BERT pretraining (Devlin et al. 2018): MLM + NSP, token masking.

Sizes: tiny, mini, small, medium (BERT miniatures, Turc et al. 2019), base, large (paper).
Recipe defaults follow google-research/bert: batch 256, Adam with weight decay 0.01 and
no bias correction (eps 1e-6), lr 1e-4, 10k warmup steps then linear decay, 1M steps,
sequence length 128 with 20 predictions (the paper's first 90% of steps).

  python -m bert_jax.main --config=configs/bert.py:base --workdir=gs://bucket/bert_base
  python -m bert_jax.main --config=configs/bert.py:tiny,runlocal --workdir=runs/bert_tiny
  python -m bert_jax.main --config=configs/bert.py:base --workdir=... \
      --config.data.masking=whole_word --config.data.mask_rate=0.2
"""

from bert_jax.configs import common

# (layers, hidden) of each size; heads = hidden / 64, intermediate = 4 * hidden.
SIZES = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}


def model_for(variant: str):
  if variant not in SIZES:
    raise ValueError(f"Unknown BERT variant {variant!r}; choose one of {sorted(SIZES)}.")
  layers, hidden = SIZES[variant]
  return common.model_config(
      family="bert", hidden_size=hidden, num_hidden_layers=layers,
      num_attention_heads=hidden // 64, intermediate_size=4 * hidden, vocab_size=30522,
      hidden_act="gelu")


def get_config(arg=None):
  arg = common.parse_arg(arg, variant="base", runlocal=False)
  config = common.base_config()
  config.variant = arg.variant
  config.model = model_for(arg.variant)
  config.data = common.data_config(instances="nsp", masking="token", mask_rate=0.15,
                                   max_seq_length=128, max_predictions_per_seq=20)
  config.objective = common.objective_config(name="mlm", sentence_loss="nsp")
  config.distill = common.distill_config()  # MLM distillation from a teacher (bert_jax.tasks.distill)
  config.train.batch_size = 256
  config.train.num_steps = 1_000_000
  config.optimizer.update(name="bert_adamw", learning_rate=1e-4, warmup_steps=10_000,
                          weight_decay=0.01, eps=1e-6)
  if arg.runlocal:
    common.runlocal(config)
  return config
