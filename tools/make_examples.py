#!/usr/bin/env python3
"""Regenerate the bundled example models in examples/ from onnxsplit.zoo (deterministic)."""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxsplit import zoo

EXAMPLES = {"tiny_cnn.onnx": zoo.tiny_cnn, "resnet_like.onnx": zoo.resnet_like}


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "examples"
    out.mkdir(exist_ok=True)
    for name, build in EXAMPLES.items():
        onnx.save_model(build(), str(out / name))
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
