"""The quantize job: checkpoint -> fold -> deploy form -> calibrate -> INT8 for one target -> evaluate -> report.

The target writes its artifacts into a temporary folder that is renamed to ``OUT/<target>`` only
when the whole job, evaluation and report included, has succeeded.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edgesmlp import targets
from edgesmlp.artifacts import reserved_dir, sha256_file
from edgesmlp.errors import ConfigError, DataError, RuntimeFailure
from edgesmlp.jobs.evaluate import Evaluation, evaluate_runners, measure_target
from edgesmlp.jobs.inputs import check_output, open_inputs, origin, output_candidates, reads
from edgesmlp.jobs.jobfile import entries
from edgesmlp.jobs.ranks import scratch, world
from edgesmlp.jobs.report import VERSIONED, Result, build_report, model_info, write_report
from edgesmlp.jobs.spec import MANIFEST_VERSION, QuantizeRequest
from edgesmlp.precision import Precision, accuracy_reference
from edgesmlp.targets.base import Build, Job, Log
from edgesmlp.timing import Phases, library_versions, machine_info

DEFAULT_OUTPUT = Path("edgesmlp-out")


@dataclass
class QuantizeOutcome:
    directory: Path
    report: dict


def run_quantize(request: QuantizeRequest, log: Log = print) -> QuantizeOutcome:
    from edgesmlp.deploy import to_deploy

    target = targets.get(request.target)
    if not target.ships:
        raise ConfigError(f"--target {target.name} has nothing to quantize: choose one of "
                          f"{', '.join(n for n in targets.names() if targets.get(n).ships)}")
    config = request.config if request.config is not None else target.config_type()
    if not isinstance(config, target.config_type):
        raise ConfigError(f"the {target.name} target takes a {target.config_type.__name__}, "
                          f"not a {type(config).__name__}")
    target.check(config, request.form.value, qat=request.qat is not None)
    rank, size = world()
    candidates = output_candidates(request.output, DEFAULT_OUTPUT, target.name)
    if rank == 0:
        check_output(candidates(0), request.output is not None, request.force, reads(request))
    phases = Phases()
    with phases("load"):
        inputs = open_inputs(request, log)
    ckpt, preprocess, val_set, calib_set, calib = (inputs.ckpt, inputs.preprocess, inputs.val_set, inputs.calib_set,
                                                   inputs.calib)
    with phases("load"):
        search = (search_images(request, ckpt.config.num_classes, preprocess, calib_set, calib, val_set, log)
                  if request.budget.searches and request.qat is None else None)
    output = (reserved_dir(candidates, request.force, explicit=request.output is not None, log=log) if rank == 0
              else scratch(target.name))
    with output as (target_dir, tmp):
        qat = _prepare_qat(request, ckpt, target.name, target_dir, config) if request.qat is not None else None
        model = to_deploy(ckpt.model) if request.form.value == "deploy" else ckpt.model
        job = Job(ckpt, model, request.form.value, preprocess, calib.x, config, request.run, qat, request.budget,
                  search)
        with phases("build"):  # export, calibration, the budget search, INT8 (report.json's budget has the search's)
            build = target.build(job, tmp, log)
        with phases("compile"):
            runners = {v.precision: v.make_runner(request.run.throughput_batch).prepare() for v in build.variants}
        with phases("evaluate"):  # under torchrun every rank evaluates its share of the images
            evaluation = evaluate_runners(runners, val_set, preprocess, request.run.throughput_batch)
        if rank > 0:  # and rank 0 alone times the rows and ships
            return QuantizeOutcome(target_dir, {})
        if evaluation.skipped:
            key, reason = evaluation.skipped[0]
            log(f"warning: skipped {len(evaluation.skipped)} unreadable validation image(s), e.g. {key}: {reason}")
        with phases("timing"):
            results, failures = measure_target(target.name, build.variants, evaluation.accuracy, evaluation.sample,
                                               request.run, log, runners)
        if failures:
            precision, reason = next(iter(failures.items()))
            raise RuntimeFailure(f"{target.name} {precision} failed while timed: {reason}")
        base = accuracy_reference(results)(target.name)
        for r in results:
            if base is not None and base.top1 is not None and r.top1 is not None:
                r.drop_top1 = base.top1 - r.top1
        build.notes.extend(_why_not_faster(results, ckpt))
        for path in build.scratch:
            path.unlink(missing_ok=True)
        report = _report(request, job, build, evaluation, results, calib_set, val_set)
        report["budget"] = _budget_section(request, build, results)
        report["targets"] = [target.name]
        report["ranks"] = size
        report["seconds"] = phases.to_dict(evaluate_by_row=evaluation.seconds)
        write_report(tmp, report)
        _write_manifest(tmp, request, job, build, calib_set, val_set)
    if qat is not None:
        qat.checkpoint.unlink(missing_ok=True)  # the job finished: nothing left to resume
    return QuantizeOutcome(target_dir, report)


def search_images(request: QuantizeRequest, num_classes: int, preprocess, calib_set, calib, val_set, log: Log):
    """The images the budget is met on, never the calibration sample: ``--search-size`` images of ``--search``, or
    else of the calibration source's images the sample left out. Only when the source holds no others are the
    calibration images themselves used (and ``overlap`` says so, which widens the margin). Refuses, before any
    quantization, a budget the images cannot certify (see ``quantize.budget``)."""
    from edgesmlp.calibration.sources import ImageSet, load_tensors, open_images
    from edgesmlp.quantization.budget import SearchImages

    taken = {_identity(item) for item in calib_set.items}
    spec, split = (request.search, "search") if request.search is not None else (request.calibration.images, "calib")
    source = open_images(spec, split, num_classes)
    rest = tuple(item for item in source.items if _identity(item) not in taken)
    if not rest:
        if request.search is not None:
            raise DataError(f"{source.origin}: every one of its {len(source.items)} images is a calibration image; "
                            "give --search images that --calib's sample does not hold")
        # said when the search starts (targets.base.choose_float_layers), and in the report beside the verdict
        certify = _certifiable(request.budget, len(calib.x), calib.labels is not None, "--search")
        return SearchImages(calib.x, calib.labels, f"the calibration images ({calib_set.origin})", True, certify)
    if request.search is not None and len(rest) < len(source.items):
        log(f"note: {len(source.items) - len(rest)} images of {source.origin} are calibration images and are left "
            f"out of the search; {len(rest)} remain")
    images = ImageSet(rest, source.origin, source.kind, source.classes).sample(request.search_size,
                                                                              request.calibration.seed + 1)
    labelled = all(item.label is not None for item in images.items)
    certify = _certifiable(request.budget, len(images.items), labelled, "--search")  # refused before loading
    loaded = load_tensors(images, preprocess, "Loading search images")
    if loaded.skipped:  # fewer images than counted
        certify = _certifiable(request.budget, len(loaded.x), loaded.labels is not None, "--search")
    shared = len({_identity(i) for i in images.items} & {_identity(i) for i in val_set.items})
    if shared:
        log(f"warning: {shared} search images are validation images too, so --val no longer checks the budget on "
            "images the search never saw: give --search a split that --val does not hold")
    origin = f"{len(loaded.x)} images of {source.origin} that calibration did not use"
    return SearchImages(loaded.x, loaded.labels, origin, False, certify)


def _identity(item) -> str:
    return str(item.path.resolve()) if item.path is not None else item.key


def _certifiable(budget, images: int, labelled: bool, option: str) -> bool:
    """Whether ``images`` search images can certify ``budget`` at all (no image flipped); a budget of the user's
    own they cannot is refused (ConfigError), the default one is decided on the estimate, with a note."""
    import math

    from edgesmlp.quantization.budget import CONFIDENCE

    needed = budget.images_needed(labelled)
    if images >= needed:
        return True
    many = "no number of images" if math.isinf(needed) else f"at least {needed:,} images"
    if budget.default:  # decided on the estimate; the report says so (jobs.report.budget_lines)
        return False
    fix = ("ask for less than 100% agreement or a drop above 0" if math.isinf(needed) else
           f"give {option} with {needed:,} or more images (a split of your validation data that --val does not hold)"
           ", or ask for less")
    raise ConfigError(f"{budget.describe()} cannot be certified with {CONFIDENCE:.0%} confidence on {images} "
                      f"search images: it needs {many}; {fix}")


TINY_MACS = 100_000_000  # below this, per-operation overhead, not arithmetic, sets a CPU's latency


def _why_not_faster(results: list[Result], ckpt) -> list[str]:
    """The first screen's honest word when INT8 is not faster: say why, and where it is."""
    from edgesmlp.model import count_macs

    by_precision = {r.precision: r for r in results}
    int8, fp32 = by_precision.get(Precision.int8), by_precision.get(Precision.fp32)
    if int8 is None or fp32 is None or int8.latency_ms_p50 < fp32.latency_ms_p50:
        return []
    macs = count_macs(ckpt.model, ckpt.config.image_size, ckpt.config.in_chans)
    if macs >= TINY_MACS:
        return [f"INT8 was not faster than FP32 here ({int8.latency_ms_p50:.2f} vs {fp32.latency_ms_p50:.2f} ms): "
                "`edgesmlp bench --profile` shows where the time goes, layer by layer."]
    return [f"INT8 is not faster here because this model is tiny ({macs / 1e6:.1f} M MACs per image): per-operation "
            "overhead, not arithmetic, sets its latency. At sMLPNet-T's size (5 G MACs) INT8 pays off: edgesmlp's "
            "docs/measurements.md has the numbers per kind of CPU, and `edgesmlp bench` on your model measures yours."]




