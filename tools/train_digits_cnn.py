"""Train the small digits CNN shipped as ``examples/digits_cnn.onnx`` (the int8 test/example model).

Data: scikit-learn's bundled ``load_digits`` (1,797 8x8 grayscale digits, pixel values 0..16,
no download). Preprocessing (the model's input contract): ``image = pixels / 16`` as float32, shape
``[1, 1, 8, 8]`` (NCHW, batch 1); output ``logits`` float32 ``[1, 10]``.

Split (fixed seed, stratified): 1,097 training samples, 400 calibration samples
(``examples/digits_calib.npz``: ``image`` float32 [400,1,8,8], ``labels`` int64 [400]; 400 so that
the 25% that ``--calib`` holds out (100) resolves a 1% top-1 budget) and 300 held-out test samples
(``examples/digits_test.npz``, same keys). Neither the calibration nor the test samples are
trained on.

Needs torch (training only; the package and the tests never import it)::

    pip install torch scikit-learn
    python tools/train_digits_cnn.py            # writes examples/digits_cnn.onnx + the two .npz files

The network (~160 k parameters, ~640 KB): Conv(1->32,3x3)+ReLU, Conv(32->64,3x3)+ReLU, MaxPool 2,
Conv(64->128,3x3)+ReLU, MaxPool 2, Flatten, Gemm(512->128)+ReLU, Gemm(128->10).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_split(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]  # [N,1,8,8]
    y = d.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=700, random_state=seed, stratify=y)
    x_cal, x_test, y_cal, y_test = train_test_split(x_rest, y_rest, test_size=300, random_state=seed, stratify=y_rest)
    return {"train": (x_train, y_train), "calib": (x_cal, y_cal), "test": (x_test, y_test)}


def build_net():  # noqa: ANN201
    import torch.nn as nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
            self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.relu = nn.ReLU()
            self.fc1 = nn.Linear(128 * 2 * 2, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):  # noqa: ANN001, ANN202
            x = self.relu(self.conv1(x))
            x = self.pool(self.relu(self.conv2(x)))
            x = self.pool(self.relu(self.conv3(x)))
            x = x.flatten(1)
            return self.fc2(self.relu(self.fc1(x)))

    return DigitsCNN()


def train(epochs: int = 40, seed: int = 0):  # noqa: ANN201
    import torch

    torch.manual_seed(seed)
    data = load_split(seed)
    x, y = (torch.from_numpy(a) for a in data["train"])
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            # light augmentation: random 1-pixel shifts
            xb = x[idx]
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if (epoch + 1) % 10 == 0:
            net.eval()
            with torch.no_grad():
                xt, yt = (torch.from_numpy(a) for a in data["test"])
                acc = (net(xt).argmax(1) == yt).float().mean().item()
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}  test accuracy {acc:.4f}")
    net.eval()
    return net, data


def export(net, path: Path) -> None:  # noqa: ANN001
    import onnx
    import torch

    dummy = torch.zeros(1, 1, 8, 8)
    torch.onnx.export(
        net, (dummy,), str(path), input_names=["image"], output_names=["logits"], opset_version=17, dynamo=False
    )
    m = onnx.load(str(path))
    m.producer_name = "onnxsplit tools/train_digits_cnn.py"
    m.doc_string = "Digits CNN (scikit-learn load_digits, 8x8, input = pixels/16, NCHW batch 1); logits [1,10]"
    onnx.checker.check_model(m, full_check=True)
    onnx.save_model(m, str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "examples"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net, data = train(args.epochs)
    export(net, out / "digits_cnn.onnx")
    for split in ("calib", "test"):
        xs, ys = data[split]
        np.savez_compressed(out / f"digits_{split}.npz", image=xs, labels=ys)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    xs, ys = data["test"]
    pred = np.array([sess.run(None, {"image": xs[i : i + 1]})[0].argmax() for i in range(len(xs))])
    print(f"onnx test accuracy {np.mean(pred == ys):.4f} on {len(ys)} held-out samples; wrote {out}/digits_*")


if __name__ == "__main__":
    main()
