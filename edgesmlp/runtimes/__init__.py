"""Runtime sessions and runners: ONNX Runtime, OpenVINO, TensorRT (with a small CUDA runtime binding).

The bottom layer: these modules import nothing of edgesmlp's above them, and each imports its
runtime only when used, so a machine without it fails with a one-line MissingDependencyError.
"""
