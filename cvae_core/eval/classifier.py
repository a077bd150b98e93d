"""The in-project MNIST classifier (SPEC section 7): a small CNN trained here, on the same data as the VAEs, that
judges generated digits without any download. ``logits(x)`` gives class scores; ``features(x)`` gives the 128-d
penultimate layer that classifier-FID is computed on (Heusel et al. 2017, arXiv:1706.08500, with this network in
place of Inception: such an FID is *not* comparable with Inception FID or with numbers from other papers).

Shipped in ``checkpoints/classifier-mnist/``: ``classifier.safetensors`` (weights, float16 storage; never a pickle)
and ``classifier.json`` (the config, the exact training command, epochs, accuracy, training time, and the ``sha256``
of the weights file, checked on loading). There is no
``config.json`` there on purpose, so that the app's run lists ignore the folder. Rebuild it with
``python scripts/train_classifier.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from cvae_core.data import to_float
from cvae_core.errors import CheckpointError
from cvae_core.integrity import pickle_note, read_weights, record_hashes
from cvae_core.io import swap_into_place

REPO = Path(__file__).resolve().parents[2]
FOLDER = "classifier-mnist"
WEIGHTS = "classifier.safetensors"
INFO = "classifier.json"
REBUILD = "rebuild it with: python scripts/train_classifier.py"


@dataclass
class ClassifierConfig:
    """Architecture of the CNN; saved in classifier.json and rebuilt with ClassifierConfig(**d)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W); inputs are floats in [0, 1] (uint8 / 255)
    num_classes: int = 10  # K
    widths: tuple[int, ...] = (16, 32, 64, 64)  # conv 3x3 channels; the first keeps 28 px, the others halve it
    feature_dim: int = 128  # penultimate layer: the features of classifier-FID
    dropout: float = 0.3  # before the last two linear layers (training only)

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)  # JSON gives lists
        self.widths = tuple(int(v) for v in self.widths)


