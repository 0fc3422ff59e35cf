"""Static INT8 quantisation of the network for CPUs, with each runtime's own tool.

* ONNX Runtime (``onnxruntime_int8``): QDQ of the trunk's convolutions (onnxruntime.quantization).
  The texture CNN and the semantic student are convolutions over the whole image, where 8-bit
  arithmetic (VNNI) pays and per-channel weights keep the features.
* OpenVINO (``openvino_int8``): NNCF post-training quantisation of the coarse attention layers
  (asymmetric activations: NNCF's MIXED preset). Their GEMMs over the 1/8 tokens are where INT8
  pays on OpenVINO. The encoder stays FP32: it sees a camera's raw statistics, and calibrated on
  RoadScene and TNO alone, an INT8 encoder lost 0.05 AUC@10 on M3SVD, a camera outside the
  calibration, where the attention layers alone lost nothing (BENCHMARKS.md).

In both, the similarity, the dual softmax, the selection and the fine windows decide where a match
lands and stay FP32.

Calibration images, first found wins (the source is part of the cache key):

1. ``$DISTILLMATCH_CALIBRATION_DIR``: folders (``:``-separated) holding ``visible/`` and
   ``thermal/`` images of the same names (a ``split.json`` there limits them to its ``train`` list);
2. the shipped weights' training sets beside a source checkout (``../shared/data``: RoadScene's
   train split, TNO), on the development machine; never the validation or dev sets, nor M3SVD,
   the camera kept out to measure generalisation;
3. otherwise the demo's sample pairs: scikit-image's bundled photos with V2I-GAN
   pseudo-infrared (:mod:`distillmatch_ros.bag.sample`), so a fresh clone can build it too.

The quantised model is built at its first use (``backend="onnxruntime_int8"`` or
``"openvino_int8"``, or ``python -m distillmatch_ros.cpu_prepare``, which also measures them for
``auto``: cpu_choice.py) into the cache next to the FP32 export, keyed by the model hash, the
graph version and the calibration source (and NNCF's version), so new weights get a new one.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

ENV_DIR = "DISTILLMATCH_CALIBRATION_DIR"
#: Exported node-name scopes quantised to INT8 for ONNX Runtime (Conv nodes only).
TRUNK_SCOPES = ("/model/texture/", "/model/semantic/")
#: Node names NNCF leaves in FP32 for OpenVINO (regular expressions): all but the coarse
#: attention layers (``/model/layers.N/``), i.e. the encoder, the fine stage and the graph's top
#: level (the similarity matmuls, the dual softmax, the selection, point bookkeeping).
OPENVINO_FP32_NODES = (r"^/model/(?!layers\.\d+/).*",)
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
Pair = Tuple[np.ndarray, np.ndarray]


def _folder_pairs(folder: Path, limit: int) -> List[Pair]:
    """(visible, thermal) images of a ``visible/`` + ``thermal/`` folder, its train split only."""
    vis_dir, th_dir = folder / "visible", folder / "thermal"
    if not (vis_dir.is_dir() and th_dir.is_dir()):
        return []
    names = sorted(p.name for p in vis_dir.iterdir() if p.suffix.lower() in IMAGE_EXT and (th_dir / p.name).exists())
    split = folder / "split.json"
    if split.is_file():
        train = set(json.loads(split.read_text()).get("train", []))
        names = [n for n in names if n in train]
    if len(names) > limit:  # spread over the whole folder (videos: different clips and scenes)
        names = [names[int(i)] for i in np.linspace(0, len(names) - 1, limit)]
    out = []
    for n in names:
        v = cv2.imread(str(vis_dir / n), cv2.IMREAD_COLOR)
        t = cv2.imread(str(th_dir / n), cv2.IMREAD_UNCHANGED)
        if v is not None and t is not None:
            out.append((v, t if t.ndim == 2 else cv2.cvtColor(t, cv2.COLOR_BGR2GRAY)))
    return out


def training_folders() -> Tuple[List[Path], str]:
    """The calibration folders (rules 1-2 of the module doc) and a name for the cache key."""
    env = [Path(p).expanduser() for p in os.environ.get(ENV_DIR, "").split(os.pathsep) if p]
    if env:
        return env, "env-" + "-".join(re.sub(r"\W", "", p.name) for p in env)[:40]
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    found = [data / n for n in ("roadscene", "tno") if (data / n / "visible").is_dir()]
    return found, "train-" + "-".join(p.name for p in found) if found else ""


def calibration_pairs(count: int = 48) -> Tuple[List[Pair], str]:
    """``count`` calibration pairs and their source name (see the module doc)."""
    folders, source = training_folders()
    pairs: List[Pair] = []
    for f in folders:
        pairs += _folder_pairs(f, max(1, count // len(folders)))
    if pairs:
        return pairs, source
    from .bag.sample import VISIBLE_SIZE, sample_pairs
    generated, _ = sample_pairs(VISIBLE_SIZE, views_per_photo=max(1, count // 4))
    return [(p.visible, p.thermal) for p in generated], "sample"


def trunk_convs(onnx_path: Path) -> List[str]:
    """Names of the Conv nodes of the trunk in an exported (or pre-processed) graph."""
    import onnx
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "Conv" and n.name.startswith(TRUNK_SCOPES)]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over preprocessed network inputs."""

    def __init__(self, feeds: Sequence[dict]):
        self._it: Iterator[dict] = iter(feeds)

    def get_next(self) -> Optional[dict]:
        return next(self._it, None)


