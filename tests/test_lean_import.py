import subprocess
import sys


def test_import_stays_light():
    code = (
        "import sys, edgesmlp, edgesmlp.cli;"
        "heavy = [m for m in ('torch', 'openvino', 'nncf', 'tensorrt', 'onnxruntime', 'onnx', 'sklearn', 'matplotlib') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
