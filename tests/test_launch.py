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
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU_VM = ROOT / "launch" / "tpu_vm.py"
JOB = ["--config=configs/electra.py:base", "--workdir=gs://bucket/electra_base", "--config.data.mask_rate=0.25"]

# A stand-in for gcloud: appends its arguments (one JSON list a line) to $FAKE_LOG and plays a TPU
# of two workers whose state lives in $FAKE_STATE: {"node", "qr", "runs": [outcome of each job
# started], "job": the job started last, "run_polls": probes that find a job still running before
# its outcome shows, "qr_waits": describes that show a new queued resource WAITING_FOR_RESOURCES,
# "preempt_setups": set-ups during which the TPU is preempted}. It tells the launcher's remote
# commands apart as a worker's shell would run them: set-up (pip install), start (setsid), probe
# (the exit-status file), stop (kill), logs (tail). Like gcloud, `ssh --worker=all` exits 0 even
# when a worker's command failed.
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
    LAST = {"ok": "eval @ 1000000: done", "incomplete": "Preemption notice: saved step 5000",
            "fail": "ValueError: tokenizer.path does not exist", "lost": "step 4200"}

    def not_found():
      sys.stderr.write("ERROR: (gcloud) NOT_FOUND: Resource 'projects/p/locations/z/nodes/x' was not found\\n")
      return 1

    def report(states, last=""):
      for i, s in enumerate(states):
        print(f"bert_jax_job t1v-n-{i} {s} {last}".rstrip())

    if group == "tpu-vm":
      if verb == "describe":
        rc = not_found() if st["node"] is None else print(st["node"]) or 0
      elif verb == "create":
        st["node"] = "READY"
      elif verb == "delete":
        st["node"] = None
      elif verb == "ssh":
        cmd = opt["--command"]
        job = st.get("job")
        if st["node"] != "READY":
          sys.stderr.write("ssh: connect to host 10.0.0.2 port 22: Connection refused\\n")
          rc = 255
        elif "pip install" in cmd and st["preempt_setups"] > 0:  # preempted while being set up
          st["preempt_setups"] -= 1
          st["node"] = "PREEMPTED"
          rc = 255
        elif "setsid" in cmd:  # start
          if job and job["polls"] > 0:
            report(["busy"] * workers, "4321")
          else:
            st["job"] = {"outcome": st["runs"].pop(0), "polls": st["run_polls"], "cmd": cmd}
            report(["started"] * workers, "4321")
        elif "kill -TERM" in cmd:  # stop
          if job and job["polls"] > 0:
            job["polls"], job["outcome"] = 0, "incomplete"
            report(["stopping"] * workers, "4321")
        elif "bert_jax_run.status" in cmd:  # probe
          if job is None:
            report(["none"] * workers)
          elif job["polls"] > 0:
            job["polls"] -= 1
            report(["running"] * workers, "step 100: mlm 0.05")
          elif job["outcome"] == "preempt":  # the VM went away mid-run
            st["node"] = "PREEMPTED"
            st["qr"] = st["qr"] and "SUSPENDED"
            sys.stderr.write("ssh: connect to host 10.0.0.2 port 22: Connection refused\\n")
            rc = 255
          else:
            o = job["outcome"]
            states = {"ok": ["exited:0"] * 2, "incomplete": ["exited:75"] * 2, "fail": ["exited:0", "exited:1"],
                      "lost": ["lost"] * 2}[o]
            report(states, LAST[o])
        elif "tail" in cmd:  # logs
          print("step 100: mlm 0.05")
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
    def set_state(self, node=None, qr=None, runs=(), qr_waits=0, preempt_setups=0, run_polls=0, job=None):
      state.write_text(json.dumps({"node": node, "qr": qr, "runs": list(runs), "job": job, "run_polls": run_polls,
                                   "qr_waits": qr_waits, "preempt_setups": preempt_setups}))
      log.write_text("")

    def launch(self, *args, dry_run=False, zone="us-central2-b"):
      cmd = [sys.executable, str(TPU_VM), "--name=bert", f"--zone={zone}", "--poll-seconds=0"]
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
  """'create', 'ssh:setup', 'ssh:start', 'ssh:probe', ... for a readable sequence of calls."""
  out = []
  for c in calls:
    verb = c[3]
    if verb == "ssh":
      command = next(a for a in c if a.startswith("--command="))
      verb += (":start" if "setsid" in command else ":stop" if "kill -TERM" in command
               else ":probe" if "bert_jax_run.status" in command else ":logs" if "tail" in command else ":setup")
    out.append(("qr-" if c[2] == "queued-resources" else "") + verb)
  return out