def quantize_trunk(fp32_path: Path, out_path: Path, feeds: Sequence[dict]) -> Path:
    """QDQ INT8 model (uint8 activations, per-channel int8 weights, MinMax calibration over
    ``feeds``) of the trunk convolutions of ``fp32_path``, written atomically to ``out_path``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pre = out_path.with_suffix(".pre.onnx")
    tmp = out_path.with_suffix(".tmp.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    try:
        quantize_static(str(pre), str(tmp), _Reader(feeds), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_quantize=trunk_convs(pre), calibrate_method=CalibrationMethod.MinMax)
        os.replace(tmp, out_path)
    finally:
        for p in (pre, tmp):
            if p.exists():
                p.unlink()
    return out_path


def network_feeds(prepare: Callable[[np.ndarray, np.ndarray], tuple], pairs: Sequence[Pair]) -> List[dict]:
    """Network inputs of ``pairs`` as the matcher makes them (``Matcher.prepare``)."""
    feeds = []
    for v, t in pairs:
        tv, tt = prepare(v, t)[2:]
        feeds.append({"visible": tv, "thermal": tt})
    return feeds


def calibration_source() -> str:
    """The name :func:`calibration_pairs` gives its source, without reading any image (the cache
    key of a built model, which a start checks before deciding to build)."""
    return training_folders()[1] or "sample"


def built(path_for: Callable[[str], Path], build: Callable[[Path, List[Pair]], None], what: str) -> Path:
    """The quantised model at ``path_for(calibration source)``: from the cache, or built now by
    ``build(path, calibration pairs)`` (announced: it takes a minute). The images are read only
    to build. An OpenVINO ``.xml`` counts as built with its ``.bin`` beside it."""
    def done(p: Path) -> bool:
        return p.exists() and (p.suffix != ".xml" or p.with_suffix(".bin").exists())
    out = path_for(calibration_source())
    if done(out):
        return out
    pairs, source = calibration_pairs()
    out = path_for(source)  # the named folders may hold no usable pair: then the sample pairs
    print(f"building the {what} once ({len(pairs)} calibration pairs from {source}) -> {out}", flush=True)
    build(out, pairs)
    return out


def openvino_int8(fp32_onnx: Path, prepare: Optional[Callable[[np.ndarray, np.ndarray], tuple]]) -> Path:
    """The OpenVINO IR (``.xml`` + ``.bin``) of ``fp32_onnx`` quantised by NNCF, from the cache or
    built now (calibration pairs as in the module doc, through ``prepare``, the matcher's
    preprocessing at the graph's size). Raises BackendUnavailable without NNCF."""
    from .errors import BackendUnavailable
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailable("backend 'openvino_int8' needs NNCF (pip install nncf)") from exc
    if prepare is None:
        raise BackendUnavailable("backend 'openvino_int8' needs the matcher's preprocessing to calibrate")

    def build(out: Path, pairs: List[Pair]) -> None:
        import logging

        import openvino as ov
        nncf.set_log_level(logging.ERROR)  # its per-node INFO lines would flood a node's log
        feeds = network_feeds(prepare, pairs)
        quantized = nncf.quantize(ov.Core().read_model(str(fp32_onnx)), nncf.Dataset(feeds), subset_size=len(feeds),
                                  preset=nncf.QuantizationPreset.MIXED,
                                  ignored_scope=nncf.IgnoredScope(patterns=list(OPENVINO_FP32_NODES), validate=False))
        tmp = out.with_name(out.stem + f".{os.getpid()}.tmp.xml")
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))  # the weights first: the .xml marks it done
        os.replace(tmp, out)
    return built(lambda source: fp32_onnx.with_suffix(f".int8-{source}-nncf{nncf.__version__}.xml"), build,
                 "OpenVINO INT8 model")
