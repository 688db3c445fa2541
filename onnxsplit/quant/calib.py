"""Calibration data: loading and validating sample inputs for static quantization.

Contract of :func:`load_calibration`:

- ``source`` is a folder, a file, or a list of files. Files are read in sorted path order
  (folders: every ``.npz``/``.npy`` file and every image below it, recursively), and samples are
  taken in file order, then array order, until ``samples`` samples are loaded (``None``: all).
- **``.npz``**: one array per model input, keyed by the input name; optional ``labels`` (also
  ``label``, ``y``, ``targets``): one integer class per sample, used for accuracy figures only.
  Any other key is an error (a misspelt input name must not be silently ignored).
- **``.npy``**: one array; allowed for a single-input model, or when the file is named after an
  input (``<input>.npy``; the ``.npy`` files of one folder then form one set with equal sample
  counts).
- **Sample layout** of an array for an input of shape ``S`` (the model's static shape, e.g.
  ``[1,3,224,224]``): exactly ``S`` is one sample; ``[N, *S]`` is N samples; ``[N*S[0], *S[1:]]``
  (samples stacked along the batch axis) is N samples. The dtype must equal the input's dtype
  (no silent casts: a float64 array for a float32 input is an error that says ``.astype``).
- **Images** (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``, ``.webp``) need a
  ``preprocess.json`` in their folder, the preprocessing spec (needs Pillow)::

      {"input": "x",              # optional for a single-input model
       "layout": "NCHW",          # or "NHWC"
       "color": "RGB",            # "RGB", "BGR" or "L" (default: "L" for 1 channel, else "RGB")
       "resize_short": 256,       # optional: scale so that the short side is this, then centre-crop
       "size": [224, 224],        # optional [H, W]; default: the input's spatial shape
       "scale": 0.00392156862745, # multiply pixels (0..255) by this (default 1/255)
       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}   # per channel, after scale

  i.e. ``x = (pixels * scale - mean) / std`` after a bilinear resize (or ``resize_short`` + centre
  crop) to the input's H x W; one image is one sample (the batch axis must be 1).
- Every error is one :class:`CalibrationError` line naming the file, the input and the expected
  shape/dtype.
- ``source=None``: :func:`synthetic_calibration` (random inputs), with a ``warnings.warn`` whose
  text contains "synthetic calibration", and ``CalibrationData.synthetic`` set; quantization
  parameters and accuracy figures computed from it describe random data, not the real inputs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxSplitError

__all__ = [
    "CalibrationData",
    "CalibrationError",
    "InputSpec",
    "SYNTHETIC_WARNING",
    "input_specs",
    "load_calibration",
    "synthetic_calibration",
]

LABEL_KEYS = ("labels", "label", "y", "targets")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SYNTHETIC_WARNING = (
    "synthetic calibration: no --calib data given, quantization ranges and accuracy figures come from "
    "random inputs and do not describe real data; pass --calib DIR with .npy/.npz samples"
)


class CalibrationError(OnnxSplitError):
    """Calibration data is missing, malformed, or does not match the model's inputs."""


