"""launch/: the TPU VM launcher against a fake `gcloud` first on PATH (no network), the GPU and
SLURM scripts against fake `srun` / `scontrol`, and bert_jax.main's exit status, which the
relaunch loops rely on."""

import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU_VM = ROOT / "launch" / "tpu_vm.py"
JOB = ["--config=configs/electra.py:base", "--workdir=gs://bucket/electra_base", "--config.data.mask_rate=0.25"]

# A stand-in for gcloud: appends its arguments (one JSON list a line) to $FAKE_LOG and plays a TPU
# whose state lives in $FAKE_STATE: {"node", "qr", "runs": [outcome of each job run], "status",
# "qr_waits": describes that show a new queued resource WAITING_FOR_RESOURCES, "preempt_setups":
# set-ups during which the TPU is preempted}. Like gcloud, `ssh --worker=all` exits 0 even when a worker's command failed.
FAKE_GCLOUD = textwrap.dedent("""\
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as f:
      f.write(json.dumps(args) + "\\n")
    path = os.environ["FAKE_STATE"]
    st = json.load(open(path))
    opt = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}
    group, verb = args[2], args[3]
    rc, workers = 0, 2

    def not_found():
      sys.stderr.write("ERROR: (gcloud) NOT_FOUND: Resource 'projects/p/locations/z/nodes/x' was not found\\n")
      return 1

    if group == "tpu-vm":
      if verb == "describe":
        rc = not_found() if st["node"] is None else print(st["node"]) or 0
      elif verb == "create":
        st["node"] = "READY"
      elif verb == "delete":
        st["node"] = None
      elif verb == "ssh":
        cmd = opt["--command"]
        if st["node"] != "READY":
          sys.stderr.write("ssh: connect to host 10.0.0.2 port 22: Connection refused\\n")
          rc = 255
        elif "pip install" in cmd and st["preempt_setups"] > 0:  # preempted while being set up
          st["preempt_setups"] -= 1
          st["node"] = "PREEMPTED"
          rc = 255
        elif "bert_jax.main" in cmd:
          outcome = st["runs"].pop(0)
          if outcome == "preempt":  # the VM goes away mid-run: no status written
            st["node"] = "PREEMPTED"
            st["qr"] = st["qr"] and "SUSPENDED"
            st["status"] = ["missing"] * workers
            rc = 255
          else:
            st["status"] = {"ok": ["0", "0"], "incomplete": ["75", "75"], "fail": ["0", "1"]}[outcome]
        elif "bert_jax_run.status" in cmd:
          print("\\n".join(st["status"]))
    elif group == "queued-resources":
      if verb == "describe":
        if st["qr"] == "WAITING_FOR_RESOURCES":  # for "qr_waits" describes after each create
          st["waits_left"] -= 1
          if st["waits_left"] < 0:
            st["qr"], st["node"] = "ACTIVE", "READY"
        rc = not_found() if st["qr"] is None else print(st["qr"]) or 0
      elif verb == "create":
        st["qr"], st["waits_left"] = "WAITING_FOR_RESOURCES", st["qr_waits"]
      elif verb == "delete":
        st["qr"] = st["node"] = None
    json.dump(st, open(path, "w"))
    sys.exit(rc)
    """)


