"""sample-models where Intel Neural Compressor is not installed: fp32 alone, and it says so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from service.tools import samples


def test_without_inc_quantization_is_skipped_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "neural_compressor", None)  # import fails as if missing

    assert samples.quantize_with_inc(object(), np.zeros((1, 2)), np.zeros(1)) is None
    err = capsys.readouterr().err
    assert "Intel Neural Compressor is not installed" in err
    assert samples.INC_INSTALL_HINT in err


def test_without_int8_the_request_benchmarks_the_fp32_graph_alone(tmp_path: Path) -> None:
    path = samples._write_request(tmp_path, with_int8=False)

    body = json.loads(path.read_text())
    assert "optimized_model" not in body
    assert body["input_model"]["path"] == str(tmp_path / "fp32.pb")
    with_int8 = json.loads(samples._write_request(tmp_path, with_int8=True).read_text())
    assert with_int8["optimized_model"] == {
        "precision": "int8", "path": str(tmp_path / "int8.pb"), "mods": ["benchmark", "accuracy"]
    }  # fmt: skip
    assert with_int8["benchmark"]["batch_size"] == samples.REQUEST_BATCH_SIZE
