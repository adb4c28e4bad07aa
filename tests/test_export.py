import pytest

from edgesmlp.errors import ExportError
from edgesmlp.export import export_onnx


def test_export_fails_loudly_and_writes_nothing_when_runtime_disagrees(small_model, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="max \\|logit difference\\|"):
        export_onnx(small_model, out, 32, tolerance=0.0 - 1.0)  # no graph can pass a negative tolerance
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_export_matches_pytorch(small_model, tmp_path):
    result = export_onnx(small_model, tmp_path / "m.onnx", 32, batch=3)
    assert result.max_abs_diff <= 1e-4 and result.batch == 3