class MnistClassifier(nn.Module):
    """All-convolutional body (Springenberg et al. 2015, arXiv:1412.6806: stride-2 convolutions instead of
    max-pooling, which is slow on CPU) with batch norm (Ioffe & Szegedy 2015, arXiv:1502.03167):
    28 -> 28 -> 14 -> 7 -> 4 px, then a 128-d ReLU feature layer and K logits. About 0.19 M parameters."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c, h, w = config.image_shape
        blocks: list[nn.Module] = []
        for i, width in enumerate(config.widths):
            stride = 1 if i == 0 else 2
            blocks += [nn.Conv2d(c, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            c, h, w = width, (h - 1) // stride + 1, (w - 1) // stride + 1
        self.body = nn.Sequential(*blocks)  # (B, 1, 28, 28) -> (B, 64, 4, 4)
        self.fc = nn.Linear(c * h * w, config.feature_dim)
        self.out = nn.Linear(config.feature_dim, config.num_classes)
        self.drop = nn.Dropout(config.dropout)

    @staticmethod
    def _input(x: torch.Tensor) -> torch.Tensor:
        return to_float(x) if x.dtype == torch.uint8 else x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim) for images (B, 1, 28, 28): floats in [0, 1] or uint8."""
        h = self.body(self._input(x)).flatten(1)  # (B, 1024)
        return F.relu(self.fc(self.drop(h)))  # (B, 128)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K) for images (B, 1, 28, 28): floats in [0, 1] or uint8."""
        return self.out(self.drop(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Predicted classes (N,) int64 on the CPU, in batches."""
        return self.features_and_predictions(x, batch_size)[1]

    @torch.no_grad()
    def features_and_predictions(self, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, feature_dim) float32, predicted classes (N,) int64), both on the CPU, in batches."""
        device = next(self.parameters()).device
        feats, preds = [], []
        for i in range(0, len(x), batch_size):
            f = self.features(x[i : i + batch_size].to(device))
            feats.append(f.float().cpu())
            preds.append(self.out(f).argmax(1).cpu())
        if not feats:
            return torch.zeros(0, self.config.feature_dim), torch.zeros(0, dtype=torch.long)
        return torch.cat(feats), torch.cat(preds)


# --- training --------------------------------------------------------------------------------------------------
def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (B, C, H, W) by an integer offset in [-max_shift, max_shift]^2, zero fill."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator)
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :]  # (B, 1, 1, W)
    idx = torch.arange(B)[:, None, None, None]
    return padded[idx, torch.arange(x.shape[1])[None, :, None, None], rows, cols]


def train_classifier(x_train_u8: torch.Tensor, y_train: torch.Tensor, *, epochs: int = 3, batch_size: int = 128,
                     lr: float = 3e-3, weight_decay: float = 1e-4, max_shift: int = 0, seed: int = 0,
                     config: ClassifierConfig | None = None,
                     progress: Callable[[int, int, float], None] | None = None) -> MnistClassifier:
    """AdamW with a one-cycle learning-rate schedule on cross-entropy; minibatches drawn from a private seeded
    generator (the global RNG is only used by dropout, which is seeded by torch.manual_seed(seed) here).
    `progress(step, total_steps, loss)` is called every 50 steps. Returns the model in eval mode."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = MnistClassifier(config)
    n = len(x_train_u8)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # one-cycle schedule (Smith & Topin 2017, arXiv:1708.07120); a constant rate for runs too short to warm up
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.2) if total >= 10
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    model.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            x = random_shift(to_float(x_train_u8[idx]), max_shift, g)  # (B, 1, 28, 28)
            loss = F.cross_entropy(model.logits(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None and (step % 50 == 0 or step == total):
                progress(step, total, float(loss.detach()))
    return model.eval()


@torch.no_grad()
def accuracy(model: MnistClassifier, x_u8: torch.Tensor, y: torch.Tensor) -> tuple[float, list[float]]:
    """(overall accuracy, per-class accuracy list of K) on a labelled set."""
    pred = model.predict(x_u8)
    y = y.cpu()
    K = model.config.num_classes
    per_class = [int((pred[y == k] == k).sum()) / int((y == k).sum()) if (y == k).any() else float("nan")
                 for k in range(K)]
    return int((pred == y).sum()) / len(y), per_class


# --- storage ---------------------------------------------------------------------------------------------------
def default_classifier_dir() -> Path:
    """``$CVAE_CHECKPOINTS_DIR/classifier-mnist`` when that folder exists, else ``<repo>/checkpoints/classifier-mnist``
    (the shipped one): pointing the app at another folder of runs does not lose the classifier."""
    env = os.environ.get("CVAE_CHECKPOINTS_DIR")
    if env and (Path(env) / FOLDER).is_dir():
        return Path(env) / FOLDER
    return REPO / "checkpoints" / FOLDER


def save_classifier(folder: str | Path, model: MnistClassifier, info: dict, half: bool = True) -> Path:
    """Write classifier.safetensors (float16 floats when `half`) and classifier.json (info + config + the weights'
    SHA-256) atomically: a sibling temporary folder renamed into place. Replaces only an earlier classifier folder
    or an empty one."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not (folder / INFO).is_file():
        raise CheckpointError(f"{folder} exists and is not a classifier folder; refusing to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = {}
        for k, v in model.state_dict().items():
            v = v.detach().cpu().contiguous()
            state[k] = v.half() if half and v.is_floating_point() else v
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "cvae_core.eval.classifier", "dtype": "float16" if half
                                                         else "float32"})
        record = {**info, "config": dataclasses.asdict(model.config), "storage_dtype": "float16" if half
                  else "float32", "weights_bytes": (tmp / WEIGHTS).stat().st_size}
        (tmp / INFO).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        record_hashes(tmp, INFO)  # the weights' SHA-256 under classifier.json's "sha256" key
        swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


_CACHE: dict[tuple, MnistClassifier] = {}
_LOCK = threading.Lock()


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> MnistClassifier:
    """The trained classifier in eval mode with frozen float32 weights, cached per process (by folder, file
    modification time and device), so treat it as read-only. `path` is the folder (default:
    ``default_classifier_dir()``). A missing, truncated or corrupt file, a pickle where the weights should be (never
    read), or weights whose SHA-256 is not the one classifier.json records raise a one-line CheckpointError saying
    how to rebuild it."""
    folder = Path(path) if path is not None else default_classifier_dir()
    wpath, ipath = folder / WEIGHTS, folder / INFO
    for p in (wpath, ipath):
        if not p.is_file():
            note = pickle_note(folder) if p == wpath else ""
            raise CheckpointError(f"the MNIST classifier is missing ({p} not found){note}; {REBUILD}")
    key = (str(wpath.resolve()), wpath.stat().st_mtime_ns, ipath.stat().st_mtime_ns, str(torch.device(device)))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        try:
            info = json.loads(ipath.read_text())
            config = ClassifierConfig(**info["config"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{ipath} is corrupt ({type(e).__name__}: {e}); {REBUILD}") from None
        state = read_weights(wpath, info.get("sha256"), ipath, then=f"; {REBUILD}")
        model = MnistClassifier(config)
        own = model.state_dict()
        if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
            raise CheckpointError(f"{wpath} does not match the classifier in {ipath}; {REBUILD}")
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
        model.requires_grad_(False)
        model = model.to(device).eval()
        _CACHE[key] = model
        return model

