"""Every notebook in colab/ runs top to bottom (nbclient, a real kernel) with small parameters
and no cell error; the notebooks are stored without outputs.

The parameters cell (tag `parameters`) is followed by a cell setting the test's values, as
papermill does. The quickstart pretrains for a few steps into a temporary workdir, and the
fine-tuning notebook starts from that workdir on 64 SST-2 examples (../shared; skipped without).
Other notebooks (STANDALONE) run with their own small values; a new notebook must be listed.
"""

import json
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, SHARED

NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
# Notebooks run by test_notebooks_run_with_small_parameters (the fine-tuning one starts from the
# quickstart's workdir), and the others with their small values (a function of tmp_path).
CHAINED = ("bert_jax_quickstart.ipynb", "bert_jax_finetune.ipynb")
SST2 = SHARED / "data" / "glue" / "SST-2"
STANDALONE = {
    "ablation.ipynb": lambda tmp: {
        "WORKDIR": str(tmp / "ablation"), "GRID": ["data.mask_rate=0.2"], "DATA_DIR": str(SST2),
        "SEEDS": 1, "STEPS": 10, "TRAIN_EXAMPLES": 32, "EPOCHS": 1, "MAX_SEQ_LENGTH": 32},
}


def test_notebooks_are_stored_without_outputs_and_have_a_parameters_cell():
  assert {p.name for p in NOTEBOOKS} >= {"bert_jax_quickstart.ipynb", "bert_jax_finetune.ipynb"}
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, path.name


def test_every_notebook_is_executed_by_a_test():
  assert {p.name for p in NOTEBOOKS} <= set(CHAINED) | set(STANDALONE)


def execute(path: pathlib.Path, params: dict, workdir: pathlib.Path) -> nbformat.NotebookNode:
  """Runs the notebook with `params` injected after its parameters cell; raises on a cell error."""
  nb = nbformat.read(path, as_version=4)
  at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
      "# Injected by tests/test_notebooks.py\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())))
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(ROOT)}}).execute()
  nbformat.write(nb, workdir / f"executed_{path.name}")  # kept for a look when a later assert fails
  return nb


def outputs(nb) -> str:
  return "\n".join(o.get("text", "") if o.output_type == "stream" else json.dumps(o.get("data", {}))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_notebooks_run_with_small_parameters(tmp_path, monkeypatch):
  # The kernel inherits this environment: one CPU device, as in a Colab CPU runtime.
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  minilm = SHARED / "weights" / "all-MiniLM-L6-v2"
  sst2 = SST2
  pre = tmp_path / "quickstart"
  nb = execute(ROOT / "colab" / "bert_jax_quickstart.ipynb",
               {"STEPS": 20, "WORKDIR": str(pre), "HF_MODEL": str(minilm) if minilm.exists() else ""},
               tmp_path)
  text = outputs(nb)
  assert "done at step 20" in text and "[MASK] 2:" in text
  assert "cosine similarity of 'apple' in context" in text and "image/png" in text
  assert (pre / "checkpoints").is_dir() and any((pre / "tb").rglob("events.out.tfevents.*"))
  if minilm.exists():
    assert (pre / "apple.png").stat().st_size > 1000
  if not sst2.exists():
    pytest.skip(f"{sst2} is absent: the fine-tuning notebook needs a GLUE task folder")
  ft = tmp_path / "finetune"
  nb = execute(ROOT / "colab" / "bert_jax_finetune.ipynb",
               {"START": str(pre), "DATA_DIR": str(sst2), "TRAIN_EXAMPLES": 64, "EPOCHS": 1,
                "MAX_SEQ_LENGTH": 32, "WORKDIR": str(ft)}, tmp_path)
  results = json.loads((ft / "results.json").read_text())
  assert results["start"] == str(pre) and results["train_examples"] == 64
  assert "median:" in outputs(nb)
  assert (ft / "hf_classifier" / "config.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STANDALONE))
def test_standalone_notebook_runs_with_small_parameters(name, tmp_path, monkeypatch):
  if not (ROOT / "colab" / name).exists():
    pytest.skip(f"colab/{name} is not in this checkout")
  if not SST2.exists():
    pytest.skip(f"{SST2} is absent")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  execute(ROOT / "colab" / name, STANDALONE[name](tmp_path), tmp_path)
