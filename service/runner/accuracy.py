"""Accuracy mode: top-k accuracy over an ``.npz`` file holding ``x`` (inputs) and ``y`` (labels)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from service.errors import StepFailed
from service.runner.loading import LoadedModel
from service.runner.performance import call_model, check_batch_dim
from service.runner.protocol import AccuracyResult, TensorInfo

STEP_DATA = "load_dataset"
STEP_RUN = "accuracy"


@dataclass
class Dataset:
    path: Path
    x: np.ndarray
    y: np.ndarray


def read_arrays(path_text: str | None) -> tuple[Path, np.ndarray, np.ndarray]:
    """Read ``x`` and ``y`` from the npz, checking both are there and match in length."""
    if path_text is None:
        raise StepFailed(
            STEP_DATA,
            "accuracy mode needs benchmark.dataset: an .npz file with arrays 'x' and 'y'",
        )
    path = Path(path_text)
    if not path.is_file():
        raise StepFailed(STEP_DATA, f"dataset not found: {path} is not a file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array under .npz
            raise StepFailed(STEP_DATA, _not_an_npz(path, ValueError("not an archive")))
        with loaded as npz:
            names = sorted(npz.files)
            missing = [name for name in ("x", "y") if name not in names]
            if missing:
                raise StepFailed(
                    STEP_DATA,
                    f"dataset {path} has no array {' or '.join(repr(m) for m in missing)} "
                    f"(it has: {names or 'no arrays'}); it needs 'x' (inputs) and 'y' "
                    "(integer labels)",
                )
            x, y = npz["x"], npz["y"]
    except StepFailed:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise StepFailed(STEP_DATA, _not_an_npz(path, exc)) from None
    _check_labels(path, x, y)
    return path, x, y


_NPZ_MAGIC = b"PK"  # an .npz is a zip archive of .npy arrays
_NPY_MAGIC = b"\x93NUMPY"
_SAVE_HINT = "write it with numpy.savez(path, x=inputs, y=labels)"


def _not_an_npz(path: Path, exc: BaseException) -> str:
    """What the file is, when numpy could not read it as an .npz (numpy itself would talk of
    pickles for anything that is not a zip)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError as error:
        return f"could not read dataset {path}: {error.strerror}"
    if head.startswith(_NPY_MAGIC):
        what = "a single .npy array, not an .npz archive of named arrays"
    elif head.startswith(_NPZ_MAGIC):
        return f"could not read dataset {path} as an .npz archive: {exc}"
    elif head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        what = "a text file (CSV?), not an .npz archive"
    else:
        what = "not an .npz archive"
    return f"dataset {path} is {what}: {_SAVE_HINT}"


def _one_hot(y: np.ndarray) -> bool:
    """Rows of zeros with exactly one 1 (of any dtype)."""
    if y.ndim != 2 or y.shape[1] < 2 or not len(y):
        return False
    values = np.unique(y)
    return bool(np.isin(values, (0, 1)).all() and (y.sum(axis=1) == 1).all())


