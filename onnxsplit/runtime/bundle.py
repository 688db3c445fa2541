"""Reading a bundle folder written by ``onnxsplit split`` (``OUT/manifest.json`` + the two models).

:func:`load_bundle` checks everything a runtime relies on before any tensor moves, and fails with
one clear line naming the file or tensor: the folder and manifest exist, the manifest is JSON with
schema ``onnxsplit.manifest/1`` and the fields the runtime reads (``plan.boundary``,
``plan.outputs``, ``models``), every file listed under ``files`` exists with its sha256, and the
models' declared inputs/outputs agree with the plan.

Boundary tensors are sent with whatever dtype the edge model outputs: with int8 quantization the
edge model ends in QuantizeLinear and the cloud model starts with DequantizeLinear, so the manifest
entry may carry ``wire_dtype`` (e.g. ``uint8``), ``scale``, ``zero_point`` and ``wire_nbytes``
besides the original ``dtype``; the runtime checks the models against ``wire_dtype`` when given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxSplitError
from .protocol import datatype_from_name, fmt_shape, onnx_datatype

MANIFEST_SCHEMA = "onnxsplit.manifest/1"


class BundleError(OnnxSplitError):
    """A bundle folder is missing, incomplete, corrupt or inconsistent."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as declared in its ONNX graph (dims None when dynamic)."""

    name: str
    datatype: str  # KServe v2 datatype: FP32, UINT8, ...
    shape: tuple[int | None, ...]

    @property
    def static(self) -> bool:
        return all(d is not None for d in self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1 if d is None else d for d in self.shape]}


