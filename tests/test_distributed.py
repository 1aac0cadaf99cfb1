"""bert_jax.distributed: which jax.distributed.initialize call each cluster kind gets, with each
environment faked the way JAX's own detection (jax/_src/clusters/) reads it: environment
variables, and for Cloud TPU VMs the "running on a TPU VM" flag JAX sets at import and the GCE
metadata server's answers (its query is replaced; no network, no TPU). Where a call is made, JAX's
own detection is then run on the same fakes to show what it resolves to (coordinator, process count
and id), as the real initialize would."""

import os
import subprocess
import sys

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import pytest
from jax._src import clusters
from jax._src.clusters import cloud_tpu_cluster

from bert_jax import distributed
from conftest import ROOT

CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COORDINATOR_PORT",
                "JAX_LOCAL_DEVICE_IDS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID", "SLURM_STEP_NUM_NODES", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "TPU_WORKER_HOSTNAMES",
                "TPU_PROCESS_ADDRESSES", "TPU_WORKER_ID", "TPU_SKIP_MDS_QUERY", "MEGASCALE_NUM_SLICES",
                "MEGASCALE_SLICE_ID", "MEGASCALE_COORDINATOR_ADDRESS", "KUBERNETES_SERVICE_HOST")


@pytest.fixture
def cluster(monkeypatch):
  """A machine with none of the cluster environments; `tpu_vm(metadata)` makes it a Cloud TPU VM
  whose metadata server answers `metadata` (key -> value; any other key: 404). Records the
  jax.distributed.initialize calls in `.calls` (no service is started)."""
  for var in CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", False)

  class Cluster:
    calls = []
    queried = []

    def tpu_vm(self, metadata=None):
      """What jax/_src/cloud_tpu_init.py decides at import on a TPU VM (libtpu + TPU chips on PCI),
      and the metadata server get_metadata(key) -> (text, status) asks over HTTP."""
      monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
      self.metadata = dict(metadata or {})

    metadata = None

    def resolved(self):
      """What JAX's own detection fills in for initialize() with no arguments."""
      return clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, 5)

  c = Cluster()

  def get_metadata(key):
    c.queried.append(key)
    if c.metadata is None:
      raise AssertionError(f"metadata server queried for {key!r} off a TPU VM")
    return (c.metadata[key], 200) if key in c.metadata else ("404 page", 404)

  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", get_metadata)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: c.calls.append(kw))
  return c


def test_single_host_never_initializes(cluster, capsys):
  assert distributed.maybe_initialize() is None
  assert cluster.calls == [] and cluster.queried == []
  assert capsys.readouterr().err == ""


def test_explicit_coordinator(cluster, monkeypatch, capsys):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "0")
  start = distributed.maybe_initialize()
  assert cluster.calls == [dict(coordinator_address="host0:1234", num_processes=2, process_id=0)]
  assert start.cluster == "JAX_COORDINATOR_ADDRESS"
  assert "process 0 of 2 (JAX_COORDINATOR_ADDRESS)" in capsys.readouterr().err
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  distributed.maybe_initialize()
  assert cluster.calls[-1]["process_id"] == 1 and capsys.readouterr().err == ""  # only process 0 says it
  monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
  monkeypatch.setenv("JAX_PROCESS_ID", "0")
  assert distributed.maybe_initialize() is None and len(cluster.calls) == 2  # one process: nothing


@pytest.mark.parametrize("env,message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, "JAX_COORDINATOR_ADDRESS not set"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "must be in 0..1"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "not an integer"),
])
def test_incomplete_explicit_settings_are_refused(cluster, monkeypatch, env, message):
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  with pytest.raises(distributed.DistributedError, match=message):
    distributed.maybe_initialize()
  assert cluster.calls == []


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[003-004]", "SLURM_NTASKS": "16",
         "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}


def test_slurm(cluster, monkeypatch):
  """srun, one task per GPU (launch/slurm_gpu.sbatch): every task initializes with no arguments;
  JAX takes the first node as coordinator, a port from the job id, and the task's GPU."""
  for k, v in SLURM.items():
    monkeypatch.setenv(k, v)
  start = distributed.maybe_initialize()
  assert cluster.calls == [{}] and start.cluster == "SLURM (srun)"
  assert (start.num_processes, start.process_id) == (16, 9)
  assert cluster.resolved() == (f"gpu003:{4242 % 4096 + 61440}", 16, 9, [1])
  monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: a single host
  monkeypatch.setenv("SLURM_PROCID", "0")
  assert distributed.maybe_initialize() is None and len(cluster.calls) == 1


def test_slurm_batch_script_outside_srun_is_one_process(cluster, monkeypatch):
  """The batch step of `sbatch --ntasks=16` has SLURM_NTASKS=16 but no job step (no
  SLURM_STEP_NODELIST): JAX finds no cluster there, and neither does this module (bert_jax.main
  used to call initialize() on SLURM_NTASKS alone, which then failed)."""
  for k, v in SLURM.items():
    if k != "SLURM_STEP_NODELIST":
      monkeypatch.setenv(k, v)
  assert distributed.maybe_initialize() is None and cluster.calls == []


def test_open_mpi(cluster, monkeypatch):
  monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911")
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
  monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
  monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
  start = distributed.maybe_initialize()
  assert cluster.calls == [{}] and start.cluster == "Open MPI (mpirun)" and start.process_id == 3
  assert cluster.resolved()[1:] == (4, 3, [1])


