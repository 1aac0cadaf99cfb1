#!/usr/bin/env python3
r"""Cloud TPU VMs for bert_jax: create, set up, start a job on every worker, watch, logs, stop, delete.

  L="python launch/tpu_vm.py --name=bert --zone=us-central2-b"   # v4 is offered in us-central2-b
  $L create --accelerator-type=v4-32 --spot          # or --queued (a queued resource), --preemptible
  $L setup                                            # this checkout, its pins and the package on every worker
  $L run -- --config=configs/electra.py:base --workdir=gs://bucket/electra_base   # returns once started
  $L logs                                             # follow worker 0's log until the job ends
  $L status                                           # the TPU's state and each worker's job
  $L stop                                             # SIGTERM: a checkpoint, then exit status 75
  $L delete
  # All of it, re-created and re-run after every preemption until the run is complete:
  $L watch --accelerator-type=v4-32 --spot -- --config=configs/electra.py:base --workdir=gs://bucket/electra_base

Everything after `--` goes verbatim to `bert-jax-train` (= python -m bert_jax.main) on every worker
(pretraining or fine-tuning; one process per host; jax.distributed starts from the TPU VM's
metadata, bert_jax.distributed). Re-running the same command resumes from the newest checkpoint
in --workdir, so after a preemption `watch` just runs it again.

Detached jobs: `run` starts the job on every worker in its own session (setsid + nohup, input from
/dev/null), so it outlives the SSH connection and the laptop; it writes, in each worker's home:
  ~/bert_jax_run.log     the job's output, appended, between "[bert_jax] job started" and
                         "[bert_jax] job exited with status N" lines
  ~/bert_jax_run.pid     the job's session (process group) id
  ~/bert_jax_run.status  its exit status once it ends: 0 complete; 75 stopped before its end with a
                         checkpoint, resume by re-running (a preemption notice, `stop`,
                         config.train.halt_after_steps); anything else an error
`watch` polls those (and the TPU's state) instead of holding an SSH session open: a job still
running, finished, failed (its last log line is shown) or lost (no exit status and no process: the
host rebooted), or a TPU preempted, suspended or deleted. A `watch` started again while the job
runs attaches to it rather than starting a second one.

Every subcommand takes --dry-run: it prints the commands it would run, one per line, and runs
nothing (`watch --dry-run` shows one attempt on a TPU that does not exist yet). Needs only the
Python standard library and the gcloud CLI on the machine you launch from.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
REMOTE_DIR = "bert_jax"  # the checkout on each worker, under the home directory
BUNDLE_NAME = "bert_jax_src.tar.gz"
LOG_FILE = "~/bert_jax_run.log"
STATUS_FILE = "~/bert_jax_run.status"
PID_FILE = "~/bert_jax_run.pid"
REPORT = "bert_jax_job"  # the first word of each worker's line in answer to start / probe
MARK = "[bert_jax]"      # the launcher's own lines in the log
EXIT_INCOMPLETE = 75  # bert_jax.main: stopped before the end (preempted / halted); re-run to resume

# TPU software versions for JAX (cloud.google.com/tpu/docs/runtimes), by accelerator generation.
RUNTIME_VERSIONS = (("v6e", "v2-alpha-tpuv6e"), ("v5litepod", "v2-alpha-tpuv5-lite"),
                    ("v5e", "v2-alpha-tpuv5-lite"), ("v5p", "v2-alpha-tpuv5"),
                    ("v4", "tpu-ubuntu2204-base"), ("v3", "tpu-ubuntu2204-base"), ("v2", "tpu-ubuntu2204-base"))
NODE_READY = "READY"
NODE_GONE = ("PREEMPTED", "TERMINATED")  # a spot / preemptible node is deleted and created again
NODE_WAIT = ("CREATING", "STARTING", "RESTARTING", "REPAIRING", "REIMAGING", "STOPPING", "DELETING")
QR_READY = "ACTIVE"
QR_GONE = ("SUSPENDED", "SUSPENDING", "FAILED")
QR_WAIT = ("CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "DELETING")
# Zones that offer each generation, from cloud.google.com/tpu/docs/regions-zones (US zones, and
# Europe's for v6e; read 2025). Other zones may offer them too: `create` warns, it does not refuse.
ZONES = (("v4", ("us-central2-b",)),
         ("v5litepod", ("us-central1-a", "us-south1-a", "us-west1-c", "us-west4-a")),
         ("v5p", ("us-central1-a", "us-east5-a")),
         ("v6e", ("us-central1-b", "us-east1-d", "us-east5-a", "us-east5-b", "europe-west4-a")))
EXCLUDES = (".venv*", ".git", "runs", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache", ".cache")


class LaunchError(Exception):
  """A problem the user has to fix (printed without a traceback)."""


class Gcloud:
  """Runs (or, with dry_run, prints) commands. Every command is echoed to stderr with '+ '."""

  def __init__(self, dry_run: bool):
    self.dry_run = dry_run

  def run(self, cmd: list[str]) -> int:
    """Runs `cmd` with its output streaming through; returns its exit status."""
    if self.dry_run:
      print(shlex.join(cmd), flush=True)
      return 0
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=False).returncode

  def check(self, cmd: list[str]) -> None:
    rc = self.run(cmd)
    if rc != 0:
      raise LaunchError(f"command failed with exit status {rc}: {shlex.join(cmd)}")

  def query(self, cmd: list[str], dry_result: tuple[int, str, str]) -> tuple[int, str, str]:
    """Runs `cmd` capturing (exit status, stdout, stderr); in a dry run returns `dry_result`."""
    if self.dry_run:
      print(shlex.join(cmd), flush=True)
      return dry_result
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, check=False, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


class Tpu:
  """One TPU VM (or queued resource with one node of the same name) and what runs on it."""

  def __init__(self, args, g: Gcloud):
    self.a, self.g = args, g
    self.where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])

  # --- gcloud commands --------------------------------------------------------------------
  def _node(self, verb: str, *rest: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, self.a.name, *self.where, *rest]

  def _qr(self, verb: str, *rest: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "queued-resources", verb, self.a.name, *self.where, *rest]

  def ssh(self, command: str, worker: str = "all") -> list[str]:
    return self._node("ssh", f"--worker={worker}", f"--command={command}")

  def create_cmd(self) -> list[str]:
    a = self.a
    if not a.accelerator_type:
      raise LaunchError("--accelerator-type is needed to create a TPU (e.g. --accelerator-type=v4-32).")
    version = a.version or runtime_version(a.accelerator_type)
    extra = [f"--{f}" for f in ("spot", "preemptible", "reserved") if getattr(a, f)]
    if a.queued:
      valid = [f"--valid-until-duration={a.valid_until}"] if a.valid_until else []
      return self._qr("create", f"--node-id={a.name}", f"--accelerator-type={a.accelerator_type}",
                      f"--runtime-version={version}", *extra, *valid)
    return self._node("create", f"--accelerator-type={a.accelerator_type}", f"--version={version}", *extra)

  # --- state ------------------------------------------------------------------------------
  def state(self) -> str | None:
    """The node's state (queued resource's with --queued), or None when it does not exist."""
    field = "state.state" if self.a.queued else "state"
    cmd = (self._qr if self.a.queued else self._node)("describe", f"--format=value({field})")
    rc, out, err = self.g.query(cmd, dry_result=(1, "", "NOT_FOUND"))
    if rc == 0:
      return out.strip() or None
    if "NOT_FOUND" in err or "not found" in err:
      return None
    raise LaunchError(f"{shlex.join(cmd)} failed (exit status {rc}):\n{err.strip()}")

  def create(self) -> None:
    self.g.check(self.create_cmd())
    if self.a.queued:  # queued-resources create returns at once; the node comes later
      self.wait_ready()

  def delete(self) -> None:
    if self.a.queued:  # --force deletes the node first
      self.g.check(self._qr("delete", "--force", "--quiet"))
    else:
      self.g.check(self._node("delete", "--quiet"))

  def wait_ready(self) -> None:
    ready, gone, wait = (QR_READY, QR_GONE, QR_WAIT) if self.a.queued else (NODE_READY, NODE_GONE, NODE_WAIT)
    while True:
      state = self.state()
      if state == ready or self.g.dry_run:
        return
      if state is None or state in gone or state not in wait:
        raise LaunchError(f"TPU {self.a.name} is {state or 'absent'} while waiting for it to be {ready}.")
      print(f"TPU {self.a.name}: {state}; waiting.", file=sys.stderr, flush=True)
      time.sleep(self.a.poll_seconds)

  def ensure(self) -> bool:
    """Makes the TPU ready: creates it when absent, deletes and re-creates it when preempted.
    Returns whether it is new (then it needs setting up)."""
    ready, gone = (QR_READY, QR_GONE) if self.a.queued else (NODE_READY, NODE_GONE)
    state = self.state()
    if state == ready:
      return False
    if state == "STOPPED" and not self.a.queued:
      self.g.check(self._node("start"))
      return False
    if state in gone:
      print(f"TPU {self.a.name} is {state}: deleting it and creating it again.", file=sys.stderr, flush=True)
      self.delete()
      state = None
    if state is not None:  # creating, queued, provisioning, deleting, ...
      if state == "DELETING":
        while self.state() is not None:
          time.sleep(self.a.poll_seconds)
      else:
        self.wait_ready()
        return True
    self.create()
    return True

  # --- set-up and jobs ---------------------------------------------------------------------
  def setup(self) -> None:
    """Copies this checkout to every worker and installs, in ~/bert_jax/.venv, the pinned
    requirements (transitive pins from constraints.txt) with libtpu, then the package itself."""
    bundle = os.path.join(tempfile.gettempdir(), f"bert_jax-{self.a.name}.tar.gz")
    self.g.check(["tar", "-czf", bundle, *[f"--exclude={e}" for e in EXCLUDES], "-C", str(ROOT), "."])
    self.g.check(["gcloud", "compute", "tpus", "tpu-vm", "scp", bundle, f"{self.a.name}:{BUNDLE_NAME}",
                  *self.where, "--worker=all"])
    py = self.a.python
    script = " && ".join([
        "set -e",
        f"if ! command -v {py} >/dev/null; then sudo apt-get -o DPkg::Lock::Timeout=600 update -qq"
        f" && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq {py} {py}-venv; fi",
        # A fresh copy of the checkout; an existing .venv is kept (pip then only checks the pins).
        f"mkdir -p ~/{REMOTE_DIR} && find ~/{REMOTE_DIR} -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {{}} +",
        f"tar -xzf ~/{BUNDLE_NAME} -C ~/{REMOTE_DIR}",
        f"cd ~/{REMOTE_DIR} && (test -x .venv/bin/python || {py} -m venv .venv)",
        ".venv/bin/pip install -q --upgrade pip",
        f".venv/bin/pip install -q -c constraints.txt -r requirements.txt {shlex.quote(f'jax[tpu]=={jax_version()}')}",
        # The package itself (not editable: a wheel built from the copy), with its console scripts.
        ".venv/bin/pip install -q --no-deps --force-reinstall .",
        # Imported from outside the copy: the installed package, not the checkout's folder.
        f"(cd / && ~/{REMOTE_DIR}/.venv/bin/python -c 'import bert_jax.main, bert_jax; print(\"bert_jax\", "
        "bert_jax.__version__, bert_jax.__file__)')",
    ])
    self.g.check(self.ssh(script))

  def job_command(self, train_args: list[str]) -> str:
    """The job itself, as each worker's shell runs it (in ~/bert_jax)."""
    env = []
    for e in ["TF_CPP_MIN_LOG_LEVEL=2", *self.a.env]:
      key, sep, value = e.partition("=")
      if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise LaunchError(f"--env={e}: expected KEY=VALUE.")
      env.append(f"{key}={shlex.quote(value)}")
    return f"{' '.join(env)} .venv/bin/bert-jax-train {shlex.join(train_args)}"

  def start_command(self, train_args: list[str]) -> str:
    """The shell command every worker runs to start the job detached from the SSH session: in a
    session of its own (setsid; nohup; no terminal), its output appended to LOG_FILE, its process
    group in PID_FILE and, once it ends, its exit status in STATUS_FILE. Prints one line
    `bert_jax_job <host> started <pid>` (or `... busy <pid>` when a job runs there already)."""
    job = self.job_command(train_args)
    date = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    # The wrapper shell traps TERM / INT so that a `stop` (or the host's shutdown) reaching the
    # whole process group leaves it alive to record the job's status after the job has saved.
    wrapper = (f"echo $$ > {PID_FILE}; trap true TERM INT; "
               f"echo \"{MARK} job started {date}\" >> {LOG_FILE}; "
               f"printf '%s\\n' {shlex.quote(f'{MARK} command: {job}')} >> {LOG_FILE}; "
               f"{job} >> {LOG_FILE} 2>&1 < /dev/null; rc=$?; "
               f"echo \"{MARK} job exited with status $rc {date}\" >> {LOG_FILE}; "
               f"echo $rc > {STATUS_FILE}.tmp && mv {STATUS_FILE}.tmp {STATUS_FILE}")
    return (f"cd ~/{REMOTE_DIR} || exit 1; "
            f"if {_alive()}; then echo \"{REPORT} $(hostname) busy $(cat {PID_FILE})\"; exit 0; fi; "
            f"rm -f {STATUS_FILE} {PID_FILE}; "
            f"setsid nohup bash -c {shlex.quote(wrapper)} > /dev/null 2>&1 < /dev/null & "
            f"for i in $(seq 100); do test -s {PID_FILE} && break; sleep 0.1; done; "
            f"echo \"{REPORT} $(hostname) started $(cat {PID_FILE} 2>/dev/null)\"")

  def start(self, train_args: list[str]) -> list[Report]:
    """Starts the job on every worker; returns each worker's report (state 'started' or 'busy')."""
    rc, out, err = self.g.query(self.ssh(self.start_command(train_args)),
                                dry_result=(0, f"{REPORT} worker-0 started 1\n", ""))
    sys.stderr.write(err)
    reports = parse_reports(out)
    if rc != 0 and not reports:
      raise LaunchError(f"starting the job failed (ssh exit status {rc}); the TPU is {self.state() or 'absent'}.")
    return reports

  def probe(self) -> list[Report]:
    """Each worker's job: `exited:<status>`, `running`, `lost` (a pid and no process, no status:
    the host went down) or `none` (never started), with the log's last line; [] when SSH failed."""
    rc, out, err = self.g.query(self.ssh(probe_command()), dry_result=(0, f"{REPORT} worker-0 exited:0 done\n", ""))
    if rc != 0:
      sys.stderr.write(err)
    return parse_reports(out)

  def stop(self) -> int:
    """SIGTERM to the job's process group on every worker: bert_jax.main saves a checkpoint at the
    same step on every host and exits 75."""
    return self.g.run(self.ssh(stop_command()))

  def wait_job(self, workers: int) -> tuple[str | None, list[Report]]:
    """Polls until no worker runs the job any more, or the TPU is no longer up. Returns the TPU's
    state and the last reports. Prints worker 0's last log line as it changes."""
    ready = QR_READY if self.a.queued else NODE_READY
    shown, unreachable = None, 0
    while True:
      if not self.g.dry_run:
        time.sleep(self.a.poll_seconds)
      reports = self.probe()
      running = [r for r in reports if r.state == "running"]
      if len(reports) >= workers:
        unreachable = 0
      if reports and running and not self.g.dry_run:
        if reports[0].last != shown:
          shown = reports[0].last
          print(f"[{time.strftime('%H:%M:%S')}] running on {len(running)}/{max(workers, len(reports))} "
                f"workers; {reports[0].host}: {shown}", file=sys.stderr, flush=True)
        continue
      if len(reports) >= workers and all(r.exit_status == 0 for r in reports):
        return ready, reports  # complete: the TPU's state does not matter any more
      state = self.state()
      if state != ready or self.g.dry_run:
        return state, reports
      if len(reports) < workers:  # a worker did not answer on a TPU that is up: ask again
        unreachable += 1
        if unreachable <= getattr(self.a, "max_unanswered", 10):
          continue
        reports += [Report(f"worker-{i}?", "unreachable", "") for i in range(len(reports), workers)]
      return state, reports