@dataclass(frozen=True)
class InputSpec:
    """A model input that calibration samples must feed."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def describe(self) -> str:
        return f"{_dtype_name(self.dtype)}[{','.join(map(str, self.shape))}]"


def _dtype_name(dt: np.dtype) -> str:
    return {"float32": "float32", "float64": "float64", "float16": "float16"}.get(np.dtype(dt).name, np.dtype(dt).name)


def input_specs(model_or_graph) -> list[InputSpec]:  # noqa: ANN001
    """The inputs to feed: a :class:`~onnxsplit.ir.Graph` or a ModelProto with static input shapes."""
    from ..ir import Graph

    if isinstance(model_or_graph, Graph):
        specs = []
        for name in model_or_graph.inputs:
            t = model_or_graph.tensors[name]
            if t.type is None or not t.type.is_static:
                raise CalibrationError(f"model input '{name}' has no static shape; fix it with --input-shape")
            specs.append(InputSpec(name, tuple(t.type.shape), np.dtype(helper.tensor_dtype_to_np_dtype(t.type.elem_type))))  # type: ignore[arg-type]
        return specs
    model: onnx.ModelProto = model_or_graph
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        if any(d < 0 for d in dims):
            raise CalibrationError(f"model input '{vi.name}' has no static shape; fix it with --input-shape")
        specs.append(InputSpec(vi.name, dims, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))))
    return specs


@dataclass
class CalibrationData:
    """Samples (one feed dict per sample, each array of the model input's exact shape and dtype)."""

    samples: list[dict[str, np.ndarray]]
    labels: np.ndarray | None = None  # one integer class per sample, when the files provide them
    source: str = "synthetic"
    synthetic: bool = False
    files: list[str] = field(default_factory=list)
    warning: str | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.samples)

    @property
    def input_names(self) -> list[str]:
        return list(self.samples[0]) if self.samples else []

    def subset(self, start: int, stop: int | None = None) -> CalibrationData:
        return CalibrationData(
            self.samples[start:stop],
            None if self.labels is None else self.labels[start:stop],
            self.source,
            self.synthetic,
            self.files,
            self.warning,
        )

    def head(self, n: int) -> CalibrationData:
        return self.subset(0, n)

    def split(self, holdout: float | int = 0.25) -> tuple[CalibrationData, CalibrationData]:
        """(calibration part, held-out part): the last ``holdout`` samples (a count, or a fraction
        of the total, at least 1) are held out for accuracy checks. With a single sample both parts
        are that sample (nothing can be held out; the accuracy figures are then optimistic)."""
        n = len(self)
        if n <= 1:
            return self, self
        k = int(holdout) if isinstance(holdout, int) else max(1, int(round(n * float(holdout))))
        k = min(max(k, 1), n - 1)
        return self.subset(0, n - k), self.subset(n - k)

    def feeds_for(self, names: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """The samples restricted to ``names`` (e.g. the inputs the edge half reads)."""
        wanted = set(names)
        return [{k: v for k, v in s.items() if k in wanted} for s in self.samples]

    def reader(self, names: Sequence[str] | None = None):  # noqa: ANN201
        """An onnxruntime ``CalibrationDataReader`` over the samples (restricted to ``names``)."""
        from onnxruntime.quantization import CalibrationDataReader

        feeds = self.feeds_for(names) if names is not None else list(self.samples)

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(feeds)

            def get_next(self):  # noqa: ANN202
                return next(self._it, None)

            def rewind(self) -> None:
                self._it = iter(feeds)

            def __len__(self) -> int:
                return len(feeds)

        return _Reader()

    def to_json(self) -> dict:
        return {
            "source": "synthetic" if self.synthetic else self.source,
            "synthetic": self.synthetic,
            "samples": len(self),
            "files": list(self.files),
            "labels": self.labels is not None,
            **({"warning": self.warning} if self.warning else {}),
        }


# ---------------------------------------------------------------------------------- loading
def load_calibration(
    source: str | Path | Sequence[str | Path] | None,
    model_or_graph,  # noqa: ANN001
    *,
    samples: int | None = None,
    synthetic_samples: int = 32,
    seed: int = 0,
) -> CalibrationData:
    """Load and validate calibration samples for the model's inputs (see the module docstring)."""
    specs = input_specs(model_or_graph)
    if samples is not None and samples < 1:
        raise CalibrationError(f"--calib-samples must be at least 1, got {samples}")
    if source is None:
        return synthetic_calibration(model_or_graph, samples=samples or synthetic_samples, seed=seed)
    files = _collect_files(source)
    if not specs:
        raise CalibrationError("the model has no inputs to calibrate")
    out: list[dict[str, np.ndarray]] = []
    labels: list[np.ndarray] = []
    have_labels = True
    used: list[str] = []
    for group in _group_files(files, specs):
        got, lab = _load_group(group, specs)
        if not got:
            continue
        used.extend(str(f) for f in group)
        out.extend(got)
        if lab is None:
            have_labels = False
        else:
            labels.append(lab)
        if samples is not None and len(out) >= samples:
            break
    if not out:
        raise CalibrationError(f"no samples found in {_describe_source(source)}")
    n = len(out) if samples is None else min(samples, len(out))
    lab_arr = np.concatenate(labels)[:n] if have_labels and labels else None
    return CalibrationData(out[:n], lab_arr, _describe_source(source), False, used)


def synthetic_calibration(model_or_graph, *, samples: int = 32, seed: int = 0) -> CalibrationData:  # noqa: ANN001
    """Random samples (floats ~ N(0,1), integers in [0,4), bools uniform), with the loud warning."""
    specs = input_specs(model_or_graph)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        feed = {}
        for s in specs:
            if s.dtype.kind == "f":
                feed[s.name] = rng.standard_normal(s.shape).astype(s.dtype)
            elif s.dtype.kind in "iu":
                feed[s.name] = rng.integers(0, 4, size=s.shape).astype(s.dtype)
            elif s.dtype.kind == "b":
                feed[s.name] = rng.integers(0, 2, size=s.shape).astype(bool)
            else:
                raise CalibrationError(f"cannot make synthetic calibration data for input '{s.name}' of dtype {s.dtype}")
        out.append(feed)
    warnings.warn(SYNTHETIC_WARNING, UserWarning, stacklevel=2)
    return CalibrationData(out, None, "synthetic", True, [], SYNTHETIC_WARNING)


def _describe_source(source) -> str:  # noqa: ANN001
    if isinstance(source, (str, Path)):
        return str(source)
    return ", ".join(str(s) for s in source)


def _collect_files(source) -> list[Path]:  # noqa: ANN001
    items = [source] if isinstance(source, (str, Path)) else list(source)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in (".npy", ".npz", *IMAGE_SUFFIXES)
            )
            if not found:
                raise CalibrationError(
                    f"calibration folder {p} has no .npz/.npy files or images; put one .npz per sample set "
                    "(one array per model input name) there"
                )
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in (".npy", ".npz", *IMAGE_SUFFIXES):
                raise CalibrationError(f"calibration file {p} is not .npz, .npy or an image")
            files.append(p)
        else:
            raise CalibrationError(f"calibration data not found: {p}")
    return files


