"""edgesmlp: ship an sMLPNet image classifier to edge hardware at INT8.

    import edgesmlp

    result = edgesmlp.quantize("smlp_t.pth", target="openvino", calib="train/", val="val/")
    gate = edgesmlp.check(edgesmlp.bench(source=result.folder.parent))

The Python API (``load``, ``quantize``, ``bench``, ``check``, ``sensitivity``, documented in ``edgesmlp.api``)
is what the ``edgesmlp`` command runs. ``import edgesmlp`` stays light and torch-free: everything below loads
on first use, and OpenVINO, NNCF and TensorRT are imported only by the code that uses them.
"""

from edgesmlp.config import VARIANTS, ModelConfig
from edgesmlp.errors import EdgesmlpError, InputError

__version__ = "0.1.0"

_API = {"load", "quantize", "bench", "check", "sensitivity", "Report", "Gate", "QuantizeResult", "Sensitivity"}
_MODEL_API = {"count_macs", "count_params", "create_model", "sMLPNet"}
__all__ = sorted({"VARIANTS", "ModelConfig", "EdgesmlpError", "InputError", "QATConfig", *_API, *_MODEL_API})


def __getattr__(name: str):
    if name in _API or name == "QATConfig":
        from edgesmlp import api

        return getattr(api, name)
    if name in _MODEL_API:
        from edgesmlp import model

        return getattr(model, name)
    raise AttributeError(f"module 'edgesmlp' has no attribute {name!r}")
