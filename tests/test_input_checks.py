"""Inputs of fine-tuning, distillation and ablation refused in one line before any model is built
(issue 25, point 3 and 4): SQuAD files without answers, a GLUE file with a header only, a CoNLL
file that is not text, a student
deeper than its source, a checkpoint step that is not there, an ablation's task data and plan."""

import json
import os

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import pytest

from bert_jax import finetune
from bert_jax import state
from bert_jax import train
from bert_jax.tasks import distill
from bert_jax.tasks import finetuning
from bert_jax.tasks import registry
from bert_jax.tools import ablate
from test_finetune import ft_config, make_hf_dir, write_sst2
from test_finetune_qa_tagging import tiny, write_conll, write_squad
from test_reliability import _COMPILE, _JaxEvents
from train_testlib import load_config, tiny_config


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return make_hf_dir(tmp_path_factory.mktemp("hf"), num_hidden_layers=2)


def no_compile(fn, *match):
  jax.random.PRNGKey(0)
  jax.numpy.zeros((), jax.numpy.int32)
  events = _JaxEvents()
  with events, pytest.raises((ValueError, FileNotFoundError)) as info:
    fn()
  message = str(info.value)
  for m in match:
    assert m in message, message
  assert "\n" not in message
  assert events.count(_COMPILE) == 0, events.events
  return message


def squad_config(hf, data_dir):
  c = tiny(load_config("finetune", "squad"), hf, str(data_dir))
  c.data.max_seq_length = 24
  c.finetune.squad.update(doc_stride=6, max_query_length=6)
  return c


@pytest.mark.parametrize("split_file", ["train-v1.1.json", "dev-v1.1.json"])
def test_squad_v11_question_without_answers_is_refused_naming_file_and_id(hf_dir, tmp_path, split_file):
  write_squad(tmp_path)
  path = tmp_path / split_file
  data = json.loads(path.read_text())
  qa = data["data"][0]["paragraphs"][1]["qas"][0]
  del qa["answers"]
  path.write_text(json.dumps(data))
  no_compile(lambda: finetune.prepare(squad_config(hf_dir, tmp_path)), str(path), repr(qa["id"]), "no 'answers'",
             "squad_v2")


def test_glue_file_with_a_header_only_is_refused_leaving_nothing(hf_dir, tmp_path):
  data = write_sst2(tmp_path / "sst2", n_train=8, n_dev=8, n_test=2)[0]
  with open(os.path.join(data, "train.tsv"), "w") as f:
    f.write("sentence\tlabel\n")
  workdir = tmp_path / "run"
  no_compile(lambda: finetune.run(ft_config(hf_dir, data), str(workdir)), os.path.join(data, "train.tsv"),
             "no examples after its header")
  assert not (workdir / "seed_0").exists() and not (workdir / "compilation_cache").exists()


def test_a_binary_conll_file_is_named_before_anything_is_built(hf_dir, tmp_path):
  write_conll(tmp_path / "conll", n_train=8, n_dev=8)
  train_file = tmp_path / "conll" / "train.txt"
  train_file.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))  # a gzip'd or binary file in its place
  c = tiny(load_config("finetune", "conll"), hf_dir, str(tmp_path / "conll"))
  no_compile(lambda: finetune.prepare(c), str(train_file), "is not UTF-8 text", "re-encode")


def test_student_deeper_than_its_start_is_refused_unless_asked(hf_dir, tmp_path):
  data = write_sst2(tmp_path / "sst2", n_train=8, n_dev=8, n_test=2)[0]
  c = ft_config(hf_dir, data, arg="distill")
  c.distill.update(teacher=hf_dir, student_layers=6, alpha=0.0)  # alpha 0: the teacher is not needed
  no_compile(lambda: finetune.prepare(c), "config.distill.student_layers=6", "has 2 layers",
             "config.distill.student_init_extra_layers=random")
  c.distill.student_init_extra_layers = "random"
  assert finetune.prepare(c).model.num_hidden_layers == 6
  c.distill.student_init_extra_layers = "copy"
  no_compile(lambda: distill.validate(c), "config.distill.student_init_extra_layers='copy'")


@pytest.mark.slow  # trains the workdir first
def test_a_missing_checkpoint_step_is_refused_before_anything_is_built(tmp_path):
  pre = tiny_config("bert", steps=2)
  pre.model.update(vocab_size=128)
  train.train_and_evaluate(pre, str(tmp_path / "pre"))
  c = load_config("finetune", "sst2")
  c.init.workdir = str(tmp_path / "pre")
  c.init.checkpoint = "999"
  c.data.tokenizer.path = "unused"
  no_compile(lambda: finetune.prepare(c), "config.init.checkpoint='999'", "has steps [2]")


def test_ablation_refuses_bad_task_data_before_the_first_pretraining(tmp_path):
  data = write_sst2(tmp_path / "sst2", n_train=8, n_dev=8, n_test=2)[0]
  plan = ablate.make_plan(config="configs/bert.py:tiny,runlocal", grid=["data.masking=token,span"], zipped=[],
                          sets=[], finetune=[f"sst2={data}"], finetune_config="configs/finetune.py", seeds=1,
                          fixed_eval="")
  ablate.check_data(plan)  # well-formed: passes
  os.remove(os.path.join(data, "dev.tsv"))
  no_compile(lambda: ablate.check_data(plan), "--finetune 'sst2'", "dev.tsv")


def test_an_unreadable_plan_is_named(tmp_path):
  (tmp_path / ablate.PLAN_FILE).write_text('{"cells": [')  # cut off by a kill
  plan = {"cells": []}
  no_compile(lambda: ablate.write_plan(plan, str(tmp_path)), str(tmp_path / ablate.PLAN_FILE), "unreadable")


def test_every_fine_tuning_task_answers_check_data():
  base = finetuning.FinetuneTask.check_data.__func__
  for cls in set(registry.FINETUNING_TASKS.values()) | {registry.task_class(load_config("finetune", "sst2"))}:
    assert cls.check_data.__func__ is not base, cls  # its own reading of its files, not the base's
  state.validate(load_config("finetune", "sst2"))
