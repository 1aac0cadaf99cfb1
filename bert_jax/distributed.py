"""jax.distributed for a job of several processes, started the way JAX's own cluster detection
finds them; a single host never starts it.

`maybe_initialize()` runs before anything else touches jax (bert_jax.main). In order:

1. An explicit coordinator: JAX_COORDINATOR_ADDRESS (host:port of process 0) with
   JAX_NUM_PROCESSES and JAX_PROCESS_ID (launch/gpu.sh sets them from its flags):
   `jax.distributed.initialize(coordinator_address=..., num_processes=..., process_id=...)`.
   JAX_COORDINATOR_ADDRESS alone only overrides the address of a cluster found in step 2.
2. A cluster that `jax.distributed.initialize()` with no arguments detects by itself. Which one is
   asked of JAX's own detection (jax/_src/clusters/, in JAX's order, leaving out the opt-in
   mpi4py method), so that this module and JAX cannot disagree about it:
     Open MPI (mpirun)   OMPI_MCA_orte_hnp_uri; OMPI_COMM_WORLD_SIZE / _RANK
     SLURM (srun)        SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID
     Cloud TPU VM slice  on a Cloud TPU VM (libtpu installed and TPU chips on the PCI bus, which JAX
                         checks at import), made with `gcloud compute tpus tpu-vm create` or as a
                         queued resource: the GCE metadata server's agent-worker-number and
                         worker-network-endpoints (one endpoint per host of the slice), and
                         MEGASCALE_NUM_SLICES in the tpu-env attribute for several slices
     GKE TPU             on a TPU node (as above) without those attributes:
                         TPU_WORKER_HOSTNAMES (or TPU_PROCESS_ADDRESSES) and TPU_WORKER_ID
     Kubernetes          KUBERNETES_SERVICE_HOST with the `kubernetes` package (jax[k8s])
   When that cluster holds more than one process, `jax.distributed.initialize()` is called with no
   arguments: JAX finds the coordinator, the process count and this process's id again itself.
3. Anything else (one host: a laptop, one GPU machine, a single-host TPU VM such as v4-8, or a
   cluster of one process) starts nothing.

On a TPU slice the coordination service this starts is also what turns a preemption notice into
a checkpoint on every host (bert_jax.train's preemption check).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax

# JAX's class names, in words.
CLUSTER_NAMES = {"OmpiCluster": "Open MPI (mpirun)", "SlurmCluster": "SLURM (srun)",
                 "GceTpuCluster": "Cloud TPU VM slice", "GkeTpuCluster": "GKE TPU",
                 "K8sCluster": "Kubernetes"}


class DistributedError(ValueError):
  """A multi-process setting that cannot start (the message names the variable and the fix)."""


@dataclasses.dataclass(frozen=True)
class Start:
  """What `maybe_initialize` starts: `jax.distributed.initialize(**kwargs)`."""
  cluster: str           # "JAX_COORDINATOR_ADDRESS" or a name of CLUSTER_NAMES
  num_processes: int
  process_id: int
  kwargs: dict

  def describe(self) -> str:
    return f"jax.distributed: process {self.process_id} of {self.num_processes} ({self.cluster})"


def _int_env(name: str) -> int:
  value = os.environ[name]
  try:
    return int(value)
  except ValueError:
    raise DistributedError(f"{name}={value!r} is not an integer.") from None


def detected_cluster():
  """The cluster environment `jax.distributed.initialize()` would use here (JAX's class), or None."""
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top  # JAX's detection, not public API
  except ImportError as e:  # a jax that moved it: say so rather than start nothing silently
    raise DistributedError(f"jax {jax.__version__} has no jax._src.clusters ({e}); set JAX_COORDINATOR_ADDRESS, "
                           "JAX_NUM_PROCESSES and JAX_PROCESS_ID to start several processes.") from None
  return next((env for env in clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
               if not env.opt_in_only_method and env.is_env_present()), None)


def detect() -> Start | None:
  """What this process should start (see the module docstring); None on a single host."""
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  explicit = [n for n in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if os.environ.get(n)]
  if address and len(explicit) == 2:
    num, pid = _int_env("JAX_NUM_PROCESSES"), _int_env("JAX_PROCESS_ID")
    if num < 1 or not 0 <= pid < num:
      raise DistributedError(f"JAX_PROCESS_ID={pid} with JAX_NUM_PROCESSES={num}: the id must be in 0..{num - 1}.")
    if num == 1:
      return None
    return Start("JAX_COORDINATOR_ADDRESS", num, pid,
                 dict(coordinator_address=address, num_processes=num, process_id=pid))
  env = detected_cluster()
  num = env.get_process_count() if env is not None else 1
  if num > 1:
    name = CLUSTER_NAMES.get(env.__name__, env.__name__)
    return Start(name, num, env.get_process_id(), dict(coordinator_address=address) if address else {})
  if address or explicit:
    missing = [n for n in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
               if not os.environ.get(n)]
    raise DistributedError(f"{', '.join(missing)} not set: several processes started by hand need "
                           "JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID.")
  return None


def maybe_initialize() -> Start | None:
  """Calls jax.distributed.initialize when this is one process of several; returns what it started.
  Must run before the first jax computation (it fixes the devices every process sees)."""
  start = detect()
  if start is not None:
    jax.distributed.initialize(**start.kwargs)
    if start.process_id == 0:
      print(start.describe(), file=sys.stderr, flush=True)
  return start