@pytest.fixture
def fake(tmp_path):
  """Puts the fake gcloud first on PATH; returns a helper to run launch/tpu_vm.py against it."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(f"#!{sys.executable}\n" + FAKE_GCLOUD)
  gcloud.chmod(0o755)
  log, state = tmp_path / "gcloud_calls.jsonl", tmp_path / "tpu_state.json"
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log),
             FAKE_STATE=str(state), TMPDIR=str(tmp_path))

  class Fake:
    def set_state(self, node=None, qr=None, runs=(), status=("0", "0"), qr_waits=0, preempt_setups=0):
      state.write_text(json.dumps({"node": node, "qr": qr, "runs": list(runs), "status": list(status),
                                   "qr_waits": qr_waits, "preempt_setups": preempt_setups}))
      log.write_text("")

    def launch(self, *args, dry_run=False):
      cmd = [sys.executable, str(TPU_VM), "--name=bert", "--zone=us-central2-b", "--poll-seconds=0"]
      cmd += ["--dry-run"] if dry_run else []
      return subprocess.run(cmd + list(args), env=env, capture_output=True, text=True, timeout=60)

    def calls(self) -> list[list[str]]:
      return [json.loads(line) for line in log.read_text().splitlines()]

    def state(self) -> dict:
      return json.loads(state.read_text())

  return Fake()


def _gcloud_lines(stdout: str) -> list[list[str]]:
  return [shlex.split(line)[1:] for line in stdout.splitlines() if line.startswith("gcloud ")]


def _verbs(calls) -> list[str]:
  """'create', 'ssh:setup', 'ssh:run', ... for a readable sequence of calls."""
  out = []
  for c in calls:
    verb = c[3]
    if verb == "ssh":
      command = next(a for a in c if a.startswith("--command="))
      verb += ":run" if "bert_jax.main" in command else ":status" if "status" in command else ":setup"
    out.append(("qr-" if c[2] == "queued-resources" else "") + verb)
  return out


CASES = {
    "create spot": (["create", "--accelerator-type=v4-32", "--spot"], {}),
    "create queued": (["--queued", "create", "--accelerator-type=v5litepod-16", "--spot", "--valid-until=6h"], {}),
    "setup": (["setup"], {"node": "READY"}),
    "run": (["run", "--", *JOB], {"node": "READY", "runs": ["ok"]}),
    "watch": (["watch", "--accelerator-type=v6e-8", "--spot", "--", *JOB], {"runs": ["ok"]}),
    "logs": (["logs", "--no-follow"], {"node": "READY"}),
    "delete": (["delete"], {"node": "READY"}),
    "delete queued": (["--queued", "delete"], {"qr": "ACTIVE", "node": "READY"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_prints_exactly_the_commands_that_run(fake, case):
  args, state = CASES[case]
  fake.set_state(**state)
  dry = fake.launch(*args, dry_run=True)
  assert dry.returncode == 0, dry.stderr
  assert fake.calls() == [], "a dry run called gcloud"
  real = fake.launch(*args)
  assert real.returncode == 0, real.stderr
  assert _gcloud_lines(dry.stdout) == fake.calls()
  assert len(fake.calls()) >= 1


def test_commands_use_gcloud_tpu_syntax(fake):
  fake.set_state()
  out = fake.launch("create", "--accelerator-type=v4-32", "--spot", dry_run=True).stdout
  assert "gcloud compute tpus tpu-vm create bert --zone=us-central2-b --accelerator-type=v4-32 " \
         "--version=tpu-ubuntu2204-base --spot" in out
  out = fake.launch("--queued", "create", "--accelerator-type=v5litepod-16", "--spot", dry_run=True).stdout
  assert "gcloud compute tpus queued-resources create bert --zone=us-central2-b --node-id=bert " \
         "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot" in out
  out = fake.launch("create", "--accelerator-type=v4-8", "--preemptible", "--version=v2-alpha", dry_run=True).stdout
  assert "--version=v2-alpha --preemptible" in out
  out = fake.launch("setup", dry_run=True).stdout
  lines = out.splitlines()
  tar = next(line for line in lines if line.startswith("tar "))
  assert "--exclude=.venv" in tar and f"-C {ROOT} ." in tar
  bundle = shlex.split(tar)[2]
  assert f"gcloud compute tpus tpu-vm scp {bundle} bert:bert_jax_src.tar.gz --zone=us-central2-b --worker=all" in out
  setup = shlex.split(lines[-1])
  assert setup[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert", "--zone=us-central2-b"]
  assert "--worker=all" in setup and "pip install -q -r requirements.txt 'jax[tpu]==" in setup[-1]
  out = fake.launch("--project=p1", "run", "--env=XLA_FLAGS=--xla_dump_to=/tmp/a b", "--", *JOB, dry_run=True)
  cmd = shlex.split(out.stdout.strip())
  assert cmd[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert", "--zone=us-central2-b",
                     "--project=p1", "--worker=all"]
  remote = cmd[9].removeprefix("--command=")
  assert "XLA_FLAGS='--xla_dump_to=/tmp/a b' .venv/bin/python -m bert_jax.main " + shlex.join(JOB) in remote
  assert "echo $rc > ~/bert_jax_run.status" in remote


def test_the_run_command_records_the_job_exit_status(tmp_path):
  """The shell command every worker runs, executed by bash here with a stand-in job: the job's
  exit status reaches the status file (through the log pipe) and the command's own status."""
  spec = importlib.util.spec_from_file_location("tpu_vm", TPU_VM)  # a script, not a package
  tpu_vm = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tpu_vm)
  home = tmp_path / "home"
  (home / "bert_jax" / ".venv" / "bin").mkdir(parents=True)
  python = home / "bert_jax" / ".venv" / "bin" / "python"
  args = tpu_vm.parser().parse_args(["--name=n", "--zone=z", "run"])
  command = tpu_vm.Tpu(args, tpu_vm.Gcloud(dry_run=True)).run_command(JOB)
  for code in (0, 75, 3):
    python.write_text(f'#!/bin/sh\necho "args: $*"\nexit {code}\n')
    python.chmod(0o755)
    r = subprocess.run(["bash", "-c", command], env=dict(os.environ, HOME=str(home)), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == code, r.stderr
    assert (home / "bert_jax_run.status").read_text().strip() == str(code)
    assert f"args: -m bert_jax.main {' '.join(JOB)}" in (home / "bert_jax_run.log").read_text()


def test_watch_recreates_a_preempted_spot_tpu_and_resumes(fake):
  fake.set_state(runs=["preempt", "ok"])
  r = fake.launch("watch", "--accelerator-type=v4-32", "--spot", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == [
      "describe", "create", "scp", "ssh:setup", "ssh:run", "ssh:status", "describe",  # preempted mid-run
      "describe", "delete", "create", "scp", "ssh:setup", "ssh:run", "ssh:status"]
  runs = [c for c in fake.calls() if "bert_jax.main" in " ".join(c)]
  assert runs[0] == runs[1]  # the same command again: it resumes from the workdir's checkpoints
  creates = [c for c in fake.calls() if c[3] == "create"]
  assert creates[0] == creates[1] and "--spot" in creates[0]
  assert "Interrupted (TPU PREEMPTED)" in r.stderr and "Run complete" in r.stderr
  assert fake.state()["runs"] == []


def test_watch_starts_over_when_the_tpu_is_preempted_during_setup(fake):
  fake.set_state(runs=["ok"], preempt_setups=1)
  r = fake.launch("watch", "--accelerator-type=v4-32", "--spot", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == [
      "describe", "create", "scp", "ssh:setup", "describe",  # PREEMPTED during set-up
      "describe", "delete", "create", "scp", "ssh:setup", "ssh:run", "ssh:status"]
  assert "TPU PREEMPTED during set-up" in r.stderr


def test_watch_recreates_a_suspended_queued_resource(fake):
  fake.set_state(runs=["preempt", "ok"], qr_waits=1)
  r = fake.launch("--queued", "watch", "--accelerator-type=v5p-8", "--spot", "--delete-when-done", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == [
      "qr-describe", "qr-create", "qr-describe", "qr-describe",  # WAITING_FOR_RESOURCES, then ACTIVE
      "scp", "ssh:setup", "ssh:run", "ssh:status", "qr-describe",  # SUSPENDED
      "qr-describe", "qr-delete", "qr-create", "qr-describe", "qr-describe",
      "scp", "ssh:setup", "ssh:run", "ssh:status", "qr-delete"]
  delete = [c for c in fake.calls() if c[3] == "delete"][0]
  assert "--force" in delete and "--quiet" in delete
  assert "--runtime-version=v2-alpha-tpuv5" in [c for c in fake.calls() if c[3] == "create"][0]
  assert fake.state()["qr"] is None  # --delete-when-done


def test_watch_reruns_a_run_that_stopped_early_on_the_same_tpu(fake):
  """Exit status 75 on the workers (preemption notice, halt_after_steps) with the TPU still up:
  run again, without re-creating or setting up. gcloud's own exit status (0) is not trusted."""
  fake.set_state(node="READY", runs=["incomplete", "ok"])
  r = fake.launch("watch", "--skip-setup", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == ["describe", "ssh:run", "ssh:status", "describe",
                                  "describe", "ssh:run", "ssh:status"]


def test_watch_stops_when_the_job_fails(fake):
  fake.set_state(node="READY", runs=["fail", "ok"])
  r = fake.launch("watch", "--", *JOB)
  assert r.returncode == 1, r.stderr
  assert _verbs(fake.calls()).count("ssh:run") == 1
  assert "The run failed (worker exit statuses ['0', '1'])" in r.stderr
  fake.set_state(node="READY", runs=["fail", "ok"])
  r = fake.launch("watch", "--max-failures=1", "--", *JOB)
  assert r.returncode == 0 and _verbs(fake.calls()).count("ssh:run") == 2, r.stderr


def test_watch_gives_up_after_max_interruptions(fake):
  fake.set_state(runs=["preempt", "preempt", "ok"])
  r = fake.launch("watch", "--accelerator-type=v4-8", "--max-interruptions=1", "--", *JOB)
  assert r.returncode != 0 and "Giving up after 1 interruptions" in r.stderr
  assert _verbs(fake.calls()).count("ssh:run") == 2


@pytest.mark.parametrize("args,message", [
    (["watch", "--accelerator-type=v4-8", "--", "--config=configs/bert.py:base", "--workdir=runs/x"], "gs://"),
    (["run", "--", "--workdir=gs://b/r"], "no --config="),
    (["run"], "Give the job after `--`"),
    (["create"], "--accelerator-type is needed"),
    (["create", "--accelerator-type=v9-8"], "pass --version"),
    (["--queued", "create", "--accelerator-type=v4-8", "--preemptible"], "--spot, not --preemptible"),
    (["delete", "--", *JOB], "takes no job"),
    (["run", "--env=1X=2", "--", *JOB], "--env=1X=2: expected KEY=VALUE"),
])
def test_bad_input_fails_before_any_gcloud_call(fake, args, message):
  fake.set_state(node="READY", runs=["ok"])
  r = fake.launch(*args)
  assert r.returncode == 2 and message in r.stderr, r.stderr
  assert fake.calls() == []


def test_gcloud_errors_other_than_not_found_stop_the_launcher(fake, tmp_path):
  fake.set_state()
  (tmp_path / "tpu_state.json").write_text("not json")  # the fake gcloud now fails with a traceback
  r = fake.launch("status")
  assert r.returncode == 2 and "describe bert" in r.stderr and "failed (exit status 1)" in r.stderr


# --- GPU: one host, several hosts, SLURM ------------------------------------------------------
def _gpu(*args, env=None):
  return subprocess.run(["bash", str(ROOT / "launch" / "gpu.sh"), *args], capture_output=True, text=True,
                        env=dict(os.environ, **(env or {})), timeout=30)


def test_gpu_script_dry_run_one_host_and_several():
  r = _gpu("--dry-run", "configs/bert.py:base", "runs/a b", "--config.model.dtype=bfloat16")
  assert r.returncode == 0, r.stderr
  assert shlex.split(r.stdout) == ["TF_CPP_MIN_LOG_LEVEL=2", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", ".venv/bin/python",
                                   "-m", "bert_jax.main", "--config=configs/bert.py:base", "--workdir=runs/a b",
                                   "--config.model.dtype=bfloat16"]
  r = _gpu("--dry-run", "--coordinator=host0:1234", "--num-processes=2", "--process-id=1", "configs/bert.py:base",
           "/shared/run")
  assert shlex.split(r.stdout)[:3] == ["JAX_COORDINATOR_ADDRESS=host0:1234", "JAX_NUM_PROCESSES=2", "JAX_PROCESS_ID=1"]
  r = _gpu("--coordinator=host0:1234", "configs/bert.py:base", "/shared/run")
  assert r.returncode == 2 and "--num-processes" in r.stderr


def test_gpu_script_runs_the_command_it_prints(tmp_path):
  fake_py = tmp_path / "python"
  fake_py.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\necho "JAX_PROCESS_ID=$JAX_PROCESS_ID"\n')
  fake_py.chmod(0o755)
  args = ["--coordinator=h:1", "--num-processes=2", "--process-id=1", "configs/bert.py:base", "runs/a b", "--config.x=1"]
  r = _gpu(*args, env={"PY": str(fake_py)})
  dry = shlex.split(_gpu("--dry-run", *args, env={"PY": str(fake_py)}).stdout)
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines() == dry[6:] + ["JAX_PROCESS_ID=1"]


@pytest.mark.parametrize("job_rc,requeued", [(0, False), (75, True), (1, False)])
def test_slurm_example_requeues_a_run_stopped_before_its_end(tmp_path, job_rc, requeued):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls"
  for name, rc in (("srun", job_rc), ("scontrol", 0)):
    (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit {rc}\n')
    (bin_dir / name).chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(ROOT),
             SLURM_JOB_ID="4242")
  r = subprocess.run(["bash", str(ROOT / "launch" / "slurm_gpu.sbatch"), "configs/bert.py:base", "/shared/run",
                      "--config.model.dtype=bfloat16"], env=env, capture_output=True, text=True, timeout=30)
  assert r.returncode == job_rc, r.stderr
  lines = calls.read_text().splitlines()
  assert lines[0] == "srun launch/gpu.sh configs/bert.py:base /shared/run --config.model.dtype=bfloat16"
  assert (lines[1:] == ["scontrol requeue 4242"]) == requeued
  header = (ROOT / "launch" / "slurm_gpu.sbatch").read_text()
  assert "#SBATCH --signal=TERM@" in header and "#SBATCH --requeue" in header


# --- bert_jax.main's exit status: what the relaunch loops rely on ---------------------------------
@pytest.mark.slow
def test_main_exit_status_drives_the_relaunch(tmp_path):
  """The same command twice: the first stops early (halt_after_steps, as a preemption would) and
  exits 75, the second resumes and completes with 0. TensorBoard holds the resolved config at
  step 0 and again at the resumed step."""
  from test_tensorboard import config_texts  # pylint: disable=g-import-not-at-top
  cmd = [sys.executable, "-m", "bert_jax.main", "--config=configs/bert.py:tiny,runlocal", f"--workdir={tmp_path}",
         "--config.data.source=synthetic", "--config.model.hidden_size=32", "--config.model.num_hidden_layers=1",
         "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64",
         "--config.model.vocab_size=128", "--config.model.max_position_embeddings=16",
         "--config.data.max_seq_length=16", "--config.data.max_predictions_per_seq=4",
         "--config.train.batch_size=8", "--config.train.num_steps=2", "--config.train.halt_after_steps=1",
         "--config.optimizer.warmup_steps=1", "--config.eval.every_steps=2", "--config.eval.num_batches=1",
         "--config.log.every_steps=1", "--config.checkpoint.every_steps=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert first.returncode == 75, first.stdout[-2000:] + first.stderr[-3000:]
  second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
  assert "Resumed from step 1" in second.stdout + second.stderr
  texts = config_texts(str(tmp_path / "tb"))
  assert [step for step, _ in texts] == [0, 1]
  assert texts[0][1]["train"]["halt_after_steps"] == 1 and texts[0][1]["data"]["source"] == "synthetic"
