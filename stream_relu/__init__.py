"""stream_relu: learn depth-2 ReLU networks with biases from huge sample streams by the method of moments.

Pipeline: data -> moments -> decomposition -> recovery -> refinement -> model.
See docs/ARCHITECTURE.md for the modules and README.md for the math in brief.
"""

__version__ = "0.1.0"

from .api import CheckReport, FitResult, affine_fit, check, fit, open_input, predict_store  # noqa: E402
from .data import StoreSpec, append_rows, open_store  # noqa: E402
from .errors import (  # noqa: E402
    ClusterError,
    DataError,
    InputError,
    ModelFileError,
    RecoveryError,
    StoreFormatError,
    StorageAccessError,
    StorageUnreachableError,
    StoreNotFoundError,
    StreamReluError,
)
from .metrics import evaluate, match_units, stderr_z  # noqa: E402
from .incremental import Estimate, MomentAccumulator  # noqa: E402
from .network import ReluNetwork, load_model, to_jsonable  # noqa: E402
from .recovery import UNRELIABLE_STRENGTH  # noqa: E402
from .settings import DataPolicy, FitSettings, LocalClusterSettings, RefineSettings  # noqa: E402
from .simulate import Truth, draw_network, load_truth, simulate_store  # noqa: E402
from .report import render_report  # noqa: E402  (last: it imports names defined above)

__all__ = [
    "__version__",
    "fit",
    "FitResult",
    "check",
    "CheckReport",
    "predict_store",
    "affine_fit",
    "open_input",
    "MomentAccumulator",
    "Estimate",
    "DataPolicy",
    "RefineSettings",
    "FitSettings",
    "LocalClusterSettings",
    "ReluNetwork",
    "load_model",
    "evaluate",
    "match_units",
    "stderr_z",
    "render_report",
    "to_jsonable",
    "UNRELIABLE_STRENGTH",
    "append_rows",
    "simulate_store",
    "draw_network",
    "load_truth",
    "Truth",
    "open_store",
    "StoreSpec",
    "StreamReluError",
    "InputError",
    "StoreNotFoundError",
    "StoreFormatError",
    "DataError",
    "ModelFileError",
    "RecoveryError",
    "ClusterError",
    "StorageAccessError",
    "StorageUnreachableError",
]