def _check_labels(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    if _one_hot(y):
        raise StepFailed(
            STEP_DATA,
            f"array 'y' in {path} is one-hot encoded (shape {tuple(y.shape)}, one 1 per row); "
            "store the class index of each sample instead: y = y.argmax(axis=1)",
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise StepFailed(
            STEP_DATA,
            f"array 'y' in {path} must hold integer class labels, not {y.dtype}",
        )
    if y.ndim != 1:
        raise StepFailed(
            STEP_DATA,
            f"array 'y' in {path} must be 1-D (one label per sample), "
            f"but has shape {tuple(y.shape)}",
        )
    if x.ndim == 0 or len(x) != len(y):
        raise StepFailed(
            STEP_DATA,
            f"arrays 'x' and 'y' in {path} must have one sample per label: "
            f"x has shape {tuple(x.shape)}, y has {len(y)} labels",
        )
    if len(y) == 0:
        raise StepFailed(STEP_DATA, f"dataset {path} is empty")


def load_dataset(path_text: str | None, model_input: TensorInfo) -> Dataset:
    """Read and check the dataset against the model's input; cast x to the input dtype."""
    path, x, y = read_arrays(path_text)
    expected = model_input.shape[1:]
    sample = x.shape[1:]
    matches = len(sample) == len(expected) and all(
        want is None or want == got for want, got in zip(expected, sample, strict=True)
    )
    if not matches:
        raise StepFailed(
            STEP_DATA,
            f"array 'x' in {path} has samples of shape {tuple(sample)} but the model input "
            f"'{model_input.name}' expects {_show(expected)}",
        )
    dtype = tf.as_dtype(model_input.dtype).as_numpy_dtype
    _check_no_truncation(path, x, model_input, dtype)
    try:
        x = x.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise StepFailed(
            STEP_DATA,
            f"array 'x' in {path} ({x.dtype}) cannot be cast to the model's "
            f"{model_input.dtype}: {exc}",
        ) from None
    return Dataset(path=path, x=x, y=y.astype(np.int64, copy=False))


def _check_no_truncation(path: Path, x: np.ndarray, model_input: TensorInfo, dtype: type) -> None:
    """Floats fed to an integer input (token ids, say) would be truncated without a word:
    accept whole numbers only, and name the first value that is not one."""
    if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(dtype, np.integer)):
        return
    fractional = np.flatnonzero(np.mod(x, 1) != 0)
    if fractional.size:
        value = x.reshape(-1)[fractional[0]]
        raise StepFailed(
            STEP_DATA,
            f"array 'x' in {path} holds floats ({x.dtype}) with fractions (e.g. {value:g}) but "
            f"the model input '{model_input.name}' is {model_input.dtype}: casting would "
            "truncate them; store the values the model expects (integer ids) as integers",
        )


def single_io(model: LoadedModel) -> TensorInfo:
    """Accuracy feeds one input and scores one output; say so if the model has more."""
    if len(model.inputs) != 1:
        raise StepFailed(
            STEP_DATA,
            f"model has {len(model.inputs)} inputs ({[i.name for i in model.inputs]}); "
            "accuracy mode feeds the npz 'x' array to exactly one input (if the others "
            "have defaults, name the one to feed in benchmark.inputs)",
        )
    if len(model.outputs) != 1:
        raise StepFailed(
            STEP_DATA,
            f"model has {len(model.outputs)} outputs ({model.outputs}); accuracy mode scores "
            "exactly one logits/probabilities output: choose it with benchmark.outputs",
        )
    return model.inputs[0]


def evaluate(model: LoadedModel, data: Dataset, batch_size: int, topk: int) -> AccuracyResult:
    """Top-k accuracy over all samples, in batches (the last one smaller or padded)."""
    info = model.inputs[0]
    check_batch_dim(info, batch_size, STEP_RUN)
    pad = info.shape[0] is not None
    correct = tied_wrong = 0
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    predicted: set[int] = set()
    for start in range(0, len(data.y), batch_size):
        batch = data.x[start : start + batch_size]
        count = len(batch)
        if pad and count < batch_size:
            batch = _pad(batch, batch_size)
        scores = call_model(model, [batch], STEP_RUN)[0][:count]
        hits, ties = count_correct(scores, data.y[start : start + count], topk)
        correct += hits
        tied_wrong += ties
        flat = np.asarray(scores).reshape(count, -1)
        low = flat.min(axis=0) if low is None else np.minimum(low, flat.min(axis=0))
        high = flat.max(axis=0) if high is None else np.maximum(high, flat.max(axis=0))
        predicted.update(int(c) for c in np.unique(np.argmax(flat, axis=1)))
    samples = len(data.y)
    constant = low is not None and high is not None and bool(np.all(low == high))
    return AccuracyResult(
        accuracy=correct / samples, correct=correct, samples=samples, topk=topk,
        tied_wrong=tied_wrong, outputs_constant=constant and samples > 1,
        predicted_classes=len(predicted),
    )  # fmt: skip


def count_correct(scores: np.ndarray, labels: np.ndarray, topk: int) -> tuple[int, int]:
    """(hits, ties counted wrong): a hit is a label strictly inside the top ``topk`` scores,
    ranked with every tie against it, so a model whose scores are all equal never scores.
    (``tf.math.in_top_k`` counts ties as in: a constant output would score 100%.) A
    non-finite score for the label counts as wrong."""
    flat = np.asarray(scores).reshape(len(labels), -1)
    classes = flat.shape[1]
    if np.any((labels < 0) | (labels >= classes)):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise StepFailed(
            STEP_RUN,
            f"label {int(bad)} in 'y' is outside the model's {classes} output classes",
        )
    target = flat[np.arange(len(labels)), labels]
    finite = np.isfinite(target)
    higher = np.sum(flat > target[:, None], axis=1)
    tied = np.sum(flat == target[:, None], axis=1) - 1  # other classes with the same score
    hits = (higher + tied < topk) & finite
    ties_lost = (higher < topk) & ~hits & finite
    return int(np.sum(hits)), int(np.sum(ties_lost))


def _pad(batch: np.ndarray, batch_size: int) -> np.ndarray:
    padding = np.zeros((batch_size - len(batch), *batch.shape[1:]), dtype=batch.dtype)
    return np.concatenate([batch, padding])


def _show(shape: list[int | None]) -> str:
    return "(" + ", ".join("None" if dim is None else str(dim) for dim in shape) + ")"
