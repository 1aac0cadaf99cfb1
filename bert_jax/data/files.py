"""A whole task file (GLUE tsv, SQuAD json, CoNLL), local or gs://, read as UTF-8 text.

The task-data modules (glue, squad, conll) import nothing heavy at the top, so that the tasks'
checks run before TensorFlow loads; TensorFlow (for tf.io.gfile) is imported on the first read.
"""

from __future__ import annotations


def read_text(path: str, what: str) -> str:
  """The text of `path` (a leading BOM dropped); one-line errors naming the file and the fix when it
  is missing or is not UTF-8 text. `what`: what is expected there, for the message."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} does not exist; expected {what} there.")
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); expected {what} there: "
                     "fix the path or re-encode the file as UTF-8.") from None
  return text[1:] if text.startswith("\ufeff") else text
