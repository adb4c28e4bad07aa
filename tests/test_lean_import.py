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


def test_help_imports_nothing_heavy():
    """`--help` on every command prints without importing torch or a runtime (what makes it take seconds)."""
    code = (
        "import sys\nfrom edgesmlp.__main__ import main\n"
        "for command in ([], ['quantize'], ['bench'], ['check'], ['sensitivity'], ['inspect'], ['lint-qdq']):\n"
        "    sys.argv = ['edgesmlp', *command, '--help']\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'openvino', 'nncf', 'onnxruntime', 'onnx') if m in sys.modules]\n"
        "sys.exit(f'imported {heavy}' if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