def _group_files(files: list[Path], specs: list[InputSpec]) -> Iterator[list[Path]]:
    """Units of loading: one .npz, one .npy (single input), a folder's <input>.npy set, one image."""
    names = {s.name for s in specs}
    sets: dict[Path, dict[str, Path]] = {}
    for f in files:
        suf = f.suffix.lower()
        if suf == ".npy" and len(specs) > 1:
            if f.stem not in names:
                raise CalibrationError(
                    f"calibration file {f}: a .npy file holds one array but the model has {len(specs)} inputs "
                    f"({', '.join(s.name for s in specs)}); use an .npz with one array per input name, or name the "
                    "file <input>.npy"
                )
            sets.setdefault(f.parent, {})[f.stem] = f
            continue
        yield [f]
    for folder, group in sets.items():
        missing = [s.name for s in specs if s.name not in group]
        if missing:
            raise CalibrationError(
                f"calibration folder {folder}: no {missing[0]}.npy for input '{missing[0]}' "
                f"(expected {next(s for s in specs if s.name == missing[0]).describe()} or a stack of them)"
            )
        yield [group[s.name] for s in specs]


def _load_group(group: list[Path], specs: list[InputSpec]) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    first = group[0]
    suf = first.suffix.lower()
    if suf in IMAGE_SUFFIXES:
        return [_load_image(first, specs)], None
    arrays: dict[str, np.ndarray] = {}
    labels = None
    if suf == ".npz":
        try:
            with np.load(first, allow_pickle=False) as z:
                content = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - any unreadable file: one clear line
            raise CalibrationError(f"calibration file {first} cannot be read as .npz ({type(exc).__name__}: {exc})") from None
        names = {s.name for s in specs}
        for key, arr in content.items():
            if key in names:
                arrays[key] = arr
            elif key in LABEL_KEYS:
                labels = arr
            else:
                raise CalibrationError(
                    f"calibration file {first} has array '{key}', which is not a model input (inputs: "
                    f"{', '.join(sorted(names))}; labels may be stored as 'labels')"
                )
        for s in specs:
            if s.name not in arrays:
                raise CalibrationError(
                    f"calibration file {first} has no array for input '{s.name}' (keys: {', '.join(sorted(content)) or 'none'}); "
                    f"expected {s.describe()} or a stack of them"
                )
    else:  # .npy: a single-input model, or one <input>.npy per input
        for f, s in zip(group, specs if len(specs) > 1 else specs[:1]):
            try:
                arrays[s.name] = np.load(f, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001
                raise CalibrationError(f"calibration file {f} cannot be read as .npy ({type(exc).__name__}: {exc})") from None
    file_of = {s.name: (group[i] if len(group) > 1 else first) for i, s in enumerate(specs)}
    counts = {}
    for s in specs:
        counts[s.name] = _check_array(file_of[s.name], s, arrays[s.name])
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"'{k}': {v}" for k, v in counts.items())
        raise CalibrationError(f"calibration file {first}: inputs hold different numbers of samples ({detail})")
    n = next(iter(counts.values()))
    split = {s.name: _as_samples(arrays[s.name], s, n) for s in specs}
    samples = [{s.name: split[s.name][i] for s in specs} for i in range(n)]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        batch = specs[0].shape[0] if specs[0].shape else 1
        if labels.dtype.kind not in "iu" or labels.size not in (n, n * max(batch, 1)):
            raise CalibrationError(
                f"calibration file {first}: 'labels' must hold one integer class per sample ({n}), "
                f"got {labels.dtype}[{labels.size}]"
            )
        if labels.size != n:  # batch > 1: one label per batch row; keep the first row's label per sample
            labels = labels.reshape(n, -1)[:, 0]
        labels = labels.astype(np.int64)
    return samples, labels


