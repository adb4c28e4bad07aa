"""edgesmlp: ship an sMLPNet image classifier to edge hardware at INT8.

``import edgesmlp`` stays light: OpenVINO, NNCF and TensorRT are imported only by the code
that uses them.
"""

from edgesmlp.config import VARIANTS, ModelConfig
from edgesmlp.errors import EdgesmlpError
from edgesmlp.model import count_macs, count_params, create_model, sMLPNet

__version__ = "0.1.0"

__all__ = ["VARIANTS", "ModelConfig", "EdgesmlpError", "count_macs", "count_params", "create_model", "sMLPNet"]
