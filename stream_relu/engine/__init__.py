"""Orchestration: run a chunk kernel over every chunk and fold the states in a fixed order.

``sources``  how many chunks there are and how to read chunk ``i`` (a zarr
             store, in-memory arrays, dask arrays, a pilot subset).
``tasks``    one chunk task: read, apply the kernel with BLAS pinned to one
             thread, drop non-finite rows, fingerprint.
``runners``  where tasks run (this process, the active dask scheduler, a
             ``dask.distributed`` cluster) and :func:`open_runner` to pick one.
``fold``     the left fold over chunk indices, with progress and
             checkpointing as observers.
``progress`` the progress line.

Workers open the zarr store themselves: the graph carries a
:class:`~stream_relu.data.StoreSpec` and the chunk index, never data.
Kernels are values (:class:`~stream_relu.moments.ChunkKernel`), so this
package imports no kernel module.  dask and distributed are imported lazily.
"""

from .fold import ChunkReport, OrderedFold, Reduction, reduce_chunks
from .progress import Progress, StepProgress
from .runners import DaskRunner, DistributedRunner, SerialRunner, local_cluster, open_client, open_runner
from .sources import ArraySource, DaskArraySource, StoreSource, SubsetSource, is_dask_array
from .tasks import NONFINITE_POLICIES, ChunkOptions, ChunkResult, apply_kernel, run_chunk

__all__ = [
    "StoreSource",
    "ArraySource",
    "DaskArraySource",
    "SubsetSource",
    "is_dask_array",
    "SerialRunner",
    "DaskRunner",
    "DistributedRunner",
    "open_runner",
    "open_client",
    "local_cluster",
    "Progress",
    "StepProgress",
    "OrderedFold",
    "Reduction",
    "reduce_chunks",
    "run_chunk",
    "apply_kernel",
    "NONFINITE_POLICIES",
    "ChunkOptions",
    "ChunkResult",
    "ChunkReport",
]
