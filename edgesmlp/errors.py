"""The exceptions edgesmlp raises. The CLI maps each to an exit code in one place.

Every message names the file or setting at fault and says what to do about it.
"""


class EdgesmlpError(Exception):
    """Base class. ``exit_code`` 2 means bad input from the user, 3 a failed operation, 1 an
    accuracy budget that cannot be met."""

    exit_code = 3


class InputError(EdgesmlpError):
    """A path, option or value the user gave cannot be used."""

    exit_code = 2


class CheckpointError(InputError):
    """A weights file is missing, unreadable, unsafe or not an sMLPNet."""


class ConfigError(InputError):
    """An architecture or option value is out of range."""


class DataError(InputError):
    """Calibration or evaluation images are missing, empty or inconsistent."""


class ImageTooLarge(ValueError):
    """An image over the pixel cap: skipped and counted like an unreadable one, never fatal on its own."""


class OutputExistsError(InputError):
    """An output path exists and --force was not given."""


class OutputBusyError(InputError):
    """Another edgesmlp run holds the output folder's lock."""


class MissingDependencyError(EdgesmlpError):
    """An optional runtime or library (torch, OpenVINO, NNCF, TensorRT) is not installed."""

    exit_code = 2

    def __init__(self, package: str, purpose: str, install: str):
        fix = f"run `{install}`" if install.startswith("pip ") else install
        super().__init__(f"{purpose} needs {package}, which is not installed: {fix}")
        self.package = package


def workstation_extra(package: str, purpose: str) -> MissingDependencyError:
    """The error for a workstation-side dependency missing from a lean (device-side) install."""
    return MissingDependencyError(package, purpose, "pip install 'edgesmlp[workstation]'")


class FoldError(EdgesmlpError):
    """A fold or graph rewrite changed the model's outputs or met degenerate statistics."""


class ExportError(EdgesmlpError):
    """An exported graph failed its checks or disagreed with PyTorch."""


class RuntimeFailure(EdgesmlpError):
    """A runtime (ONNX Runtime, OpenVINO, TensorRT, CUDA) failed while running a model."""


class EngineBuildError(RuntimeFailure):
    """TensorRT could not parse the ONNX, or build or load an engine from it."""


class BudgetError(EdgesmlpError):
    """The accuracy budget cannot be met (exit 1, as a failed accuracy gate): the message holds the trade-off."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every cleanup runs as it does for Ctrl-C."""


def reason(e: BaseException) -> str:
    """An exception as one line for a report row: our own messages as they are, others with their type."""
    text = str(e).splitlines()[0] if str(e) else ""
    return text if isinstance(e, EdgesmlpError) else f"{type(e).__name__}: {text}"
