"""Fine-tune the request classifier from a CSV of labeled splits, in one process or, under
torchrun, in one process per GPU (DDP). The Dagster asset uses it for multi-GPU runs; it also
runs by hand on any machine with torch and transformers:

    torchrun --nproc-per-node 4 -m ml.requests.train_transformer --splits splits.csv --output out/

`splits.csv` has `text`, `intent` and `split` (train / validation) columns. Rank 0 writes the
calibrated classifier to `out/classifier/` and the run's record to `out/run.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ml.requests.classifiers import LabeledTexts, TransformerClassifier
from ml.requests.training import EpochRecord, FineTuneResult, TransformerConfig, fine_tune
from ml.settings import DistributedProcess, environment_with

RUN_FILE = "run.json"


def write_splits(path: Path, train: LabeledTexts, validation: LabeledTexts) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "intent", "split"])
        for split, part in (("train", train), ("validation", validation)):
            writer.writerows(
                (text, intent, split) for text, intent in zip(part.texts, part.intents, strict=True)
            )


def labeled_splits(rows: Iterable[Mapping[str, str]]) -> dict[str, LabeledTexts]:
    """Rows with `text`, `intent` and `split`, grouped by split (in row order)."""
    parts: dict[str, LabeledTexts] = {}
    for row in rows:
        part = parts.setdefault(row["split"], LabeledTexts([], []))
        part.texts.append(row["text"])
        part.intents.append(row["intent"])
    return parts


def read_splits(path: Path) -> dict[str, LabeledTexts]:
    """The splits of a CSV with `text`, `intent` and `split` columns."""
    with path.open(encoding="utf-8", newline="") as handle:
        return labeled_splits(csv.DictReader(handle))


def fine_tune_with_torchrun(
    train: LabeledTexts,
    validation: LabeledTexts,
    classes: Sequence[str],
    config: TransformerConfig,
    processes: int,
) -> FineTuneResult:
    """`fine_tune` in `processes` DDP processes launched by torchrun (one per GPU; gloo on
    CPU), then the trained classifier loaded back here."""
    if processes < 2:
        raise ValueError(f"torchrun needs at least 2 processes, got {processes}")
    with tempfile.TemporaryDirectory(prefix="train-transformer-") as name:
        folder = Path(name)
        write_splits(folder / "splits.csv", train, validation)
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "ml.requests.train_transformer",
            "--splits",
            str(folder / "splits.csv"),
            "--output",
            str(folder / "out"),
            "--classes",
            json.dumps(list(classes)),
            "--config",
            json.dumps(asdict(config)),
        ]
        env = environment_with(defaults={"OMP_NUM_THREADS": "1"})
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-25:])
            raise RuntimeError(f"torchrun training in {processes} processes failed:\n{tail}")
        record = json.loads((folder / "out" / RUN_FILE).read_text(encoding="utf-8"))
        return FineTuneResult(
            classifier=TransformerClassifier.load(folder / "out" / "classifier"),
            history=[EpochRecord(**epoch) for epoch in record.pop("history")],
            **record,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--classes", help="JSON list: the taxonomy's order (default: sorted)")
    parser.add_argument("--config", default="{}", help="JSON of TransformerConfig fields")
    args = parser.parse_args(argv)
    parts = read_splits(args.splits)
    train, validation = parts["train"], parts.get("validation", LabeledTexts([], []))
    classes = json.loads(args.classes) if args.classes else sorted(set(train.intents))
    config = TransformerConfig(**json.loads(args.config))
    result = fine_tune(train, validation, classes, config, show_progress=True)
    if DistributedProcess.from_env().rank == 0:
        result.classifier.save(args.output / "classifier")
        record = {
            "history": [asdict(epoch) for epoch in result.history],
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "device": result.device,
            "bf16": result.bf16,
            "world_size": result.world_size,
        }
        (args.output / RUN_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
