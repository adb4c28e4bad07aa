"""Deployment targets, one file each. Heavy runtimes are imported only inside the target that uses them."""

TARGETS = {
    "openvino": "edgesmlp.targets.openvino",
    "jetson": "edgesmlp.targets.jetson",
}