def _check_array(path: Path, spec: InputSpec, arr: np.ndarray) -> int:
    """Number of samples in ``arr`` for ``spec``, or a one-line error naming file, input, expectation."""
    s = spec.shape
    expected = (
        f"expected {spec.describe()} (one sample), [N,{','.join(map(str, s))}] or "
        f"[N*{s[0] if s else 1},{','.join(map(str, s[1:]))}] (N samples)"
        if s
        else f"expected a {_dtype_name(spec.dtype)} scalar or [N] (N samples)"
    )
    got = f"{_dtype_name(arr.dtype)}[{','.join(map(str, arr.shape))}]"
    if arr.dtype != spec.dtype:
        hint = f"; convert with .astype(np.{_dtype_name(spec.dtype)})" if arr.dtype.kind in "fiub" and spec.dtype.kind in "fiub" else ""
        raise CalibrationError(f"calibration file {path}: input '{spec.name}' has dtype {got}; {expected}{hint}")
    shape = tuple(arr.shape)
    if shape == s:
        return 1
    if len(shape) == len(s) + 1 and shape[1:] == s and shape[0] > 0:
        return shape[0]
    if s and len(shape) == len(s) and shape[1:] == s[1:] and s[0] > 0 and shape[0] % s[0] == 0 and shape[0] > 0:
        return shape[0] // s[0]
    raise CalibrationError(f"calibration file {path}: input '{spec.name}' has shape {got}; {expected}")


def _as_samples(arr: np.ndarray, spec: InputSpec, n: int) -> list[np.ndarray]:
    if tuple(arr.shape) == spec.shape:
        return [np.ascontiguousarray(arr)]
    return [np.ascontiguousarray(a) for a in arr.reshape((n, *spec.shape))]


