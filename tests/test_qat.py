"""Quantization-aware training on the bundled model, for both targets, with the real runtimes."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from edgesmlp.cli import app
from edgesmlp.errors import DataError, InputError
from edgesmlp.jobs.quantize import run_quantize
from edgesmlp.jobs.spec import Calibration, QuantizeRequest
from edgesmlp.targets.base import RunSettings
from edgesmlp.quantization import qat as qat_module
from edgesmlp.quantization.qat import QATConfig, QATJob
from edgesmlp.quantization.qdq_lint import lint_qdq
from tests.conftest import compile_error_failing_once, nhwc_transpose_pairs

runner = CliRunner()
PTQ_FILES = {
    "openvino": {"manifest.json", "model.bin", "model.xml", "model_fp32.bin", "model_fp32.xml", "report.json",
                 "report.md"},
    "jetson": {"README.md", "build_engine.sh", "manifest.json", "model_fp32.onnx", "model_int8_qdq.onnx",
               "model_fp16.onnx", "model_int8_qdq_fp16.onnx", "report.json", "report.md"},
}


def rows(report):
    return {r["precision"]: r for r in report["results"]}


def assert_ships_what_ptq_ships(output, target: str, epochs: int = 2) -> None:
    """A finished QAT run in ``output``: exactly PTQ's artifacts, nothing left to resume, accuracy at least PTQ's."""
    folder = output / target
    assert {p.name for p in folder.iterdir()} == PTQ_FILES[target] | {".edgesmlp"}  # exactly what PTQ ships
    assert not list(output.glob("*.qat-checkpoint.pt"))  # finished: nothing left to resume
    r = rows(json.loads((folder / "report.json").read_text()))
    assert r["int8"]["top1"] >= r["int8-ptq"]["top1"]  # QAT at least PTQ, side by side
    assert r["int8"]["top1"] >= r["fp32"]["top1"] - 0.2
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["qat"]["epochs"] == epochs and manifest["qat"]["labelled"]
    if target == "jetson":
        assert lint_qdq(folder / "model_int8_qdq.onnx") == []
    else:  # trained, then shipped with the token mixing channels-last, as PTQ's graph
        assert nhwc_transpose_pairs(folder / "model.xml") > 0
        assert "FakeQuantize" in (folder / "model.xml").read_text()  # INT8 in the IR, not fake quantization in float
        assert (folder / "model.bin").stat().st_size * 2.5 < (folder / "model_fp32.bin").stat().st_size  # INT8 weights


def test_openvino_qat_matches_ptq_and_compiles_nothing_beside_a_stale_extension_lock(tmp_path):
    """OpenVINO QAT on the bundled model ships PTQ's artifacts at least PTQ's accuracy (the Jetson's run is
    test_interrupted_run_resumes). And it builds nothing: NNCF's PyTorch QAT builds a C++ extension at first use
    and, beside a lock a killed build left, waits and fails (ExtensionLoaderTimeoutException); edgesmlp's OpenVINO
    QAT succeeds beside such a lock and leaves the extension cache as it found it. OpenVINO's and NNCF's telemetry
    stay unloaded."""
    cache = tmp_path / "torch_extensions"
    (cache / "quantized_functions_cpu").mkdir(parents=True)
    (cache / "quantized_functions_cpu" / "lock").write_text("")
    code = ("import sys; from edgesmlp.__main__ import main; sys.argv = ['edgesmlp', 'quantize', '--method', 'qat', "
            f"'--epochs', '2', '--latency-seconds', '0', '-o', {str(tmp_path / 'out')!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('telemetry', sys.modules.get('openvino_telemetry'))\n"
            "    print('exit', e.code)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TORCH_EXTENSIONS_DIR": str(cache)})
    tail = result.stdout.strip().splitlines()[-2:]
    assert tail == ["telemetry None", "exit 0"], result.stdout[-2000:] + result.stderr[-2000:]
    assert_ships_what_ptq_ships(tmp_path / "out", "openvino")
    assert [p.relative_to(cache).as_posix() for p in cache.rglob("*")] == ["quantized_functions_cpu",
                                                                          "quantized_functions_cpu/lock"]


def test_qat_recovers_what_ptq_loses(tmp_path):
    """One calibration image wrecks OpenVINO PTQ's ranges; QAT's trained ranges recover."""
    outcome = run_quantize(QuantizeRequest(target="openvino", output=tmp_path, run=RunSettings(latency_seconds=0, latency_iters=3),
                                           calibration=Calibration(size=1, seed=3), qat=QATConfig(epochs=2)),
                           log=lambda _: None)
    r = rows(outcome.report)
    assert r["int8-ptq"]["drop_top1"] > 5.0
    assert r["int8"]["top1"] > r["int8-ptq"]["top1"] + 5.0


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    real_epoch = qat_module._epoch

    def interrupted(*args, **kwargs):
        if args[7] == 1:  # the second epoch
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(qat_module, "_epoch", interrupted)
    request = QuantizeRequest(target="jetson", output=tmp_path, run=RunSettings(latency_seconds=0, latency_iters=3),
                              qat=QATConfig(epochs=2))
    with pytest.raises(KeyboardInterrupt):
        run_quantize(request, log=lambda _: None)
    assert not (tmp_path / "jetson").exists()  # no half artifact
    checkpoint = tmp_path / "jetson.qat-checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1  # lost at most the epoch in flight
    monkeypatch.setattr(qat_module, "_epoch", real_epoch)
    from dataclasses import replace

    outcome = run_quantize(replace(request, qat=replace(request.qat, resume=True)), log=lambda _: None)
    manifest = json.loads((outcome.directory / "manifest.json").read_text())
    assert manifest["qat"]["resumed_from_epoch"] == 1 and len(manifest["qat"]["losses"]) == 1
    assert not checkpoint.exists()
    assert_ships_what_ptq_ships(tmp_path, "jetson")  # and the resumed run ships what an uninterrupted one does


def test_resume_from_another_target_is_refused(tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    request = QuantizeRequest(target="jetson", output=tmp_path, run=RunSettings(latency_seconds=0, latency_iters=3),
                              qat=QATConfig(epochs=2))
    real_epoch = qat_module._epoch
    calls = {"n": 0}

    def one_then_stop(*args, **kwargs):
        calls["n"] += 1
        return real_epoch(*args, **kwargs) if calls["n"] == 1 else stop()

    monkeypatch.setattr(qat_module, "_epoch", one_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_quantize(request, log=lambda _: None)
    (tmp_path / "jetson.qat-checkpoint.pt").rename(tmp_path / "openvino.qat-checkpoint.pt")
    result = runner.invoke(app, ["quantize", "--target", "openvino", "--method", "qat", "--resume", "-o",
                                 str(tmp_path), "--epochs", "2"])
    assert result.exit_code == 2 and "made for another target ('jetson'" in result.stderr
    missing = runner.invoke(app, ["quantize", "--target", "jetson", "--method", "qat", "--resume", "-o",
                                  str(tmp_path / "fresh")])
    assert missing.exit_code == 2 and "no checkpoint" in missing.stderr


@pytest.mark.parametrize(("made", "resumed"), [("8", "7"), ("7", "8")])
def test_resume_with_the_other_weight_width_is_refused(tmp_path, made, resumed):
    """The weight width is no tensor in the checkpoint: resuming an 8-bit run with --weight-bits 7 (or back) would
    train the other width silently, so the identity carries it and the resume is refused before any work."""
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization.fakequant import QATDeploySMLPNet

    ckpt = load_checkpoint()
    identity = qat_module.model_identity(ckpt.sha256, "openvino", "deploy", ckpt.config.to_dict(), int(made))
    student = QATDeploySMLPNet(to_deploy(ckpt.model), weight_bits=int(made))
    optimizer = torch.optim.AdamW(student.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    qat_module._save(tmp_path / "openvino.qat-checkpoint.pt", identity, student, optimizer, schedule, 1)
    result = runner.invoke(app, ["quantize", "--target", "openvino", "--method", "qat", "--resume", "-o", str(tmp_path),
                                 "--epochs", "2", "--weight-bits", resumed])
    assert result.exit_code == 2, result.output
    assert f"made for another --weight-bits ('{made}', this run is '{resumed}')" in result.stderr
    assert not (tmp_path / "openvino").exists() and (tmp_path / "openvino.qat-checkpoint.pt").is_file()
    assert qat_module.load_resumable(tmp_path / "openvino.qat-checkpoint.pt", identity)["epoch"] == 1  # same width


def test_unlabelled_training_folder_distils_only(tmp_path):
    from edgesmlp.calibration.digits import load_split

    train = tmp_path / "unlabelled"
    train.mkdir()
    for i, (image, _) in enumerate(load_split("train")[:96]):
        image.save(train / f"{i}.png")
    lines = []
    outcome = run_quantize(QuantizeRequest(target="jetson", output=tmp_path / "o", run=RunSettings(latency_seconds=0, latency_iters=3),
                                           qat=QATConfig(epochs=1, train=train)), log=lines.append)
    assert any("no labels: fine-tuning by distillation" in line for line in lines)
    assert not json.loads((outcome.directory / "manifest.json").read_text())["qat"]["labelled"]


def test_training_set_smaller_than_a_batch(tmp_path):
    from PIL import Image

    (tmp_path / "few").mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32)).save(tmp_path / "few" / f"{i}.png")
    result = runner.invoke(app, ["quantize", "--target", "jetson", "--method", "qat", "--train", str(tmp_path / "few"),
                                 "-o", str(tmp_path / "o"), "--batch-size", "8"])
    assert result.exit_code == 2 and "5 training images, fewer than one batch of 8" in result.stderr
    assert not (tmp_path / "o" / "jetson").exists()


def test_out_of_memory_suggests_a_smaller_batch(tmp_path):
    from edgesmlp.calibration.sources import open_images
    from edgesmlp.calibration.preprocess import Preprocess

    class Exhausted(torch.nn.Module):  # a student whose forward exhausts memory, as a too-large batch does
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(InputError, match="out of memory at --batch-size 64: try --batch-size 32"):
        job = QATJob(open_images(None, "train"), QATConfig(batch_size=64), tmp_path / "qat.pt", ())
        preprocess = Preprocess(32, 1.0, mean=(0.5,) * 3, std=(0.5,) * 3)
        qat_module.fine_tune(Exhausted(), torch.nn.Identity(), job, preprocess)


def test_own_weights_need_training_images(tmp_path, small_model):
    torch.save(small_model.state_dict(), tmp_path / "w.pth")
    with pytest.raises(DataError, match="--calib is required"):
        run_quantize(QuantizeRequest(weights=tmp_path / "w.pth", qat=QATConfig(), output=tmp_path), log=lambda _: None)


@pytest.mark.slow
def test_two_processes_under_torchrun_end_with_identical_weights(tmp_path):
    from edgesmlp.calibration.digits import write_imagefolders

    write_imagefolders(tmp_path / "digits")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "edgesmlp", "quantize", "--target", "jetson", "--method", "qat", "--epochs", "1",
               "--batch-size", "16", "--train", str(tmp_path / "digits" / "calib"), "--calib-size", "64",
               "-o", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={"OMP_NUM_THREADS": "1", **os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d)/2 final weights sha256 ([0-9a-f]{64})", result.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    assert (tmp_path / "out" / "jetson" / "model_int8_qdq.onnx").is_file()
    assert json.loads((tmp_path / "out" / "jetson" / "manifest.json").read_text())["qat"]["world_size"] == 2


def test_openvino_qat_exports_nchw_when_openvino_cannot_compile_channels_last(monkeypatch):
    """The trained student ships channels-last; should OpenVINO fail to compile that INT8 graph, the NCHW form is
    exported instead and the log says so. (Training is skipped: this is about the export. OpenVINO 2026.4 compiles
    every channels-last graph edgesmlp makes, so a stand-in for compile_error reports the failure once.)"""
    import numpy as np

    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization import openvino_qat
    from edgesmlp.runtimes.openvino import compile_error

    fails_once = compile_error_failing_once(compile_error)
    monkeypatch.setattr(openvino_qat, "fine_tune", lambda *args, **kwargs: {"epochs": 0})
    monkeypatch.setattr(openvino_qat, "compile_error", fails_once)
    ckpt = load_checkpoint()
    calibration = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    lines = []
    int8, _ = openvino_qat.quantize_aware_training(to_deploy(ckpt.model), ckpt.model, calibration, None, None,
                                                   lines.append)
    assert len(fails_once.calls) == 1 and any("exporting the NCHW deploy form" in line for line in lines), lines
    assert "Transpose" not in {op.get_type_name() for op in int8.get_ops()} and compile_error(int8) is None


@pytest.mark.parametrize("conv_fuse", [False, True])
def test_openvino_qat_export_fuses_as_ptq_does(monkeypatch, conv_fuse):
    """With ``conv_fuse`` (``OpenVINOPTQConfig.fuse``, conv on x86 without VNNI) the trained student's channels-last
    Concats are fused by INT8 1x1 Convolutions, as PTQ's are: its Concat inputs share one quantizer, so the
    FakeQuantize repeated after the Transpose keeps them INT8. Without it the fuse is a MatMul (FullyConnected)."""
    import numpy as np
    import openvino as ov

    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization import openvino_qat

    monkeypatch.setattr(openvino_qat, "fine_tune", lambda *args, **kwargs: {"epochs": 0})
    ckpt = load_checkpoint()
    c = ckpt.config
    calibration = np.random.default_rng(0).standard_normal((4, c.in_chans, c.image_size, c.image_size)).astype(np.float32)
    int8, _ = openvino_qat.quantize_aware_training(to_deploy(ckpt.model), ckpt.model, calibration, None, None,
                                                   lambda line: None, conv_fuse=conv_fuse)
    request = ov.Core().compile_model(int8, "CPU", {"PERF_COUNT": True}).create_infer_request()
    request.infer({0: calibration[:1]})
    fuses = [(p.node_type, p.exec_type) for p in request.profiling_info
             if p.status.name == "EXECUTED" and p.node_type != "Reorder"
             and (".fuse/" in p.node_name or "aten::matmul/MatMul_2" in p.node_name)]
    assert fuses, [p.node_name for p in request.profiling_info][:40]
    assert all(kind.lower().endswith("_i8") for _, kind in fuses), fuses
    # The last stage's 1x1 token grid keeps the MatMul fuse either way (deploy.set_channels_last).
    assert [op for op, _ in fuses] == ["Convolution" if conv_fuse else "FullyConnectedQuantizedLegacy"] * 4 + [
        "FullyConnectedQuantizedLegacy"], fuses