@dataclass(frozen=True)
class BoundarySpec:
    """One ``plan.boundary`` entry of the manifest."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    source: str  # "edge" or "input"
    wire_dtype: str | None = None
    wire_nbytes: int | None = None
    extra: dict = field(default_factory=dict)  # scale, zero_point, ... (quantization parameters)

    @property
    def bytes_on_wire(self) -> int:
        return self.wire_nbytes if self.wire_nbytes is not None else self.nbytes


@dataclass
class Bundle:
    """A validated bundle folder."""

    root: Path
    manifest: dict
    model_name: str  # the cloud half's name on the server (``<source stem>-cloud``)
    edge_path: Path | None
    cloud_path: Path | None
    boundary: list[BoundarySpec]
    outputs: list[tuple[str, str]]  # (name, source) in the original order
    edge_inputs: list[TensorSpec]
    edge_outputs: list[TensorSpec]
    cloud_inputs: list[TensorSpec]
    cloud_outputs: list[TensorSpec]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.outputs]

    @property
    def input_names(self) -> list[str]:
        """What the caller feeds: the edge model's inputs, then raw inputs only the cloud reads."""
        names = [t.name for t in self.edge_inputs]
        names += [b.name for b in self.boundary if b.source == "input" and b.name not in names]
        for name, src in self.outputs:  # a graph input passed straight through to an output
            if src == "input" and name not in names:
                names.append(name)
        return names

    @property
    def boundary_nbytes(self) -> int:
        return sum(b.bytes_on_wire for b in self.boundary)

    def input_spec(self, name: str) -> TensorSpec | None:
        for t in self.edge_inputs + self.cloud_inputs:
            if t.name == name:
                return t
        return None

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """One clear error for a missing/unexpected input or a wrong dtype/shape."""
        from .protocol import datatype_of, shape_matches

        wanted = self.input_names
        for name in wanted:
            if name not in feeds:
                raise OnnxSplitError(f"missing input '{name}' (the model takes: {', '.join(wanted)})")
        for name in feeds:
            if name not in wanted:
                raise OnnxSplitError(f"unexpected input '{name}' (the model takes: {', '.join(wanted)})")
        for name in wanted:
            arr = np.asarray(feeds[name])
            spec = self.input_spec(name)
            if spec is None:
                continue
            dt = datatype_of(arr)
            if dt != spec.datatype:
                raise OnnxSplitError(f"input '{name}' is {dt} ({arr.dtype}) but the model expects {spec.datatype}")
            if not shape_matches(arr.shape, spec.shape):
                raise OnnxSplitError(
                    f"input '{name}' has shape {fmt_shape(arr.shape)} but the model expects {fmt_shape(spec.shape)}"
                )

    def assemble(
        self,
        feeds: Mapping[str, np.ndarray],
        edge_results: Mapping[str, np.ndarray],
        cloud_results: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """The original outputs in the original order (same rule as ``SplitModels.assemble``)."""
        pools = {"edge": edge_results, "cloud": cloud_results, "input": feeds}
        return {name: pools[src][name] for name, src in self.outputs}

    def boundary_feeds(self, feeds: Mapping[str, np.ndarray], edge_results: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The tensors sent to the cloud: edge outputs as they are (any dtype), raw inputs unchanged."""
        return {b.name: (edge_results if b.source == "edge" else feeds)[b.name] for b in self.boundary}

    def session(self, side: str, *, optimize: bool = True, threads: int | None = None):
        """An onnxruntime CPU session for ``edge`` or ``cloud`` (loaded from the file: external data works)."""
        path = self.edge_path if side == "edge" else self.cloud_path
        if path is None:
            raise BundleError(f"bundle {self.root} has no {side} model")
        return make_session(path, optimize=optimize, threads=threads)


def make_session(path: Path, *, optimize: bool = True, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 4
    if threads is not None:
        so.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def _specs(values) -> list[TensorSpec]:  # noqa: ANN001
    out = []
    for vi in values:
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") != "tensor_type":
            raise BundleError(f"model input/output '{vi.name}' is not a tensor; it cannot cross the network")
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        try:
            datatype = onnx_datatype(tt.elem_type)
        except Exception as exc:
            raise BundleError(f"tensor '{vi.name}': {exc}") from None
        out.append(TensorSpec(vi.name, datatype, dims))
    return out


def _model_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    try:
        m = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise BundleError(f"{path} is not a readable ONNX model ({exc})") from None
    inits = {t.name for t in m.graph.initializer}
    return _specs(vi for vi in m.graph.input if vi.name not in inits), _specs(m.graph.output)


def model_name_for(manifest: dict) -> str:
    """The served name: ``manifest["name"]`` if set, else ``<source stem>-cloud``; safe for URLs and folders."""
    name = manifest.get("name")
    if not isinstance(name, str) or not name:
        src = (manifest.get("source") or {}).get("path") if isinstance(manifest.get("source"), dict) else None
        stem = Path(src).stem if isinstance(src, str) and src else "model"
        name = f"{stem}-cloud"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "model-cloud"


def _sha256(path: Path) -> str:
    from ..bundle import sha256_file

    return sha256_file(path)


def load_bundle(path: str | Path, *, verify_checksums: bool = True) -> Bundle:
    """Read and validate a bundle folder; :class:`BundleError` with one clear line otherwise."""
    root = Path(path)
    if not root.exists():
        raise BundleError(f"bundle folder {root} not found; create it with `onnxsplit split MODEL --at K -o {root}`")
    if not root.is_dir():
        raise BundleError(f"{root} is not a folder; pass the folder written by `onnxsplit split ... -o OUT`")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise BundleError(f"{root} has no manifest.json; it is not a bundle written by `onnxsplit split`")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({exc}); the bundle is corrupt, split again") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath} is not a JSON object; the bundle is corrupt, split again")
    schema = manifest.get("schema")
    if schema != MANIFEST_SCHEMA:
        raise BundleError(f"{mpath} has schema {schema!r}; this onnxsplit reads {MANIFEST_SCHEMA!r}")
    plan = manifest.get("plan")
    models = manifest.get("models")
    if not isinstance(plan, dict) or not isinstance(plan.get("boundary"), list) or not isinstance(plan.get("outputs"), list):
        raise BundleError(f"{mpath} has no plan.boundary / plan.outputs lists; the bundle is corrupt, split again")
    if not isinstance(models, dict):
        raise BundleError(f"{mpath} has no 'models' object; the bundle is corrupt, split again")

    # Files and checksums.
    files = manifest.get("files") or {}
    if not isinstance(files, dict):
        raise BundleError(f"{mpath}: 'files' must map paths to sha256 digests")
    model_paths: dict[str, Path | None] = {}
    for side in ("edge", "cloud"):
        rel = models.get(side)
        if rel is None:
            model_paths[side] = None
            continue
        p = root / str(rel)
        if not p.is_file():
            raise BundleError(f"bundle file {rel} is missing from {root} (listed in manifest.json models.{side})")
        model_paths[side] = p
    if verify_checksums:
        for rel, digest in files.items():
            p = root / rel
            if not p.is_file():
                raise BundleError(f"bundle file {rel} is missing from {root} (listed in manifest.json files)")
            actual = _sha256(p)
            if actual != digest:
                raise BundleError(
                    f"bundle file {rel} is corrupt: sha256 {actual[:12]}… but manifest.json says {str(digest)[:12]}…; "
                    "copy the bundle again"
                )

    # Plan entries.
    boundary = []
    for i, b in enumerate(plan["boundary"]):
        try:
            known = {"name", "shape", "dtype", "nbytes", "source", "wire_dtype", "wire_nbytes", "wire_name"}
            # An encoded boundary (int8/fp16, onnxsplit.quant) travels under its wire name: the edge
            # model outputs it and the cloud model reads it; the model's own tensor name is kept in
            # extra["tensor_name"].
            wire_name = b.get("wire_name") or b["name"]
            spec = BoundarySpec(
                name=str(wire_name),
                shape=tuple(int(d) for d in b["shape"]),
                dtype=str(b["dtype"]),
                nbytes=int(b["nbytes"]),
                source=str(b["source"]),
                wire_dtype=b.get("wire_dtype"),
                wire_nbytes=int(b["wire_nbytes"]) if b.get("wire_nbytes") is not None else None,
                extra={**{k: v for k, v in b.items() if k not in known},
                       **({"tensor_name": str(b["name"])} if wire_name != b["name"] else {})},
            )
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{mpath}: plan.boundary[{i}] needs name, shape, dtype, nbytes and source") from None
        if spec.source not in ("edge", "input"):
            raise BundleError(f"{mpath}: boundary tensor '{spec.name}' has source {spec.source!r} (edge or input expected)")
        boundary.append(spec)
    outputs = []
    for i, o in enumerate(plan["outputs"]):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str) or o.get("source") not in ("edge", "cloud", "input"):
            raise BundleError(f"{mpath}: plan.outputs[{i}] needs a name and a source (edge, cloud or input)")
        outputs.append((o["name"], o["source"]))

    edge_in, edge_out = _model_io(model_paths["edge"]) if model_paths["edge"] else ([], [])
    cloud_in, cloud_out = _model_io(model_paths["cloud"]) if model_paths["cloud"] else ([], [])

    # Consistency between the plan and the models' declared inputs/outputs.
    edge_out_names = {t.name for t in edge_out}
    cloud_out_names = {t.name for t in cloud_out}
    for name, src in outputs:
        if src == "edge" and name not in edge_out_names:
            raise BundleError(f"output '{name}' comes from the edge per manifest.json, but the edge model does not return it")
        if src == "cloud" and name not in cloud_out_names:
            raise BundleError(f"output '{name}' comes from the cloud per manifest.json, but the cloud model does not return it")
    if boundary:
        if model_paths["cloud"] is None:
            raise BundleError(f"{mpath} lists boundary tensors but no cloud model")
        cin = {t.name: t for t in cloud_in}
        bnames = [b.name for b in boundary]
        for b in boundary:
            if b.name not in cin:
                raise BundleError(f"boundary tensor '{b.name}' is not an input of the cloud model {models.get('cloud')}")
            if b.source == "edge" and b.name not in edge_out_names:
                raise BundleError(f"boundary tensor '{b.name}' comes from the edge but the edge model does not output it")
            want = datatype_from_name(b.wire_dtype or b.dtype)
            if want is not None and want != cin[b.name].datatype:
                raise BundleError(
                    f"boundary tensor '{b.name}': manifest.json says {b.wire_dtype or b.dtype} on the wire but the cloud "
                    f"model declares {cin[b.name].datatype}"
                )
        for name in cin:
            if name not in bnames:
                raise BundleError(f"cloud model input '{name}' is not in manifest.json plan.boundary; nothing would feed it")

    return Bundle(
        root=root,
        manifest=manifest,
        model_name=model_name_for(manifest),
        edge_path=model_paths["edge"],
        cloud_path=model_paths["cloud"],
        boundary=boundary,
        outputs=outputs,
        edge_inputs=edge_in,
        edge_outputs=edge_out,
        cloud_inputs=cloud_in,
        cloud_outputs=cloud_out,
    )


def describe(bundle: Bundle) -> dict[str, Any]:
    """A JSON-ready summary (for `--json` outputs)."""
    return {
        "bundle": str(bundle.root),
        "model_name": bundle.model_name,
        "inputs": bundle.input_names,
        "boundary": [
            {"name": b.name, "source": b.source, "dtype": b.wire_dtype or b.dtype, "shape": list(b.shape), "nbytes": b.bytes_on_wire}
            for b in bundle.boundary
        ],
        "outputs": [{"name": n, "source": s} for n, s in bundle.outputs],
    }