# ----------------------------------------------------------------------------------- images
def _load_image(path: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    spec_path = path.parent / "preprocess.json"
    if not spec_path.is_file():
        raise CalibrationError(
            f"calibration image {path} needs a preprocessing spec {spec_path} (keys: input, layout NCHW/NHWC, "
            "color RGB/BGR/L, resize_short, size [H,W], scale, mean, std); see onnxsplit.quant.calib"
        )
    try:
        pre = json.loads(spec_path.read_text())
    except ValueError as exc:
        raise CalibrationError(f"preprocessing spec {spec_path} is not JSON ({exc})") from None
    if not isinstance(pre, dict):
        raise CalibrationError(f"preprocessing spec {spec_path} must be a JSON object")
    name = pre.get("input")
    if name is None:
        if len(specs) != 1:
            raise CalibrationError(
                f"preprocessing spec {spec_path} must name the image input ('input': one of {', '.join(s.name for s in specs)})"
            )
        spec = specs[0]
    else:
        match = [s for s in specs if s.name == name]
        if not match:
            raise CalibrationError(f"preprocessing spec {spec_path}: 'input' {name!r} is not a model input ({', '.join(s.name for s in specs)})")
        if len(specs) != 1:
            raise CalibrationError(f"calibration image {path}: image calibration supports single-input models only; use .npz files")
        spec = match[0]
    layout = str(pre.get("layout", "NCHW")).upper()
    if layout not in ("NCHW", "NHWC") or len(spec.shape) != 4 or spec.shape[0] != 1:
        raise CalibrationError(
            f"calibration image {path}: input '{spec.name}' is {spec.describe()}; images need a [1,C,H,W] (layout NCHW) "
            "or [1,H,W,C] (layout NHWC) input"
        )
    if spec.dtype.kind != "f":
        raise CalibrationError(f"calibration image {path}: input '{spec.name}' is {spec.describe()}, not a float input")
    c, h, w = (spec.shape[1], spec.shape[2], spec.shape[3]) if layout == "NCHW" else (spec.shape[3], spec.shape[1], spec.shape[2])
    color = str(pre.get("color", "L" if c == 1 else "RGB")).upper()
    if color not in ("RGB", "BGR", "L") or (color == "L") != (c == 1):
        raise CalibrationError(f"preprocessing spec {spec_path}: color {color!r} does not fit {c} channels of input '{spec.name}'")
    try:
        from PIL import Image
    except ImportError:
        raise CalibrationError("image calibration data needs Pillow: pip install pillow (or give .npz files)") from None
    try:
        img = Image.open(path)
        img = img.convert("L" if color == "L" else "RGB")
    except Exception as exc:  # noqa: BLE001
        raise CalibrationError(f"calibration image {path} cannot be read ({type(exc).__name__}: {exc})") from None
    size = pre.get("size", [h, w])
    if list(size) != [h, w]:
        raise CalibrationError(f"preprocessing spec {spec_path}: size {size} does not match input '{spec.name}' ({h}x{w})")
    short = pre.get("resize_short")
    if short:
        iw, ih = img.size
        f = float(short) / min(iw, ih)
        img = img.resize((max(w, round(iw * f)), max(h, round(ih * f))), Image.BILINEAR)
        iw, ih = img.size
        left, top = (iw - w) // 2, (ih - h) // 2
        img = img.crop((left, top, left + w, top + h))
    else:
        img = img.resize((w, h), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if color == "BGR":
        x = x[:, :, ::-1]
    x = x * np.float32(pre.get("scale", 1.0 / 255.0))
    mean = np.asarray(pre.get("mean", 0.0), dtype=np.float32).reshape(-1)
    std = np.asarray(pre.get("std", 1.0), dtype=np.float32).reshape(-1)
    if mean.size not in (1, c) or std.size not in (1, c) or np.any(std == 0):
        raise CalibrationError(f"preprocessing spec {spec_path}: mean/std need 1 or {c} values (std non-zero)")
    x = (x - mean) / std
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return {spec.name: np.ascontiguousarray(x[None].astype(spec.dtype))}
