"""edgesmlp: ship an sMLPNet image classifier to edge hardware at INT8.

``import edgesmlp`` stays light and torch-free: the model helpers below load torch on first use, and
OpenVINO, NNCF and TensorRT are imported only by the code that uses them.
"""

from edgesmlp.config import VARIANTS, ModelConfig
from edgesmlp.errors import EdgesmlpError

__version__ = "0.1.0"

__all__ = ["VARIANTS", "ModelConfig", "EdgesmlpError", "count_macs", "count_params", "create_model", "sMLPNet"]
_MODEL_API = {"count_macs", "count_params", "create_model", "sMLPNet"}


def __getattr__(name: str):
    if name in _MODEL_API:
        from edgesmlp import model

        return getattr(model, name)
    raise AttributeError(f"module 'edgesmlp' has no attribute {name!r}")
