"""Resolving request paths against the worker's allowed roots, before anything is opened."""

from __future__ import annotations

from pathlib import Path

from service.errors import StepFailed
from service.runner.protocol import ModelFormat

VALIDATE_STEP = "validate"


def resolve_allowed(raw: str, roots: tuple[Path, ...], what: str) -> Path:
    """Resolve ``raw`` (symlinks and ``..`` included) and require it inside one of ``roots``.

    Containment is checked before existence, so nothing outside the roots is even probed.
    """
    resolved = Path(raw).expanduser().resolve(strict=False)
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise StepFailed(
            VALIDATE_STEP,
            f"{what} path {raw} resolves to {resolved}, which is outside the worker's allowed "
            f"roots ({allowed}); ask the operator to add a root or move the file",
        )
    return resolved


def require_existing(path: Path, raw: str, what: str) -> Path:
    if not path.exists():
        raise StepFailed(VALIDATE_STEP, f"{what} not found: {raw} (resolved to {path})")
    return path


def _inside_saved_model(path: Path) -> bool:
    """``saved_model.pb`` beside a SavedModel's ``variables/`` or ``fingerprint.pb``."""
    return path.name == "saved_model.pb" and (
        (path.parent / "variables").is_dir() or (path.parent / "fingerprint.pb").is_file()
    )


def model_format(path: Path, raw: str) -> ModelFormat:
    """``frozen_pb``, ``saved_model`` or ``keras``, from what is at ``path``."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "saved_model"
        raise StepFailed(
            VALIDATE_STEP, f"model directory {raw} is not a SavedModel (no saved_model.pb in it)"
        )
    suffix = path.suffix.lower()
    if suffix == ".pb" and _inside_saved_model(path):
        raise StepFailed(
            VALIDATE_STEP,
            f"model {raw} is the saved_model.pb of a SavedModel, not a frozen graph: pass the "
            f"SavedModel's directory ({path.parent}) as the path",
        )
    if suffix == ".pb":
        return "frozen_pb"
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    raise StepFailed(
        VALIDATE_STEP,
        f"model {raw} has an unsupported format {suffix or '(no extension)'}; use a frozen "
        "graph .pb, a SavedModel directory, or a Keras .keras/.h5 file",
    )
