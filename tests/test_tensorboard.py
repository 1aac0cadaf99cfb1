"""TensorBoard: the run's resolved config is written as a text summary (the end-to-end check, a
real run through bert_jax.main, is tests/test_launch.py::test_main_exit_status_drives_the_relaunch)."""

import glob
import json
import os

from train_testlib import tiny_config


def text_summaries(tb_dir: str) -> list[tuple[int, str, str]]:
  """(step, tag, text) of every text summary in the event files under tb_dir."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # only to read the event files
  out = []
  for path in sorted(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.metadata.plugin_data.plugin_name == "text":
          out.append((event.step, v.tag, v.tensor.string_val[0].decode()))
  return out


def config_texts(tb_dir: str) -> list[tuple[int, dict]]:
  """(step, config dict) of the config text summaries; each must be a markdown code block."""
  out = []
  for step, tag, text in text_summaries(tb_dir):
    if tag.split("/")[0] == "config":
      assert all(line.startswith("    ") for line in text.splitlines()), text[:200]
      out.append((step, json.loads(text)))
  return out


def test_config_text_summary_is_the_resolved_config(tmp_path):
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  c = tiny_config("bert", steps=1)
  c.data.mask_rate = 0.2  # an override shows up resolved, next to every default
  writer = train._summary_writer(str(tmp_path / "tb"))  # pylint: disable=protected-access  # as the loop opens it
  train.write_config_summary(writer, c, 0)
  writer.close()
  texts = config_texts(str(tmp_path / "tb"))
  assert [step for step, _ in texts] == [0]
  assert texts[0][1] == json.loads(c.to_json())
  assert texts[0][1]["data"]["mask_rate"] == 0.2 and texts[0][1]["optimizer"]["name"] == c.optimizer.name
