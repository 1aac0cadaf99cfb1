r"""The one place that sets the repository URL of the Colab notebooks, and their shared install cell.

  python colab/notebooks.py            # after editing REPO_URL (or INSTALL): rewrites colab/*.ipynb and
                                       # README.md's "Open in Colab" badges from this file
  python colab/notebooks.py --check    # exit status 1 when a notebook or badge differs (a test runs it)

REPO_URL is what every notebook's install cell clones (its `REPO_URL = ...` line in the parameters
cell) and what the "Open in Colab" badges point at (colab.research.google.com/github/<owner>/<repo>/
blob/<BRANCH>/colab/<notebook>): README.md has one badge line per notebook, and each notebook's
first cell has its own. A fork sets its URL here and runs the command once.

The install cell (INSTALL, the cell tagged `install`) installs bert_jax from REPO_URL unless it is
importable (a checkout, a second run), then the jax build of the runtime it finds without importing
jax (as JAX's own hardware detection does): `jax[tpu]` on a TPU runtime, `jax[cuda12]` on a GPU
runtime, the CPU build otherwise, at the version bert_jax pins; and prints `jax.devices()`. REPO_URL
may be a local directory (installed from there, no clone) and PIP_ARGS adds pip arguments, which is
how tests/test_notebooks.py runs this cell with no network (a throwaway venv, --no-index).
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

REPO_URL = "https://github.com/YOUR_ORG/bert_jax"
BRANCH = "main"

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

INSTALL = '''\
# Install bert_jax from REPO_URL (skipped where it is importable: a checkout, a second run), then the
# jax build of this runtime: jax[tpu] on a TPU, jax[cuda12] on a GPU, the CPU build otherwise.
import glob
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys


def runtime_accelerator() -> str:
  """tpu | gpu | cpu, found as JAX's hardware detection does (without importing jax)."""
  tpu_ids = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")  # v2/v3 ... v7
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    device = os.path.join(os.path.dirname(vendor), "device")
    if open(vendor).read().strip() == "0x1ae0" and open(device).read().strip() in tpu_ids:
      return "tpu"
  if os.environ.get("COLAB_TPU_ADDR"):
    return "tpu"
  if any(os.path.exists(d) for d in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")) or (
      shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0):
    return "gpu"
  return "cpu"


pip = [sys.executable, "-m", "pip", "install", "-q", *PIP_ARGS]
if importlib.util.find_spec("bert_jax") is None:
  source = REPO_URL if os.path.isdir(REPO_URL) else "./bert_jax_repo"
  if not os.path.isdir(source):
    subprocess.run(["git", "clone", "-q", "--depth=1", REPO_URL, source], check=True)
  print(f"pip install {source} (a few minutes)")
  subprocess.run(pip + [os.path.abspath(source)], check=True)
  importlib.invalidate_caches()
ACCELERATOR = runtime_accelerator()
if ACCELERATOR != "cpu":  # nothing to do when the runtime's build is there already
  jax_build = f"jax[{dict(gpu='cuda12', tpu='tpu')[ACCELERATOR]}]=={importlib.metadata.version('jax')}"
  print(f"{ACCELERATOR.upper()} runtime: pip install {jax_build}")
  subprocess.run(pip + [jax_build], check=True)
import bert_jax
import jax

print("bert_jax", bert_jax.__version__, "from", os.path.dirname(bert_jax.__file__))
print("jax", jax.__version__, "devices:", jax.devices())
if ACCELERATOR != "cpu" and jax.default_backend() == "cpu":
  print(f"This runtime has a {ACCELERATOR.upper()} but JAX runs on the CPU (jax was imported before this "
        "cell installed its build): Runtime > Restart session, then run the notebook again.")
'''


def colab_url(name: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
  """The address that opens colab/<name> of the repository in Colab."""
  m = re.match(r"^https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?$", repo_url)
  if not m:
    raise ValueError(f"REPO_URL={repo_url!r}: the Open in Colab badges need a https://github.com/<owner>/<repo> URL.")
  return f"https://colab.research.google.com/github/{m.group(1)}/{m.group(2)}/blob/{branch}/colab/{name}"


def badge(name: str) -> str:
  """The Markdown badge of colab/<name>."""
  return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(name)})"


def notebooks() -> list[pathlib.Path]:
  return sorted((ROOT / "colab").glob("*.ipynb"))


def _source(cell) -> str:
  return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _set_source(cell, text: str) -> None:
  cell["source"] = text.splitlines(keepends=True)


def synced_notebook(path: pathlib.Path) -> str:
  """The notebook's file text with its REPO_URL line, install cell and badge from this file."""
  nb = json.loads(path.read_text())
  cells = nb["cells"]
  params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
  install = [c for c in cells if "install" in c.get("metadata", {}).get("tags", [])]
  if len(params) != 1 or len(install) != 1:
    raise ValueError(f"{path}: needs one cell tagged `parameters` and one tagged `install` "
                     f"(found {len(params)} and {len(install)}).")
  text = _source(params[0])
  line = f'REPO_URL = "{REPO_URL}"  # set in colab/notebooks.py (python colab/notebooks.py)'
  if not re.search(r"^REPO_URL = .*$", text, flags=re.M):
    raise ValueError(f"{path}: the parameters cell has no `REPO_URL = ...` line.")
  _set_source(params[0], re.sub(r"^REPO_URL = .*$", line, text, count=1, flags=re.M))
  _set_source(install[0], INSTALL.rstrip("\n"))
  title = _source(cells[0]).splitlines()
  rest = title[1:]
  if len(rest) >= 2 and rest[0] == "" and "colab-badge.svg" in rest[1]:
    rest = rest[2:]
  _set_source(cells[0], "\n".join([title[0], "", badge(path.name), *rest]))
  return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def synced_readme(text: str) -> str:
  """README.md with each notebook's badge line from this file (the lines holding the badge image
  and colab/<name>)."""
  for path in notebooks():
    pattern = re.compile(rf"^(.*?)\[!\[Open In Colab\]\([^)]*\)\]\([^)]*colab/{re.escape(path.name)}\)", re.M)
    if not pattern.search(text):
      raise ValueError(f"README.md has no Open in Colab badge line for colab/{path.name}.")
    text = pattern.sub(lambda m: m.group(1) + badge(path.name), text)
  return text


def sync(check: bool = False) -> list[str]:
  """Rewrites (or with check, only compares) the notebooks and README.md; returns what differs."""
  differ = []
  for path in notebooks():
    want = synced_notebook(path)
    if path.read_text() != want:
      differ.append(str(path.relative_to(ROOT)))
      if not check:
        path.write_text(want)
  readme = README.read_text()
  want = synced_readme(readme)
  if readme != want:
    differ.append("README.md")
    if not check:
      README.write_text(want)
  return differ


if __name__ == "__main__":
  check = "--check" in sys.argv[1:]
  changed = sync(check)
  if check and changed:
    print(f"Not in sync with colab/notebooks.py: {', '.join(changed)}; run python colab/notebooks.py.")
    sys.exit(1)
  print(("Differ: " if check else "Rewritten: ") + (", ".join(changed) or "nothing"))
