"""stream_relu: learn depth-2 ReLU networks with biases from huge sample streams by the method of moments.

Pipeline: data -> moments -> decomposition -> recovery -> refinement -> model.
See docs/ARCHITECTURE.md for the modules and README.md for the math in brief.
"""

__version__ = "0.1.0"

from .api import CheckReport, FitResult, check, fit, predict_store  # noqa: E402
from .data import StoreSpec, open_store  # noqa: E402
from .errors import (  # noqa: E402
    ClusterError,
    DataError,
    InputError,
    ModelFileError,
    RecoveryError,
    StoreFormatError,
    StoreNotFoundError,
    StreamReluError,
)
from .evaluate import evaluate  # noqa: E402
from .network import ReluNetwork, load_model  # noqa: E402
from .simulate import Truth, draw_network, load_truth, simulate_store  # noqa: E402

__all__ = [
    "__version__",
    "fit",
    "FitResult",
    "check",
    "CheckReport",
    "predict_store",
    "ReluNetwork",
    "load_model",
    "evaluate",
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
]
