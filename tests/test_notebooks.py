"""Every notebook in colab/ runs top to bottom (nbclient, a real kernel) with small parameters
and no cell error; the notebooks are stored without outputs.

The repository URL and the install cell come from one place, colab/notebooks.py (checked in sync
with every notebook and README's "Open in Colab" badges). The install cell itself runs here too, as
on Colab: in a throwaway venv that lacks bert_jax (its dependencies are this .venv's, visible through
a .pth), with the package index replaced by the checkout (REPO_URL = file://<checkout>, cloned as
on Colab; PIP_ARGS = --no-index with a folder of stub wheels: the jax-cuda12 plugin, and whatever
jax[tpu] asks for that this environment lacks, libtpu on a machine without it), on a faked CPU, GPU (an
`nvidia-smi` on PATH) and TPU (COLAB_TPU_ADDR) runtime: it installs bert_jax into the venv, asks pip
for jax[cuda12] / jax[tpu] at the pinned jax version and prints jax.devices().

The parameters cell (tag `parameters`) is followed by a cell setting the test's values, as
papermill does. The quickstart pretrains for a few steps into a temporary workdir, and the
fine-tuning notebook starts from that workdir on 64 SST-2 examples (../shared; skipped without).
Other notebooks (STANDALONE) run with their own small values; a new notebook must be listed.
"""

import importlib.metadata
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import zipfile

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, SHARED

_spec = importlib.util.spec_from_file_location("colab_notebooks", ROOT / "colab" / "notebooks.py")
colab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab)

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
    assert sum("install" in c.metadata.get("tags", []) for c in code) == 1, path.name


def install_cell(path: pathlib.Path) -> str:
  nb = nbformat.read(path, as_version=4)
  return next(c.source for c in nb.cells if "install" in c.metadata.get("tags", []))


def test_one_place_sets_the_repository_url_the_install_cell_and_the_badges():
  """colab/notebooks.py's REPO_URL is every notebook's and every badge's; the install cell is its
  INSTALL in every notebook (run `python colab/notebooks.py` after changing either)."""
  assert colab.sync(check=True) == []
  readme = (ROOT / "README.md").read_text()
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert f'REPO_URL = "{colab.REPO_URL}"' in params and "PIP_ARGS = []" in params, path.name
    assert install_cell(path) == colab.INSTALL.rstrip("\n"), path.name
    url = colab.colab_url(path.name)
    assert url.endswith(f"/blob/{colab.BRANCH}/colab/{path.name}")
    assert colab.badge(path.name) in nb.cells[0].source, path.name
    assert readme.count(colab.badge(path.name)) == 1, path.name
  assert "colab/notebooks.py" in readme
  assert "YOUR_ORG" not in colab.REPO_URL or "colab/notebooks.py" in readme


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


# ----------------------------------------------------------------------------------------------
# The install cell, run as on Colab with the package index replaced by the checkout.
# ----------------------------------------------------------------------------------------------
def _stub_wheel(folder: pathlib.Path, name: str, version: str, requires=(), extras=()) -> None:
  """An empty wheel that pip installs like the real one (metadata only)."""
  dist = f"{name.replace('-', '_')}-{version}"
  meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
  meta += [f"Provides-Extra: {e}" for e in extras] + [f"Requires-Dist: {r}" for r in requires]
  files = {f"{dist}.dist-info/METADATA": "\n".join(meta) + "\n",
           f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
  files[f"{dist}.dist-info/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{dist}.dist-info/RECORD"])
  with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
    for f, text in files.items():
      z.writestr(f, text)


def _missing_tpu_requirements() -> list[tuple[str, str]]:
  """(name, a version meeting jax's pin) of each jax[tpu] requirement not installed here."""
  from packaging.requirements import Requirement
  missing = []
  for text in importlib.metadata.requires("jax") or []:
    req = Requirement(text)
    if not (req.marker and req.marker.evaluate({"extra": "tpu"})) or req.marker.evaluate({"extra": ""}):
      continue
    try:
      importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
      pins = [s.version.removesuffix(".*") for s in req.specifier if s.operator in ("==", ">=", "~=")]
      assert pins, f"jax[tpu] asks for {req}: no version to stub"
      missing.append((req.name, pins[0]))
  return missing