# What the GCE metadata server of a gcloud-made v4-32 (4 hosts) answers on its worker 2.
V4_32 = {"agent-worker-number": "2", "worker-network-endpoints": "10.130.0.2,10.130.0.3,10.130.0.4,10.130.0.5",
         "accelerator-type": "v4-32", "tpu-env": "ACCELERATOR_TYPE: 'v4-32'\nTYPE: 'V4'\n"}


def test_cloud_tpu_vm_slice_made_with_gcloud(cluster):
  """No TPU_WORKER_HOSTNAMES (a GKE variable) on a TPU VM: the slice is in the metadata."""
  cluster.tpu_vm(V4_32)
  start = distributed.maybe_initialize()
  assert cluster.calls == [{}] and start.cluster == "Cloud TPU VM slice"
  assert (start.num_processes, start.process_id) == (4, 2)
  assert "worker-network-endpoints" in cluster.queried
  assert cluster.resolved() == ("10.130.0.2:8482", 4, 2, None)


def test_cloud_tpu_vm_old_endpoint_format_and_multislice(cluster):
  """worker-network-endpoints as name:id:ip triples; two slices of a queued resource
  (MEGASCALE_* in the tpu-env attribute): 2 hosts x 2 slices."""
  cluster.tpu_vm({"agent-worker-number": "1", "worker-network-endpoints": "w-0:0:10.0.0.7,w-1:1:10.0.0.8",
                  "tpu-env": "MEGASCALE_NUM_SLICES: '2'\nMEGASCALE_SLICE_ID: '1'\n"
                             "MEGASCALE_COORDINATOR_ADDRESS: '10.0.0.7:8080'\n"})
  start = distributed.maybe_initialize()
  assert cluster.calls == [{}] and (start.num_processes, start.process_id) == (4, 3)
  assert cluster.resolved() == ("10.0.0.7:8482", 4, 3, None)


def test_single_host_tpu_vm_does_not_initialize(cluster):
  """A v4-8 / v5litepod-8: one endpoint, one process."""
  cluster.tpu_vm({"agent-worker-number": "0", "worker-network-endpoints": "10.130.0.2"})
  assert distributed.maybe_initialize() is None and cluster.calls == []


def test_tpu_vm_without_metadata_server_is_not_a_gce_slice(cluster, monkeypatch):
  """JAX's own opt-out (TPU_SKIP_MDS_QUERY, which it sets itself on a machine without TPU chips)
  and a metadata server without agent-worker-number both mean: not a gcloud TPU VM slice."""
  cluster.tpu_vm({})
  assert distributed.maybe_initialize() is None
  monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")
  cluster.queried.clear()
  assert distributed.maybe_initialize() is None and cluster.queried == [] and cluster.calls == []


def test_gke_tpu(cluster, monkeypatch):
  cluster.tpu_vm({})  # GKE: no TPU attributes on the node's metadata server
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "job-0.svc,job-1.svc,job-2.svc,job-3.svc")
  monkeypatch.setenv("TPU_WORKER_ID", "3")
  monkeypatch.setenv("MEGASCALE_NUM_SLICES", "1")
  start = distributed.maybe_initialize()
  assert cluster.calls == [{}] and start.cluster == "GKE TPU" and (start.num_processes, start.process_id) == (4, 3)
  monkeypatch.setattr("socket.gethostbyname", lambda h: "10.0.0.1")  # the worker names resolve in the cluster
  assert cluster.resolved() == ("job-0.svc:8482", 4, 3, None)
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # a single-host node pool
  monkeypatch.setenv("TPU_WORKER_ID", "0")
  assert distributed.maybe_initialize() is None and len(cluster.calls) == 1


def test_gke_variables_off_a_tpu_vm_start_nothing(cluster, monkeypatch):
  """TPU_WORKER_HOSTNAMES alone (no TPU): JAX detects no cluster, so initialize() would fail;
  bert_jax.main used to call it on that variable."""
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "a,b")
  monkeypatch.setenv("TPU_WORKER_ID", "1")
  assert distributed.maybe_initialize() is None and cluster.calls == []


def test_explicit_address_overrides_a_detected_clusters(cluster, monkeypatch):
  cluster.tpu_vm(V4_32)
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.130.0.2:9999")
  distributed.maybe_initialize()
  assert cluster.calls == [{"coordinator_address": "10.130.0.2:9999"}]


def test_the_detection_order_and_names_are_jaxs():
  """The classes this module names are the installed jax's, in the order it tries them."""
  names = [c.__name__ for c in clusters.ClusterEnv._cluster_types if not c.opt_in_only_method]  # pylint: disable=protected-access
  assert [n for n in names if n in distributed.CLUSTER_NAMES] == list(distributed.CLUSTER_NAMES)


def test_main_starts_through_this_module():
  """bert_jax.main's start (in a fresh process, as its absl flags are defined at import) with an
  explicit coordinator: the initialize call is the one this module makes."""
  code = ("import jax, bert_jax.main as m; calls = []; "
          "jax.distributed.initialize = lambda **kw: calls.append(kw); "
          "m._maybe_initialize_distributed(); print(calls)")
  env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
  env.update(JAX_COORDINATOR_ADDRESS="h0:1", JAX_NUM_PROCESSES="3", JAX_PROCESS_ID="0", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip().splitlines()[-1] == str([dict(coordinator_address="h0:1", num_processes=3, process_id=0)])
  assert "process 0 of 3" in r.stderr
