r"""ALBERT pretraining (Lan et al. 2019): MLM + SOP, n-gram masking, cross-layer sharing.

Sizes: base, large, xlarge, xxlarge (paper Table 1 / albert v2 configs): embedding 128,
all layers in one shared group, no dropout, gelu_new. Recipe from the paper: LAMB, lr
0.00176, batch 4096, 125k steps, 3125 warmup steps, sequence length 512, n-gram masking with
n <= 3 and p(n) proportional to 1/n.

  python -m bert_jax.main --config=configs/albert.py:base --workdir=gs://bucket/albert_base
  python -m bert_jax.main --config=configs/albert.py:base,runlocal --workdir=runs/albert
"""

from bert_jax.configs import common

# (layers, hidden, heads, intermediate)
SIZES = {
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
    "xlarge": (24, 2048, 16, 8192),
    "xxlarge": (12, 4096, 64, 16384),
}


def model_for(variant: str):
  if variant not in SIZES:
    raise ValueError(f"Unknown ALBERT variant {variant!r}; choose one of {sorted(SIZES)}.")
  layers, hidden, heads, inter = SIZES[variant]
  return common.model_config(
      family="albert", vocab_size=30000, embedding_size=128, hidden_size=hidden,
      num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
      num_hidden_groups=1, inner_group_num=1, hidden_act="gelu_new",
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def get_config(arg=None):
  arg = common.parse_arg(arg, variant="base", runlocal=False)
  config = common.base_config()
  config.variant = arg.variant
  config.model = model_for(arg.variant)
  config.data = common.data_config(instances="sop", masking="ngram", mask_rate=0.15,
                                   max_seq_length=512, max_predictions_per_seq=20)
  config.objective = common.objective_config(name="mlm", sentence_loss="sop")
  config.distill = common.distill_config()  # MLM distillation from a teacher (bert_jax.tasks.distill)
  config.train.batch_size = 4096
  config.train.num_steps = 125_000
  config.optimizer.update(name="lamb", learning_rate=0.00176, warmup_steps=3125,
                          weight_decay=0.01, eps=1e-6)
  if arg.runlocal:
    common.runlocal(config)
    config.model.embedding_size = 64
    config.optimizer.name = "lamb"
    config.optimizer.learning_rate = 5e-3
  return config
