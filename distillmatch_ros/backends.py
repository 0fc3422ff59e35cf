"""Inference backends behind one call: (visible, thermal) float32 [1,1,H,W] -> numpy arrays.

* ``torch``: eager PyTorch on CPU or CUDA.
* ``onnxruntime``: the static-shape export run by ONNX Runtime (CUDA provider when present).
* ``onnxruntime_int8``: the same with the trunk quantised to INT8 (QDQ, quantize.py), on CPUs.
* ``openvino``: the same network compiled by OpenVINO's CPU plugin, FP32.
* ``openvino_int8``: the same with the coarse attention layers quantised to INT8 by NNCF
  (quantize.py), on CPUs.
* ``tensorrt``: the static-shape export compiled by torch-tensorrt in FP16; the engine is cached
  on disk keyed by model hash, TensorRT version and GPU, since a build takes minutes.

Heavy optional imports (onnxruntime, torch_tensorrt) happen only when that backend is chosen.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from .errors import BackendUnavailable
from .model import DistillMatch, ExportWrapper
from .options import Option

Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
BACKENDS = ("torch", "onnxruntime", "onnxruntime_int8", "openvino", "openvino_int8", "tensorrt")
ONNX_OPSET = 17
#: Changes whenever the exported graph changes for the same weights (cached exports are keyed by it).
GRAPH_VERSION = 5
#: Version of the banded graphs (coarse_band > 0) within GRAPH_VERSION; 2: the blocked band similarity.
BAND_GRAPH_VERSION = 2


def _device_reason(device: str) -> Optional[str]:
    """Why ``device`` cannot run a backend here; checked before a model loads, so that a typo is
    an error rather than a silent fall-back to the CPU."""
    if device == "":
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"must be cpu, cuda or cuda:N, got {device!r}"
    if d.type == "cpu":
        return None
    if d.type != "cuda":
        return f"must be cpu, cuda or cuda:N (every backend runs on one of them), got {device!r}"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return f"is {device!r}, but CUDA is not available here"
    if d.index is not None and d.index >= count:
        return f"is {device!r}, but only {count} CUDA device(s) are visible"
    return None


#: The torch device: the node's ``device`` parameter and the command line's --device.
DEVICE = Option("device", "", "Torch device (e.g. cuda:0); empty = the backend's choice", dynamic=False,
                validator=_device_reason)


def check_device(device: Optional[str], backend: str = "auto") -> None:
    """Raise BackendUnavailable when ``device`` is not usable, or not by ``backend``."""
    if backend in ("openvino", "openvino_int8") and device and device.split(":")[0] == "cuda":
        raise BackendUnavailable(f"backend {backend!r} runs on the CPU only, not on device {device!r}")
    problem = DEVICE.problem(device or "")
    if problem:
        raise BackendUnavailable(problem)
    if backend == "tensorrt" and device and torch.device(device).type != "cuda":
        raise BackendUnavailable(f"backend 'tensorrt' runs on CUDA only, not on device {device!r}")


def cache_dir() -> Path:
    d = Path(os.environ.get("DISTILLMATCH_CACHE", Path.home() / ".cache" / "distillmatch_ros"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def model_hash(model: DistillMatch) -> str:
    """Content hash of weights + config: the cache key of exported graphs and engines. A config
    without a coarse band hashes as before the key existed: the graphs, INT8 models and ``auto``
    records a machine already holds stay valid."""
    cfg = {k: v for k, v in model.config.items() if not (k == "coarse_band" and not v)}
    if cfg.get("coarse_band"):  # only the banded graphs changed since: only theirs are rebuilt
        cfg["band_graph_version"] = BAND_GRAPH_VERSION
    h = hashlib.sha256(repr(sorted(cfg.items())).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_onnx(model: DistillMatch, path: Path, size_wh: Tuple[int, int], for_openvino: bool = False) -> Path:
    """Export the single-pair static graph (batch 1, fixed W x H, K matches) to ONNX.
    ``for_openvino``: the coarse argmax written as OpenVINO runs it fastest (CoarseMatching._row_max)."""
    w, h = size_wh
    wrapper = ExportWrapper(model).eval()
    dummy = (torch.rand(1, 1, h, w), torch.rand(1, 1, h, w))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    model.coarse.argmax_by_compare = for_openvino
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # The tracer warns about Python ints taken from shapes: intended, shapes are static here.
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, dummy, str(tmp), input_names=["visible", "thermal"],
                              output_names=["visible_points", "thermal_points", "scores", "valid"],
                              opset_version=ONNX_OPSET, dynamo=False)
    finally:
        model.coarse.argmax_by_compare = False
    os.replace(tmp, path)
    return path


class TorchBackend:
    name = "torch"

    def __init__(self, model: DistillMatch, device: Optional[str]):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    def __call__(self, vis: np.ndarray, th: np.ndarray) -> Outputs:
        with torch.inference_mode():
            out = ExportWrapper(self.model)(torch.from_numpy(vis).to(self.device),
                                            torch.from_numpy(th).to(self.device))
        return tuple(o.cpu().numpy() for o in out)  # type: ignore[return-value]


def onnx_path(model: DistillMatch, size_wh: Tuple[int, int], for_openvino: bool = False) -> Path:
    """Cache path of the FP32 export of ``model`` at ``size_wh`` (``for_openvino``: that flavour),
    keyed by weights and graph version."""
    w, h = size_wh
    tag = "-ov" if for_openvino else ""
    return cache_dir() / f"distillmatch-{model_hash(model)}-{w}x{h}-op{ONNX_OPSET}-g{GRAPH_VERSION}{tag}.onnx"


def exported(model: DistillMatch, size_wh: Tuple[int, int], for_openvino: bool = False) -> Path:
    """The cached export, made now when it is missing."""
    path = onnx_path(model, size_wh, for_openvino)
    if not path.exists():
        export_onnx(model, path, size_wh, for_openvino)
    return path


def int8_path(model: DistillMatch, size_wh: Tuple[int, int], calibration: str) -> Path:
    """Cache path of the INT8 (QDQ trunk) model, keyed also by its calibration source."""
    return onnx_path(model, size_wh).with_suffix(f".int8-{calibration}.onnx")


def machine_tag() -> str:
    """ONNX Runtime version and CPU: a saved optimised graph holds kernels chosen for both."""
    import onnxruntime as ort
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        pass
    cpu = hashlib.sha256((platform.machine() + platform.processor() + flags).encode()).hexdigest()[:8]
    return f"ort{ort.__version__}-{cpu}"


class OnnxRuntimeBackend:
    """ONNX Runtime on the static export; ``int8``: the trunk quantised (quantize.py).

    Sessions run every graph optimisation (ORT_ENABLE_ALL: constant folding, conv/matmul fusions,
    NCHWc layouts) with one intra-op thread per torch thread and no spinning; the memory arena
    stays on (off was slower). The optimised graph is saved next
    to the export, keyed by ORT version and CPU, and later sessions load it with optimisation
    off, which saves most of the start-up time.
    """

    def __init__(self, model: DistillMatch, device: Optional[str], size_wh: Tuple[int, int],
                 int8: bool = False, prepare=None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("backend 'onnxruntime' needs the onnxruntime package "
                                     "(pip install onnxruntime, or onnxruntime-gpu)") from exc
        available = ort.get_available_providers()
        if device and device.startswith("cuda"):
            if int8:
                raise BackendUnavailable("backend 'onnxruntime_int8' is for CPUs; use onnxruntime or tensorrt on a GPU")
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(f"onnxruntime has no CUDA provider here (has {available})")
            index = torch.device(device).index or 0  # cuda:N runs on GPU N, as with torch
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.name = "onnxruntime_int8" if int8 else "onnxruntime"
        path = exported(model, size_wh)
        self.fp32_path = path
        if int8:
            from . import quantize
            path = quantize.built(lambda source: int8_path(model, size_wh, source),
                                  lambda out, pairs: quantize.quantize_trunk(self.fp32_path, out,
                                                                             quantize.network_feeds(prepare, pairs)),
                                  "INT8 model")
        self.onnx_path = path
        self.session_settings = {"intra_op_num_threads": torch.get_num_threads(),
                                 "graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        opts = ort.SessionOptions()
        for k, v in self.session_settings.items():
            setattr(opts, k, v)
        # Idle pool threads sleep instead of spinning: on a robot's few cores other nodes (and
        # the pipeline's own threads) need them; with 2 cores under load this was 1.3x faster.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Flush denormals to zero: the dual softmax's exponentials of far-apart cells underflow
        # into them, and x86 handles them in microcode (0.83-0.95x of the time in A/B runs);
        # values below 1e-38 change no match.
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        saved = path.with_suffix(f".{machine_tag()}-{'-'.join(p[:4] for p in providers)}.opt.onnx")
        if saved.exists():
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            load = saved
        else:
            opts.optimized_model_filepath = str(saved.with_suffix(".tmp.onnx"))
            opts.log_severity_level = 3  # its warning: such a file is for this machine (it is keyed so)
            load = path
        self.session = ort.InferenceSession(str(load), opts, providers=providers)
        if load is path and Path(opts.optimized_model_filepath).exists():
            os.replace(opts.optimized_model_filepath, saved)

    def __call__(self, vis: np.ndarray, th: np.ndarray) -> Outputs:
        out = self.session.run(None, {"visible": vis, "thermal": th})
        return out[0], out[1], out[2], out[3]


def openvino_settings(threads: int) -> dict:
    """How OpenVinoBackend compiles: FP32 (see its docstring on BF16), one latency-bound request
    on ``threads`` threads."""
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}


class OpenVinoBackend:
    """OpenVINO's CPU plugin on the static ONNX export (its own flavour: export_onnx), FP32;
    ``int8``: the NNCF-quantised model (quantize.py), built once into the cache as OpenVINO IR.

    Compiling takes under a second, so only the export (and the INT8 IR) is cached. Threads follow
    torch's count, as ONNX Runtime's do; the latency hint runs one request on all of them. Why no
    BF16, though OpenVINO offers it on CPUs with AMX: the whole graph in BF16 ran in half the time
    but lost 0.14 AUC@10 on M3SVD, the coarse transformer alone in BF16 lost 0.05 (also with FP32
    element-wise maths, torch autocast), and the encoder alone in BF16, as a second compiled
    graph, was no faster than this one graph in FP32 (BENCHMARKS.md, OpenVINO).
    """

    def __init__(self, model: DistillMatch, device: Optional[str], size_wh: Tuple[int, int],
                 int8: bool = False, prepare=None):
        self.name = "openvino_int8" if int8 else "openvino"
        check_device(device, self.name)
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable(f"backend {self.name!r} needs the openvino package "
                                     "(pip install openvino)") from exc
        core = ov.Core()
        self.onnx_path = exported(model, size_wh, for_openvino=True)
        path = self.onnx_path
        if int8:
            from . import quantize
            path = quantize.openvino_int8(self.onnx_path, prepare)
        self.model_path = path
        self.session_settings = openvino_settings(torch.get_num_threads())
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", self.session_settings)
        self.request = self.compiled.create_infer_request()

    def __call__(self, vis: np.ndarray, th: np.ndarray) -> Outputs:
        out = self.request.infer({"visible": vis, "thermal": th})
        # Copied: the request reuses its output buffers on the next call.
        return tuple(np.array(out[o]) for o in self.compiled.outputs)  # type: ignore[return-value]


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, model: DistillMatch, device: Optional[str], size_wh: Tuple[int, int]):
        if not torch.cuda.is_available():
            raise BackendUnavailable("backend 'tensorrt' needs a CUDA GPU; none is visible to PyTorch")
        try:
            import tensorrt
            import torch_tensorrt
        except ImportError as exc:
            raise BackendUnavailable("backend 'tensorrt' needs torch-tensorrt "
                                     "(pip install 'distillmatch_ros[tensorrt]')") from exc
        self.device = torch.device(device or "cuda")
        w, h = size_wh
        gpu = torch.cuda.get_device_name(self.device).replace(" ", "_")
        key = f"{model_hash(model)}-{w}x{h}-trt{tensorrt.__version__}-{gpu}-fp16"
        path = cache_dir() / f"distillmatch-{key}.ep"
        inputs = [torch.rand(1, 1, h, w, device=self.device), torch.rand(1, 1, h, w, device=self.device)]
        if path.exists():
            self.module = torch.export.load(str(path)).module()
        else:
            wrapper = ExportWrapper(model.to(self.device).eval())
            self.module = torch_tensorrt.compile(wrapper, ir="dynamo", inputs=inputs,
                                                 enabled_precisions={torch.float16, torch.float32},
                                                 truncate_double=True)
            torch_tensorrt.save(self.module, str(path), inputs=inputs)
        self.engine_path = path

    def __call__(self, vis: np.ndarray, th: np.ndarray) -> Outputs:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(vis).to(self.device), torch.from_numpy(th).to(self.device))
        return tuple(o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy()
                     for o in out)  # type: ignore[return-value]


def available_backends() -> list:
    """Backends usable on this machine, best first."""
    names = []
    if torch.cuda.is_available():
        try:
            import torch_tensorrt  # noqa: F401
            names.append("tensorrt")
        except ImportError:
            pass
    try:
        import onnxruntime  # noqa: F401
        names += ["onnxruntime", "onnxruntime_int8"]
    except ImportError:
        pass
    try:
        import openvino  # noqa: F401
        names.append("openvino")
        # Found, not imported: NNCF takes over a second to import, and only a build needs it.
        if importlib.util.find_spec("nncf") is not None:
            names.append("openvino_int8")
    except ImportError:
        pass
    names.append("torch")
    return names


def make_backend(name: str, model: DistillMatch, device: Optional[str], size_wh: Tuple[int, int], prepare=None):
    """The backend ``name``; ``auto`` here is the GPU rule (TensorRT, else torch on CUDA) or FP32
    ONNX Runtime; the Matcher measures the CPU choice itself (cpu_choice.py). ``prepare``: the
    matcher's preprocessing, for INT8 calibration."""
    check_device(device, name)
    if name == "auto":  # a device given picks among the backends that run on it
        cuda = torch.cuda.is_available() and (not device or torch.device(device).type == "cuda")
        if cuda and "tensorrt" in available_backends():
            name = "tensorrt"
        elif cuda:
            name = "torch"
        else:
            name = "onnxruntime" if "onnxruntime" in available_backends() else "torch"
    if name == "torch":
        return TorchBackend(model, device)
    if name in ("onnxruntime", "onnxruntime_int8"):
        return OnnxRuntimeBackend(model, device, size_wh, int8=name == "onnxruntime_int8", prepare=prepare)
    if name in ("openvino", "openvino_int8"):
        return OpenVinoBackend(model, device, size_wh, int8=name == "openvino_int8", prepare=prepare)
    if name == "tensorrt":
        return TensorRTBackend(model, device, size_wh)
    raise BackendUnavailable(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