@dataclasses.dataclass
class Report:
  """One worker's line: `bert_jax_job <host> <state> [<last log line>]`."""
  host: str
  state: str
  last: str = ""

  @property
  def exit_status(self) -> int | None:
    return int(self.state.split(":", 1)[1]) if re.fullmatch(r"exited:\d+", self.state) else None


def parse_reports(out: str) -> list[Report]:
  reports = []
  for line in out.splitlines():
    parts = line.strip().split(" ", 3)
    if len(parts) >= 3 and parts[0] == REPORT:
      reports.append(Report(parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
  return reports


def _alive() -> str:
  """A shell test: the job recorded in PID_FILE is still running (and is ours, not a reused pid).
  `ps -ww`: the whole command line, which plain ps cuts at $COLUMNS (an SSH session's terminal)."""
  return (f"test -s {PID_FILE} && ps -ww -o args= -p \"$(cat {PID_FILE})\" 2>/dev/null | grep -q bert-jax-train")


def stop_command() -> str:
  """SIGTERM to the job's process group, when it runs."""
  return (f"if {_alive()}; then kill -TERM -- -$(cat {PID_FILE}) && "
          f"echo \"{REPORT} $(hostname) stopping $(cat {PID_FILE})\"; fi")


def probe_command() -> str:
  """Prints `bert_jax_job <host> <state> <last line of the job's output>` on a worker."""
  return (f"if test -s {STATUS_FILE}; then s=exited:$(cat {STATUS_FILE}); elif {_alive()}; then s=running; "
          f"elif test -e {PID_FILE}; then s=lost; else s=none; fi; "
          f"last=$(tail -n 50 {LOG_FILE} 2>/dev/null | grep -v -F '{MARK}' | tail -n 1 | tr -d '\\r' | cut -c1-300); "
          f"echo \"{REPORT} $(hostname) $s $last\"")


def runtime_version(accelerator_type: str) -> str:
  for prefix, version in RUNTIME_VERSIONS:
    if accelerator_type.startswith(prefix + "-"):
      return version
  raise LaunchError(f"No default TPU software version for --accelerator-type={accelerator_type}: "
                    "pass --version (see cloud.google.com/tpu/docs/runtimes).")


def jax_version() -> str:
  """The jax pin of requirements.txt (jax[tpu] is installed at the same version)."""
  text = (ROOT / "requirements.txt").read_text()
  m = re.search(r"^jax==(\S+)", text, re.M)
  if not m:
    raise LaunchError(f"No 'jax==<version>' line in {ROOT / 'requirements.txt'}.")
  return m.group(1)


def _flag_value(args: list[str], name: str) -> str | None:
  for i, a in enumerate(args):
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
    if a == f"--{name}" and i + 1 < len(args):
      return args[i + 1]
  return None


def check_train_args(train_args: list[str], require_gcs: bool) -> None:
  """The job's flags must name a config and a workdir; a run that outlives its VM needs gs://."""
  if not train_args:
    raise LaunchError("Give the job after `--`, e.g. -- --config=configs/bert.py:base --workdir=gs://bucket/run.")
  for name in ("config", "workdir"):
    if _flag_value(train_args, name) is None:
      raise LaunchError(f"The job after `--` has no --{name}= (it is passed to python -m bert_jax.main).")
  workdir = _flag_value(train_args, "workdir")
  if not workdir.startswith("gs://"):
    msg = (f"--workdir={workdir} is on the TPU VM's own disk: each worker would write its own, and a preempted "
           "or deleted VM loses it. Use a gs:// bucket in the TPU's region.")
    if require_gcs:
      raise LaunchError(msg)
    print("Warning: " + msg, file=sys.stderr)


# --- subcommands --------------------------------------------------------------------------
def cmd_create(tpu: Tpu, args, train_args) -> int:
  del train_args
  check_zone(args.zone, args.accelerator_type)
  tpu.create()
  return 0


def cmd_setup(tpu: Tpu, args, train_args) -> int:
  del args, train_args
  tpu.setup()
  return 0


def _follow_hint(args) -> str:
  return f"{sys.argv[0]} --name={args.name} --zone={args.zone}" + (" --queued" if args.queued else "")


def cmd_run(tpu: Tpu, args, train_args) -> int:
  check_train_args(train_args, require_gcs=False)
  reports = tpu.start(train_args)
  busy = [r for r in reports if r.state == "busy"]
  if busy:
    raise LaunchError(f"a job is running already on {', '.join(r.host for r in busy)} (process group "
                      f"{busy[0].last}): follow it with `{_follow_hint(args)} logs`, or `stop` it first.")
  print(f"Started on {len(reports)} worker(s), detached. Follow: {_follow_hint(args)} logs", file=sys.stderr)
  return 0


def cmd_logs(tpu: Tpu, args, train_args) -> int:
  """Worker's log: the last --lines, then (unless --no-follow) new lines until the job ends."""
  del train_args
  if not args.follow:
    return tpu.g.run(tpu.ssh(f"tail -n {args.lines} {LOG_FILE}", worker=args.worker))
  return tpu.g.run(tpu.ssh(f"if {_alive()}; then tail -n {args.lines} --pid=$(cat {PID_FILE}) -F {LOG_FILE}; "
                           f"else tail -n {args.lines} {LOG_FILE}; fi", worker=args.worker))


def cmd_status(tpu: Tpu, args, train_args) -> int:
  """The TPU's state and, when it is up, each worker's job and the last line of its log."""
  del train_args
  state = tpu.state()
  print(state or "absent")
  if state == (QR_READY if args.queued else NODE_READY) or args.dry_run:  # a dry run shows the probe too
    for r in tpu.probe():
      print(f"{r.host}: {r.state}  {r.last}")
  return 0


def cmd_stop(tpu: Tpu, args, train_args) -> int:
  del args, train_args
  return tpu.stop()


def cmd_delete(tpu: Tpu, args, train_args) -> int:
  del args, train_args
  tpu.delete()
  return 0


def cmd_watch(tpu: Tpu, args, train_args) -> int:
  """Create / set up / start, then poll the job; after a preemption (or a run stopped before its
  end) start it again, until every worker reports exit status 0."""
  check_train_args(train_args, require_gcs=True)
  check_zone(args.zone, args.accelerator_type)
  ready = QR_READY if args.queued else NODE_READY
  interruptions = failures = 0
  needs_setup = not args.skip_setup
  first = True

  def interrupted(why: str) -> bool:
    """Counts an interruption; False once there were too many."""
    nonlocal interruptions
    interruptions += 1
    if interruptions > args.max_interruptions:
      print(f"Giving up after {args.max_interruptions} interruptions ({why}).", file=sys.stderr)
      return False
    print(f"Interrupted ({why}); resuming (interruption {interruptions}).", file=sys.stderr, flush=True)
    if not args.dry_run:
      time.sleep(args.poll_seconds)
    return True

  while True:
    try:
      new = tpu.ensure()
      needs_setup = new or needs_setup
      if needs_setup:
        tpu.setup()
        needs_setup = False
    except LaunchError as e:  # a TPU preempted while being created or set up: start over
      state = tpu.state()
      if state == ready:
        raise
      needs_setup = True
      if not interrupted(f"TPU {state or 'absent'} during set-up: {e}"):
        return 1
      continue
    # A watch started again (another laptop, a lost connection) attaches to the job it finds running.
    running = [r for r in tpu.probe() if r.state == "running"] if first and not new else []
    first = False
    if running:
      print(f"The job is running already on {len(running)} worker(s): watching it.", file=sys.stderr, flush=True)
      workers = len(running)
    else:
      started = tpu.start(train_args)
      workers = len(started)
      if any(r.state == "busy" for r in started):  # a job began meanwhile (another watch): follow it
        print("A job is running already: watching it.", file=sys.stderr, flush=True)
    state, reports = tpu.wait_job(workers)
    if args.dry_run:  # one attempt shown, as if the TPU did not exist and the run completed
      return 0
    statuses = [r.state for r in reports]
    if reports and all(r.exit_status == 0 for r in reports):
      print(f"Run complete (every worker exited 0) after {interruptions} interruption(s).", file=sys.stderr)
      if args.delete_when_done:
        tpu.delete()
      return 0
    errors = [r for r in reports if r.exit_status not in (None, 0, EXIT_INCOMPLETE)]
    if state != ready or not errors:  # preempted, suspended, lost, or stopped early: resume
      why = f"TPU {state or 'absent'}" if state != ready else f"worker jobs {statuses or '(no answer)'}"
      if not interrupted(why):
        return 1
      continue
    failures += 1
    last = "; ".join(f"{r.host}: {r.last}" for r in errors if r.last)
    if failures > args.max_failures:
      print(f"The run failed (worker jobs {statuses}); not re-running. Last log line: {last or '(none)'}. "
            f"Its log: {_follow_hint(args)} logs --worker=N", file=sys.stderr)
      return errors[0].exit_status or 1
    print(f"The run failed (worker jobs {statuses}; {last or 'no log line'}); re-running "
          f"({failures}/{args.max_failures}).", file=sys.stderr, flush=True)
    if not args.dry_run:
      time.sleep(args.poll_seconds)


def check_zone(zone: str, accelerator_type: str | None) -> None:
  """A warning when the zone is not among those ZONES lists for the accelerator's generation."""
  if not accelerator_type:
    return
  for prefix, zones in ZONES:
    if accelerator_type.startswith(prefix + "-") and zone not in zones:
      print(f"Warning: {accelerator_type} is not offered in {zone} as far as this launcher knows; "
            f"{prefix} zones: {', '.join(zones)} (cloud.google.com/tpu/docs/regions-zones).", file=sys.stderr)


COMMANDS = {"create": cmd_create, "setup": cmd_setup, "run": cmd_run, "watch": cmd_watch, "logs": cmd_logs,
            "status": cmd_status, "stop": cmd_stop, "delete": cmd_delete}


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--name", required=True, help="TPU VM name (and queued-resource id with --queued).")
  p.add_argument("--zone", required=True, help="e.g. us-central2-b")
  p.add_argument("--project", default=None, help="GCP project (default: gcloud's configured one).")
  p.add_argument("--queued", action="store_true", help="Manage a queued resource of one node named --name.")
  p.add_argument("--dry-run", action="store_true", help="Print the commands instead of running them.")
  p.add_argument("--poll-seconds", type=float, default=30.0, help="Between state checks and re-runs.")
  sub = p.add_subparsers(dest="command", required=True)

  def create_flags(s):
    s.add_argument("--accelerator-type", default=None, help="e.g. v4-32, v5litepod-16, v5p-64, v6e-8")
    s.add_argument("--version", default=None, help="TPU software version (default: by generation).")
    kind = s.add_mutually_exclusive_group()
    kind.add_argument("--spot", action="store_true", help="Spot TPU (preemptible at any time, no time limit).")
    kind.add_argument("--preemptible", action="store_true", help="Preemptible TPU (not with --queued).")
    kind.add_argument("--reserved", action="store_true", help="Use the project's reservation.")
    s.add_argument("--valid-until", default=None, help="Queued resources: give up after e.g. 6h.")

  def setup_flags(s):
    s.add_argument("--python", default="python3.11", help="Python on the workers (apt-installed when absent).")

  def run_flags(s):
    s.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="Environment for the job on every worker (repeatable).")

  create_flags(sub.add_parser("create", help="Create the TPU VM (or queued resource)."))
  setup_flags(sub.add_parser("setup", help="Copy this checkout to every worker and install requirements."))
  run_flags(sub.add_parser("run", help="Start `bert-jax-train <args after -->` on every worker, detached; "
                                       "returns once it is started."))
  w = sub.add_parser("watch", help="create (if absent) + setup + run; re-create and re-run after preemption "
                                   "until the run is complete.")
  create_flags(w)
  setup_flags(w)
  run_flags(w)
  w.add_argument("--max-interruptions", type=int, default=100, help="Preemptions / lost runs to resume from.")
  w.add_argument("--max-failures", type=int, default=0, help="Re-runs after the job itself fails.")
  w.add_argument("--skip-setup", action="store_true", help="The TPU exists and is set up already.")
  w.add_argument("--delete-when-done", action="store_true", help="Delete the TPU when the run is complete.")
  w.add_argument("--max-unanswered", type=int, default=10,
                 help="Polls in a row that some worker of a READY TPU does not answer before that counts as "
                      "an interruption.")
  lg = sub.add_parser("logs", help="Show a worker's log of the jobs and follow it until the job ends.")
  lg.add_argument("--worker", default="0")
  lg.add_argument("--lines", type=int, default=100)
  lg.add_argument("--no-follow", dest="follow", action="store_false")
  sub.add_parser("status", help="Print the TPU's (queued resource's) state, or 'absent', and each worker's job.")
  sub.add_parser("stop", help="SIGTERM the job on every worker (it saves a checkpoint and exits 75).")
  sub.add_parser("delete", help="Delete the TPU VM (queued resource and its node with --queued).")
  return p


def main(argv: list[str]) -> int:
  own, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
  args = parser().parse_args(own)
  if train_args and args.command not in ("run", "watch"):
    print(f"error: `{args.command}` takes no job after `--`.", file=sys.stderr)
    return 2
  if args.queued and getattr(args, "preemptible", False):
    print("error: queued resources take --spot, not --preemptible.", file=sys.stderr)
    return 2
  tpu = Tpu(args, Gcloud(args.dry_run))
  try:
    return COMMANDS[args.command](tpu, args, train_args)
  except LaunchError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