@pytest.fixture(scope="module")
def colab_like(tmp_path_factory):
  """(python of a throwaway venv without bert_jax, its site-packages, the environment, a runner of
  the install cell). The venv sees this .venv's packages except bert_jax through a .pth."""
  tmp = tmp_path_factory.mktemp("colab")
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
  python = tmp / "venv" / "bin" / "python"
  site = pathlib.Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
  deps = tmp / "deps"  # this .venv's site-packages without bert_jax (dist-info, editable finder)
  deps.mkdir()
  for entry in pathlib.Path(sysconfig.get_paths()["purelib"]).iterdir():
    if "bert_jax" not in entry.name and not entry.name.endswith(".pth"):
      (deps / entry.name).symlink_to(entry)
  (site / "dev_deps.pth").write_text(f"{deps}\n")
  wheels = tmp / "wheels"  # the CUDA plugin's stubs (jax[cuda12] asks for them)
  wheels.mkdir()
  jax_version = importlib.metadata.version("jax")
  _stub_wheel(wheels, "jax-cuda12-plugin", jax_version, [f"jax-cuda12-pjrt=={jax_version}"], ["with-cuda"])
  _stub_wheel(wheels, "jax-cuda12-pjrt", jax_version)
  for name, version in _missing_tpu_requirements():
    _stub_wheel(wheels, name, version)
  fake_bin = tmp / "fake_bin"
  fake_bin.mkdir()
  (fake_bin / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA T4 (fake)'\n")
  (fake_bin / "nvidia-smi").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "COLAB_"))}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_NO_CACHE_DIR="1")
  cell = install_cell(ROOT / "colab" / "bert_jax_quickstart.ipynb")
  (tmp / "content").mkdir()  # the notebook's working directory, as Colab's /content

  def run(runtime: str) -> subprocess.CompletedProcess:
    e = dict(env)
    if runtime == "gpu":
      e["PATH"] = f"{fake_bin}:{e['PATH']}"
    if runtime == "tpu":
      e["COLAB_TPU_ADDR"] = "10.0.0.2:8470"
    params = (f"REPO_URL = {f'file://{ROOT}'!r}\n"
              f"PIP_ARGS = {['--no-index', '--find-links', str(wheels), '--no-build-isolation']!r}\n")
    return subprocess.run([str(python), "-c", params + cell], cwd=tmp / "content", env=e, capture_output=True,
                          text=True, timeout=900)

  return python, site, run, jax_version, tmp / "content"


@pytest.mark.slow
def test_the_install_cell_installs_bert_jax_and_the_runtimes_jax_build(colab_like):
  python, site, run, jax_version, content = colab_like
  assert subprocess.run([str(python), "-c", "import bert_jax"], cwd=content, capture_output=True).returncode != 0
  for path in NOTEBOOKS:  # the cell run below is every notebook's
    assert install_cell(path) == install_cell(ROOT / "colab" / "bert_jax_quickstart.ipynb"), path.name
  # CPU runtime: bert_jax cloned from REPO_URL and pip-installed into the venv; no jax build asked for.
  r = run("cpu")
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "pip install ./bert_jax_repo" in r.stdout and "runtime: pip install" not in r.stdout
  assert f"from {site / 'bert_jax'}" in r.stdout, r.stdout
  assert f"jax {jax_version} devices: [CpuDevice(id=0)]" in r.stdout, r.stdout
  assert any(p.name.startswith("bert_jax-") and p.name.endswith(".dist-info") for p in site.iterdir())
  # GPU runtime (bert_jax installed now): jax[cuda12] at the pinned version, its plugin installed.
  r = run("gpu")
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert f"GPU runtime: pip install jax[cuda12]=={jax_version}" in r.stdout and "pip install bert_jax" not in r.stdout
  assert (site / f"jax_cuda12_plugin-{jax_version}.dist-info").is_dir()
  assert "devices: [CpuDevice(id=0)]" in r.stdout and "has a GPU but JAX runs on the CPU" in r.stdout
  # TPU runtime: jax[tpu] at the pinned version (libtpu installed here, or its stub).
  r = run("tpu")
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert f"TPU runtime: pip install jax[tpu]=={jax_version}" in r.stdout and "has a TPU but JAX runs" in r.stdout