def _load_tpu_vm():
  spec = importlib.util.spec_from_file_location("tpu_vm", TPU_VM)  # a script, not a package
  tpu_vm = importlib.util.module_from_spec(spec)
  sys.modules["tpu_vm"] = tpu_vm  # dataclasses look their module up there
  spec.loader.exec_module(tpu_vm)
  return tpu_vm


# Every example pairs a zone with an accelerator type it offers (launch/tpu_vm.py ZONES).
CASES = {
    "create spot": ([("us-central2-b", "create", "--accelerator-type=v4-32", "--spot")], {}),
    "create queued": ([("us-west4-a", "--queued", "create", "--accelerator-type=v5litepod-16", "--spot",
                        "--valid-until=6h")], {}),
    "setup": ([("us-central2-b", "setup")], {"node": "READY"}),
    "run": ([("us-central2-b", "run", "--", *JOB)], {"node": "READY", "runs": ["ok"]}),
    "watch": ([("us-east5-b", "watch", "--accelerator-type=v6e-8", "--spot", "--", *JOB)], {"runs": ["ok"]}),
    "logs": ([("us-central2-b", "logs")], {"node": "READY"}),
    "logs no follow": ([("us-central2-b", "logs", "--no-follow")], {"node": "READY"}),
    "status": ([("us-central2-b", "status")], {"node": "READY"}),
    "stop": ([("us-central2-b", "stop")], {"node": "READY"}),
    "delete": ([("us-central2-b", "delete")], {"node": "READY"}),
    "delete queued": ([("us-east5-a", "--queued", "delete")], {"qr": "ACTIVE", "node": "READY"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_prints_exactly_the_commands_that_run(fake, case):
  [(zone, *args)], state = CASES[case]
  fake.set_state(**state)
  dry = fake.launch(*args, dry_run=True, zone=zone)
  assert dry.returncode == 0, dry.stderr
  assert fake.calls() == [], "a dry run called gcloud"
  real = fake.launch(*args, zone=zone)
  assert real.returncode == 0, real.stderr
  assert _gcloud_lines(dry.stdout) == fake.calls()
  assert len(fake.calls()) >= 1
  assert "Warning" not in dry.stderr + real.stderr


def test_commands_use_gcloud_tpu_syntax(fake):
  fake.set_state()
  out = fake.launch("create", "--accelerator-type=v4-32", "--spot", dry_run=True).stdout
  assert "gcloud compute tpus tpu-vm create bert --zone=us-central2-b --accelerator-type=v4-32 " \
         "--version=tpu-ubuntu2204-base --spot" in out
  out = fake.launch("--queued", "create", "--accelerator-type=v5litepod-16", "--spot", dry_run=True,
                    zone="us-west4-a").stdout
  assert "gcloud compute tpus queued-resources create bert --zone=us-west4-a --node-id=bert " \
         "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot" in out
  out = fake.launch("create", "--accelerator-type=v4-8", "--preemptible", "--version=v2-alpha", dry_run=True).stdout
  assert "--version=v2-alpha --preemptible" in out
  out = fake.launch("setup", dry_run=True).stdout
  lines = out.splitlines()
  tar = next(line for line in lines if line.startswith("tar "))
  assert "--exclude=.venv*" in shlex.split(tar) and f"-C {ROOT} ." in tar
  bundle = shlex.split(tar)[2]
  assert f"gcloud compute tpus tpu-vm scp {bundle} bert:bert_jax_src.tar.gz --zone=us-central2-b --worker=all" in out
  setup = shlex.split(lines[-1])
  assert setup[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert", "--zone=us-central2-b"]
  assert "--worker=all" in setup
  assert "pip install -q -c constraints.txt -r requirements.txt 'jax[tpu]==" in setup[-1]
  assert ".venv/bin/pip install -q --no-deps --force-reinstall ." in setup[-1]  # the package itself
  out = fake.launch("--project=p1", "run", "--env=XLA_FLAGS=--xla_dump_to=/tmp/a b", "--", *JOB, dry_run=True)
  cmd = shlex.split(out.stdout.strip())
  assert cmd[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert", "--zone=us-central2-b",
                     "--project=p1", "--worker=all"]
  remote = cmd[9].removeprefix("--command=")
  assert "setsid nohup bash -c" in remote and "> /dev/null 2>&1 < /dev/null &" in remote
  wrapper = shlex.split(remote.split("setsid nohup bash -c ", 1)[1])[0]
  assert "XLA_FLAGS='--xla_dump_to=/tmp/a b' .venv/bin/bert-jax-train " + shlex.join(JOB) in wrapper
  assert "echo $rc > ~/bert_jax_run.status.tmp" in wrapper


def test_a_zone_that_does_not_offer_the_accelerator_is_warned_about(fake):
  fake.set_state()
  r = fake.launch("create", "--accelerator-type=v5litepod-16", dry_run=True)  # us-central2-b: v4 only
  assert r.returncode == 0 and "v5litepod-16 is not offered in us-central2-b" in r.stderr
  assert "us-west4-a" in r.stderr
  tpu_vm = _load_tpu_vm()
  zones = dict(tpu_vm.ZONES)
  assert zones["v4"] == ("us-central2-b",) and "us-west4-a" in zones["v5litepod"]
  assert "us-east5-a" in zones["v5p"] and "us-east5-b" in zones["v6e"]


def _run_on_a_worker(tmp_path, script_body: str, *train_args, wait=True, **popen):
  """The start command a worker runs, executed by bash here with HOME=tmp and a stand-in
  `.venv/bin/bert-jax-train`; returns (home, the finished start process)."""
  tpu_vm = _load_tpu_vm()
  home = tmp_path / "home"
  (home / "bert_jax" / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
  job = home / "bert_jax" / ".venv" / "bin" / "bert-jax-train"
  job.write_text("#!/bin/bash\n" + script_body)
  job.chmod(0o755)
  args = tpu_vm.parser().parse_args(["--name=n", "--zone=z", "run"])
  tpu = tpu_vm.Tpu(args, tpu_vm.Gcloud(dry_run=True))
  env = dict(os.environ, HOME=str(home), COLUMNS="80")  # a terminal's width: ps must not cut the command there
  start = subprocess.run(["bash", "-c", tpu.start_command(list(train_args or JOB))], env=env, capture_output=True,
                         text=True, timeout=30, **popen)
  probe = lambda: tpu_vm.parse_reports(subprocess.run(  # noqa: E731
      ["bash", "-c", tpu_vm.probe_command()], env=env, capture_output=True, text=True, timeout=30).stdout)[0]
  if wait:
    for _ in range(200):
      if probe().state != "running":
        break
      time.sleep(0.1)
  return home, start, probe, tpu_vm


@pytest.mark.parametrize("code", [0, 75, 3])
def test_the_start_command_records_the_job_exit_status(tmp_path, code):
  """The job's exit status reaches the status file, its output the log, between the launcher's lines."""
  home, start, probe, tpu_vm = _run_on_a_worker(tmp_path, f'echo "args: $*"\necho "last words {code}"\nexit {code}\n')
  assert start.returncode == 0, start.stderr
  started = tpu_vm.parse_reports(start.stdout)
  assert [r.state for r in started] == ["started"] and started[0].last.isdigit()
  assert (home / "bert_jax_run.status").read_text().strip() == str(code)
  log = (home / "bert_jax_run.log").read_text().splitlines()
  assert f"args: {' '.join(JOB)}" in log and log[0].startswith("[bert_jax] job started ")
  assert log[-1].startswith(f"[bert_jax] job exited with status {code} ")
  r = probe()
  assert (r.state, r.exit_status, r.last) == (f"exited:{code}", code, f"last words {code}")


def test_the_job_outlives_the_ssh_session_and_stop_lets_it_save(tmp_path):
  """The start command returns at once; the job runs in a session of its own, so a hang-up or
  SIGKILL of the SSH session's process group does not reach it. `stop` sends SIGTERM to the job's
  process group: a job that saves on TERM exits 75 and the status is still written."""
  body = ('trap \'echo "saving at step 7"; exit 75\' TERM\n'
          'echo "step 1"\nfor i in $(seq 300); do sleep 0.1; done\necho "ran to the end"\n')
  t0 = time.monotonic()
  home, start, probe, tpu_vm = _run_on_a_worker(tmp_path, body, wait=False, start_new_session=True)
  assert time.monotonic() - t0 < 15 and start.returncode == 0, start.stderr
  pid = int((home / "bert_jax_run.pid").read_text())
  assert os.getsid(pid) == pid != os.getsid(0)  # its own session, not the caller's
  assert probe().state == "running"
  env = dict(os.environ, HOME=str(home), COLUMNS="80")
  stop = subprocess.run(["bash", "-c", tpu_vm.stop_command()], env=env, capture_output=True, text=True, timeout=30)
  assert tpu_vm.parse_reports(stop.stdout)[0].state == "stopping"
  for _ in range(200):
    if probe().state != "running":
      break
    time.sleep(0.1)
  r = probe()
  assert (r.state, r.last) == ("exited:75", "saving at step 7"), (home / "bert_jax_run.log").read_text()
  assert "ran to the end" not in (home / "bert_jax_run.log").read_text()


def test_probe_tells_a_lost_job_from_one_never_started(tmp_path):
  tpu_vm = _load_tpu_vm()
  home = tmp_path / "home"
  home.mkdir()
  env = dict(os.environ, HOME=str(home))
  probe = lambda: tpu_vm.parse_reports(subprocess.run(  # noqa: E731
      ["bash", "-c", tpu_vm.probe_command()], env=env, capture_output=True, text=True, timeout=30).stdout)[0]
  assert probe().state == "none"
  (home / "bert_jax_run.pid").write_text(str(os.getpid()))  # alive, but not a bert-jax-train process
  (home / "bert_jax_run.log").write_text("[bert_jax] job started\nstep 4200\n")
  r = probe()
  assert (r.state, r.last) == ("lost", "step 4200")


def test_run_returns_once_started_and_refuses_a_second_job(fake):
  fake.set_state(node="READY", runs=["ok", "ok"], run_polls=5)
  r = fake.launch("run", "--", *JOB)
  assert r.returncode == 0 and "Started on 2 worker(s), detached" in r.stderr, r.stderr
  assert _verbs(fake.calls()) == ["ssh:start"]
  r = fake.launch("run", "--", *JOB)
  assert r.returncode == 2 and "a job is running already on t1v-n-0, t1v-n-1" in r.stderr
  r = fake.launch("status")
  assert r.stdout.splitlines() == ["READY", "t1v-n-0: running  step 100: mlm 0.05", "t1v-n-1: running  step 100: mlm 0.05"]
  r = fake.launch("stop")
  assert r.returncode == 0 and fake.state()["job"]["outcome"] == "incomplete"


def test_watch_recreates_a_preempted_spot_tpu_and_resumes(fake):
  fake.set_state(runs=["preempt", "ok"], run_polls=2)
  r = fake.launch("watch", "--accelerator-type=v4-32", "--spot", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == [
      "describe", "create", "scp", "ssh:setup", "ssh:start", "ssh:probe", "ssh:probe",  # running, running
      "ssh:probe", "describe",  # ssh refused: the TPU is PREEMPTED
      "describe", "delete", "create", "scp", "ssh:setup", "ssh:start", "ssh:probe", "ssh:probe", "ssh:probe"]
  starts = [c for c in fake.calls() if _verbs([c]) == ["ssh:start"]]
  assert starts[0] == starts[1]  # the same command again: it resumes from the workdir's checkpoints
  creates = [c for c in fake.calls() if c[3] == "create"]
  assert creates[0] == creates[1] and "--spot" in creates[0]
  assert "Interrupted (TPU PREEMPTED)" in r.stderr and "Run complete" in r.stderr
  assert "running on 2/2 workers; t1v-n-0: step 100: mlm 0.05" in r.stderr
  assert fake.state()["runs"] == []


def test_watch_starts_over_when_the_tpu_is_preempted_during_setup(fake):
  fake.set_state(runs=["ok"], preempt_setups=1)
  r = fake.launch("watch", "--accelerator-type=v4-32", "--spot", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == [
      "describe", "create", "scp", "ssh:setup", "describe",  # PREEMPTED during set-up
      "describe", "delete", "create", "scp", "ssh:setup", "ssh:start", "ssh:probe"]
  assert "TPU PREEMPTED during set-up" in r.stderr


def test_watch_recreates_a_suspended_queued_resource(fake):
  fake.set_state(runs=["preempt", "ok"], qr_waits=1)
  r = fake.launch("--queued", "watch", "--accelerator-type=v5p-8", "--spot", "--delete-when-done", "--", *JOB,
                  zone="us-east5-a")
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == [
      "qr-describe", "qr-create", "qr-describe", "qr-describe",  # WAITING_FOR_RESOURCES, then ACTIVE
      "scp", "ssh:setup", "ssh:start", "ssh:probe", "qr-describe",  # SUSPENDED
      "qr-describe", "qr-delete", "qr-create", "qr-describe", "qr-describe",
      "scp", "ssh:setup", "ssh:start", "ssh:probe", "qr-delete"]
  delete = [c for c in fake.calls() if c[3] == "delete"][0]
  assert "--force" in delete and "--quiet" in delete
  assert "--runtime-version=v2-alpha-tpuv5" in [c for c in fake.calls() if c[3] == "create"][0]
  assert fake.state()["qr"] is None  # --delete-when-done


def test_watch_reruns_a_run_that_stopped_early_on_the_same_tpu(fake):
  """Exit status 75 on the workers (preemption notice, halt_after_steps, `stop`) with the TPU still
  up: start again, without re-creating or setting up. A job that lost its process without an exit
  status (the host rebooted) is started again too."""
  fake.set_state(node="READY", runs=["incomplete", "lost", "ok"])
  r = fake.launch("watch", "--skip-setup", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == ["describe", "ssh:probe", "ssh:start", "ssh:probe", "describe",
                                  "describe", "ssh:start", "ssh:probe", "describe",
                                  "describe", "ssh:start", "ssh:probe"]
  assert "worker jobs ['exited:75', 'exited:75']" in r.stderr and "worker jobs ['lost', 'lost']" in r.stderr


def test_watch_attaches_to_a_job_already_running(fake):
  """A second `watch` (another laptop, a dropped connection) follows the running job instead of
  starting another."""
  fake.set_state(node="READY", runs=["ok"], run_polls=0)
  fake.launch("run", "--", *JOB)
  state = fake.state()
  state["job"]["polls"] = 2
  fake.set_state(node="READY", job=state["job"])
  r = fake.launch("watch", "--skip-setup", "--", *JOB)
  assert r.returncode == 0, r.stderr
  assert _verbs(fake.calls()) == ["describe", "ssh:probe", "ssh:probe", "ssh:probe"]
  assert "running already on 2 worker(s): watching it" in r.stderr and "Run complete" in r.stderr


def test_watch_stops_when_the_job_fails(fake):
  fake.set_state(node="READY", runs=["fail", "ok"])
  r = fake.launch("watch", "--", *JOB)
  assert r.returncode == 1, r.stderr
  assert _verbs(fake.calls()).count("ssh:start") == 1
  assert "The run failed (worker jobs ['exited:0', 'exited:1'])" in r.stderr
  assert "t1v-n-1: ValueError: tokenizer.path does not exist" in r.stderr  # the failing worker's last line
  fake.set_state(node="READY", runs=["fail", "ok"])
  r = fake.launch("watch", "--max-failures=1", "--", *JOB)
  assert r.returncode == 0 and _verbs(fake.calls()).count("ssh:start") == 2, r.stderr


def test_watch_gives_up_after_max_interruptions(fake):
  fake.set_state(runs=["preempt", "preempt", "ok"])
  r = fake.launch("watch", "--accelerator-type=v4-8", "--max-interruptions=1", "--", *JOB)
  assert r.returncode != 0 and "Giving up after 1 interruptions" in r.stderr
  assert _verbs(fake.calls()).count("ssh:start") == 2


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
