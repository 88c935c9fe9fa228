"""The runner's side of the oneDNN setting: set it before TensorFlow starts, read it back.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it initialises; the worker's effective
value comes in the workload's ``config.yaml``, so a step's ``command`` run by hand gets the
same setting. If TensorFlow then reports otherwise (a build without oneDNN, the variable
read before we set it), the step fails: its figures would not be what the request asked for.
"""

from __future__ import annotations

import os

from service.engine.onednn import ENV_VARIABLE
from service.errors import StepFailed

STEP = "import_tensorflow"


def set_onednn(enabled: bool | None) -> None:
    """Set ``TF_ENABLE_ONEDNN_OPTS`` for ``enabled`` (None: leave TensorFlow's default)."""
    if enabled is not None:
        os.environ[ENV_VARIABLE] = "1" if enabled else "0"


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs oneDNN kernels, as it reports (``IsMklEnabled``)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def import_tensorflow(expected: bool | None) -> tuple[str, bool | None]:
    """Import TensorFlow; (version, oneDNN read-back). Raises StepFailed when they disagree."""
    import tensorflow as tf

    reported = onednn_enabled()
    if expected is not None and reported is not expected:
        want = "on" if expected else "off"
        got = (
            "nothing (IsMklEnabled is missing)"
            if reported is None
            else ("on" if reported else "off")
        )
        raise StepFailed(
            STEP,
            f"oneDNN should be {want} ({ENV_VARIABLE}={os.environ.get(ENV_VARIABLE)}) but "
            f"TensorFlow {tf.__version__} reports it {got}"
            + (
                "; this TensorFlow build has no oneDNN: set benchmark.onednn to off, or "
                "install an x86_64 tensorflow-cpu build"
                if expected and reported is False
                else ""
            ),
        )
    return tf.__version__, reported
