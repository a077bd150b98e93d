"""Train the in-project MNIST classifier (cvae_core/classifier.py) and write checkpoints/classifier-mnist/.

    python scripts/train_classifier.py                  # the shipped one (seeded; a few minutes on 2 CPU cores)
    python scripts/train_classifier.py --epochs 1 --out /tmp/clf

The folder gets classifier.safetensors (float16 storage unless --fp32) and classifier.json, which records the
exact command, epochs, the test accuracy (overall and per class, with float32 and with the stored weights) and
the training time. MNIST is read offline (``python -m cvae_core prepare-data``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from cvae_core.data import load_dataset  # noqa: E402
from cvae_core.errors import LabError  # noqa: E402
from cvae_core.eval.classifier import (  # noqa: E402
    ClassifierConfig,
    accuracy,
    default_classifier_dir,
    load_classifier,
    save_classifier,
    train_classifier,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--shift", type=int, default=0, help="random translation augmentation, in pixels (0 = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=None, help="train on the first N images only (quick checks)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--fp32", action="store_true", help="store float32 weights instead of float16")
    ap.add_argument("--out", default=None, help="output folder (default: checkpoints/classifier-mnist)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else default_classifier_dir()
    try:
        d = load_dataset("mnist")
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def progress(step: int, total: int, loss: float) -> None:
        print(f"\rstep {step}/{total}  loss {loss:.4f}  {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr)

    t0 = time.perf_counter()
    x_train, y_train = d.x_train[: args.n_train], d.y_train[: args.n_train]
    model = train_classifier(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             max_shift=args.shift, seed=args.seed, config=ClassifierConfig(), progress=progress)
    train_s = time.perf_counter() - t0
    print(file=sys.stderr)
    acc32, per32 = accuracy(model, d.x_test, d.y_test)
    with torch.no_grad():
        model.predict(d.x_test[:1000])  # warm-up
        t1 = time.perf_counter()
        model.predict(d.x_test)
    predict_s = time.perf_counter() - t1
    cmd = shlex.join(["python", "scripts/train_classifier.py", *(sys.argv[1:] if argv is None else argv)])
    info = {
        "command": cmd,
        "dataset": "mnist (offline copy; accuracy on the 10k test images)", "n_train": len(x_train),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "augmentation_shift_px": args.shift,
        "seed": args.seed, "torch_threads": args.threads, "cpu_count": os.cpu_count(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_s, 1), "predict_10k_test_seconds": round(predict_s, 2),
        "test_accuracy_float32": acc32, "test_per_class_accuracy_float32": per32,
        "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": datetime.date.today().isoformat(),
    }
    save_classifier(out, model, info, half=not args.fp32)
    stored = load_classifier(out)  # what users get: the stored (possibly float16) weights, as float32
    acc, per = accuracy(stored, d.x_test, d.y_test)
    info.update(test_accuracy=acc, test_per_class_accuracy=per)
    save_classifier(out, model, info, half=not args.fp32)
    print(f"{out}: test accuracy {acc:.4%} (float32 before storage {acc32:.4%}), trained {train_s:.0f} s, "
          f"{args.epochs} epochs; per class " + " ".join(f"{k}:{a:.4f}" for k, a in enumerate(per)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