def _prepare_qat(request: QuantizeRequest, ckpt, target: str, target_dir: Path, config):
    from edgesmlp.quantization.qat import model_identity, prepare_qat

    # The weight width is a constructor argument of the fake quantizers, not a tensor in the checkpoint: without
    # it in the identity, a run resumed with the other --weight-bits would train the other width silently.
    identity = model_identity(ckpt.sha256, target, request.form.value, ckpt.config.to_dict(),
                              config.to_dict().get("weight_bits"))
    checkpoint = target_dir.parent / f"{target_dir.name}.qat-checkpoint.pt"
    return prepare_qat(request.qat, ckpt.bundled, ckpt.config.num_classes, identity, checkpoint)


def _budget_section(request: QuantizeRequest, build: Build, results: list[Result]) -> dict:
    """What was asked, what the search chose on the calibration images, what the validation images say, and
    what keeping layers in float cost in latency against full INT8."""
    rows = {r.precision: r for r in results}
    shipped, full = rows.get(Precision.int8), rows.get(Precision.int8_all)
    section = {**request.budget.to_dict(), "search": build.manifest.get("fallback")}
    if shipped is not None:
        section["validation"] = {"agreement": shipped.agreement, "drop": shipped.drop_top1,
                                 "kept_float": shipped.kept_float, "quantized_layers": shipped.quantized_layers}
    if shipped is not None and full is not None and shipped.latency_ms_p50 and full.latency_ms_p50:
        section["latency_cost"] = shipped.latency_ms_p50 / full.latency_ms_p50  # >1: slower than full INT8
    return section


