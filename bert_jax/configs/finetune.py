r"""Fine-tuning on GLUE (or any label<TAB>text task) from a pretraining workdir or an HF checkpoint.

Recipes (arg `recipe`), all with batch 32, warmup 10%, weight decay 0.01, max length 128:
  bert     Devlin et al. 2018: AdamW lr 2e-5 (the paper searched 2e-5..5e-5), 3 epochs
  electra  Clark et al. 2020 (base): lr 1e-4, layer-wise lr decay 0.8, Adam eps 1e-6,
           3 epochs (10 for RTE and STS-B)
The model and tokenizer come from the starting point (config.init.workdir or
config.init.hf_checkpoint); config.model.* here only sets dropout and the PEFT method.

  python -m bert_jax.main --config=configs/finetune.py:sst2 --workdir=runs/sst2 \
      --config.init.hf_checkpoint=../shared/weights/all-MiniLM-L6-v2 \
      --config.finetune.data_dir=../shared/data/glue/SST-2 --config.finetune.seeds=3
  python -m bert_jax.main --config=configs/finetune.py:task=rte,recipe=electra --workdir=runs/rte \
      --config.init.workdir=runs/electra_small --config.finetune.source=tfds
  python -m bert_jax.main --config=configs/finetune.py:sst2,lora --workdir=runs/sst2_lora ...
  python -m bert_jax.main --config=configs/finetune.py:sst2,adapters --workdir=runs/sst2_ad ...
  python -m bert_jax.main --config=configs/finetune.py:sst2,distill --workdir=runs/sst2_student \
      --config.distill.teacher=runs/sst2/seed_0 --config.init.hf_checkpoint=...   (bert_jax.tasks.distill)

SQuAD (task squad = v1.1, squad_v2 = v2.0; bert_jax.tasks.qa) and token classification (conll2003 from
TFDS, conll = CoNLL-format files; bert_jax.tasks.tagging): settings in configs/qa_tagging.py.
  python -m bert_jax.main --config=configs/finetune.py:squad --workdir=runs/squad \
      --config.init.hf_checkpoint=path/to/bert --config.finetune.data_dir=path/to/squad_json_dir
  python -m bert_jax.main --config=configs/finetune.py:conll --workdir=runs/ner \
      --config.init.hf_checkpoint=path/to/bert --config.finetune.data_dir=path/to/conll_dir
"""

from bert_jax.configs import common
from bert_jax.configs import qa_tagging

RECIPES = ("bert", "electra")


def get_config(arg=None):
  arg = common.parse_arg(arg, task="sst2", recipe="bert", lora=False, adapters=False, distill=False,
                         runlocal=False)
  if arg.recipe not in RECIPES:
    raise ValueError(f"Unknown recipe {arg.recipe!r}; choose one of {RECIPES}.")
  config = common.base_config()
  config.model = common.model_config()
  config.data = common.data_config(max_seq_length=128)
  config.data.tokenizer.path = ""
  config.objective = common.objective_config(name="classify", sentence_loss="none")
  config.finetune = common.finetune_config(task=arg.task)
  config.distill = common.distill_config()
  config.train.batch_size = 32
  config.optimizer.update(name="adamw", learning_rate=2e-5, weight_decay=0.01, eps=1e-6,
                          clip_grad_norm=1.0, schedule="linear")
  if arg.recipe == "electra":
    config.optimizer.update(learning_rate=1e-4, layerwise_lr_decay=0.8)
    if arg.task in ("rte", "stsb"):
      config.finetune.epochs = 10.0
  if arg.lora:
    config.finetune.method = "lora"
    config.model.update(lora_rank=8, lora_alpha=16.0, lora_dropout=0.1, lora_targets="query,value")
    config.optimizer.learning_rate = 5e-4
  if arg.adapters:
    config.finetune.method = "adapters"
    config.model.adapter_size = 64
    config.optimizer.learning_rate = 1e-3
  if arg.distill:  # a 2-layer student from config.init, every 3rd layer (6-layer teachers); set config.distill.teacher
    config.distill.update(alpha=0.5, temperature=2.0, student_layers=2)
  config.checkpoint.update(keep=1, keep_best=1)
  config.eval.batch_size = 64
  config.log.every_steps = 50
  if arg.runlocal:
    config.data.max_seq_length = 64
    config.finetune.train_examples = 2000
  qa_tagging.apply(config, arg.task, arg.recipe, arg.runlocal)
  return config
