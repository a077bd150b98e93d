"""Fit the collapse certificate's teachers of the data sets behind the shipped runs and write them to
checkpoints/teachers/<data set>/teacher.safetensors (float64, with their identity), so that no machine fits them
again: a run's certificate then reads the same teacher everywhere.

    .venv/bin/python scripts/ship_teachers.py                 # mnist and mnist-binary (about 30 s each)
    .venv/bin/python scripts/ship_teachers.py mnist-binary

The shipped runs' metrics.json record the identity of the teacher they were scored with (``teacher``). Beside each
teacher, teacher.json records the file's SHA-256, which loading checks (``cvae_core.integrity``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvae_core.data import load_dataset  # noqa: E402
from cvae_core.integrity import record_hashes  # noqa: E402
from cvae_core.witness import SHIPPED_TEACHERS, TEACHER_FILE, CertificateConfig, fit_teacher, save_teacher  # noqa: E402


def main(names: list[str]) -> None:
    for name in names or ["mnist", "mnist-binary"]:
        data = load_dataset(name)
        teacher = fit_teacher(data.x_train, CertificateConfig())
        path = save_teacher(SHIPPED_TEACHERS / name / TEACHER_FILE, teacher, data.name, len(data.x_train))
        record_hashes(path.parent, "teacher.json")
        print(f"{name}: teacher {teacher.identity} -> {path.relative_to(SHIPPED_TEACHERS.parents[1])}")


if __name__ == "__main__":
    main(sys.argv[1:])