def checkpoint_info(ckpt) -> dict:
    return model_info(str(ckpt.path), ckpt.bundled, ckpt.sha256, ckpt.weights, ckpt.config.to_dict(),
                      ckpt.config.variant)


def _report(request: QuantizeRequest, job: Job, build: Build, evaluation: Evaluation, results: list[Result],
            calib_set, val_set) -> dict:
    data = {"val": val_set.origin, "val_images": evaluation.images, "val_skipped": len(evaluation.skipped),
            "calib": calib_set.origin, "calib_images": len(job.calibration),
            "calib_skipped": len(calib_set.items) - len(job.calibration), "labelled": evaluation.labelled}
    notes = list(build.notes) + [
        f"Agreement and cosine compare each row's logits with the first row's on the same {evaluation.images} images."
    ]
    if not evaluation.labelled:
        notes.append("The validation images carry no labels: only agreement and cosine are reported.")
    machine = {**machine_info(), "threads": request.run.cpu_threads}
    return build_report(results, checkpoint_info(job.ckpt), data, machine, library_versions(*VERSIONED), notes)


def _write_manifest(folder: Path, request: QuantizeRequest, job: Job, build: Build, calib_set, val_set) -> None:
    options = {
        "target": request.target, "form": request.form.value, "config": job.config.to_dict(),
        "calibration": {"images": origin(request.calibration.images), "size": request.calibration.size,
                        "seed": request.calibration.seed},
        "preprocess": asdict(request.preprocess), "run": asdict(request.run),
        "method": "qat" if request.qat is not None else "ptq",
        "qat": request.qat.to_dict() if request.qat is not None else None,
    }
    manifest = {
        "edgesmlp_manifest": MANIFEST_VERSION,
        # what bench --from loads, by SHA-256: a file changed since (a float graph swapped in as INT8) fails its row
        "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                  if p.is_file() and not p.name.startswith((".", "report.", "manifest."))},
        "target": request.target,
        "command": " ".join(["edgesmlp", *sys.argv[1:]]) if sys.argv and "edgesmlp" in sys.argv[0] else None,
        "versions": library_versions(*VERSIONED),
        "weights": {"path": str(job.ckpt.path), "sha256": job.ckpt.sha256, "taken": job.ckpt.weights,
                    "bundled": job.ckpt.bundled},
        "model": job.ckpt.config.to_dict(),
        "form": job.form,
        "calibration": {"origin": calib_set.origin, "images": len(job.calibration),
                        "list_sha256": calib_set.fingerprint()},
        "validation": {"origin": val_set.origin, "list_sha256": val_set.fingerprint()},
        "preprocess": job.preprocess.to_dict(),
        "options": json.loads(json.dumps(options, default=str)),
        # the job file that rebuilds this folder: edgesmlp quantize --config manifest.json -o OUT2
        "job": entries(request, targets.get(request.target), job.config, None if job.ckpt.bundled else job.ckpt.path),
        **build.manifest,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
