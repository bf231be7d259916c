"""Training throughput of the project's fine-tuning loop against a bare torch loop: same model,
same batch size, same texts, same precision, measured side by side in one run.

    python benchmarks/train_throughput.py                      # banking77 texts, default model
    python benchmarks/train_throughput.py --batch-size 256 --samples 20000   # on a GPU

Each way runs two passes over the same samples from the same initial weights and is timed on the
second (the first pays for warm-up). The project's loop runs twice: as shipped (length-bucketed
batches) and with bucketing off, which isolates the loop's own overhead from the padding it
saves. Prints samples/s, padded tokens/s and the ratios; on CUDA
also model FLOPs utilization against the GPU's dense bf16 peak. Imports only `ml/`, torch,
transformers, numpy and scikit-learn, so it runs on a bare GPU machine too.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.devices import pick_device
from ml.requests.backbone import load_backbone, resolve_checkpoint
from ml.requests.classifiers import LabeledTexts
from ml.requests.training import TransformerConfig, fine_tune, uses_bf16

DENSE_BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}


def read_texts(path: Path) -> LabeledTexts:
    """`text` and `intent` (or banking77's `category`) columns of a CSV."""
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    label = "intent" if "intent" in rows[0] else "category"
    return LabeledTexts([r["text"] for r in rows], [r[label] for r in rows])


def take(data: LabeledTexts, samples: int, seed: int) -> LabeledTexts:
    """`samples` rows, repeating the data if it is shorter, in a seeded order."""
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    order = (order * (samples // len(order) + 1))[:samples]
    return LabeledTexts([data.texts[i] for i in order], [data.intents[i] for i in order])


def bare_loop(
    checkpoint: str, data: LabeledTexts, classes: list[str], config: TransformerConfig
) -> tuple[float, float]:
    """The plain way: tokenize, shuffle, pad each batch, forward, backward, step.
    (samples/s, padded tokens/s) of the second pass."""
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    bf16 = uses_bf16(config, device)
    tokenizer, model = load_backbone(checkpoint, len(classes))
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, fused=device.type == "cuda"
    )
    index = {name: i for i, name in enumerate(classes)}
    encoded = tokenizer(data.texts, truncation=True, max_length=config.max_length)["input_ids"]
    sequences = [torch.tensor(ids) for ids in encoded]
    labels = torch.tensor([index[i] for i in data.intents])
    rate = (0.0, 0.0)
    for _ in range(2):
        order = torch.randperm(len(sequences)).tolist()
        started, tokens = time.perf_counter(), 0
        for start in range(0, len(order), config.batch_size):
            chosen = order[start : start + config.batch_size]
            input_ids = torch.nn.utils.rnn.pad_sequence(
                [sequences[i] for i in chosen],
                batch_first=True,
                padding_value=tokenizer.pad_token_id,
            )
            mask = (input_ids != tokenizer.pad_token_id).long()
            tokens += input_ids.numel()
            input_ids, mask = input_ids.to(device), mask.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits.float(), labels[chosen].to(device))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        rate = (len(order) / seconds, tokens / seconds)
    return rate


def project_loop(
    checkpoint: str, data: LabeledTexts, classes: list[str], config: TransformerConfig
) -> tuple[float, float]:
    """`ml.requests.training.fine_tune`, two epochs, no validation split."""
    return _project(checkpoint, data, classes, config)


def project_loop_unbucketed(
    checkpoint: str, data: LabeledTexts, classes: list[str], config: TransformerConfig
) -> tuple[float, float]:
    """The same loop with length bucketing off (random batches, like the bare loop): the
    loop's own overhead, without the padding it saves."""
    return _project(checkpoint, data, classes, replace(config, bucket_batches=1))


def _project(
    checkpoint: str, data: LabeledTexts, classes: list[str], config: TransformerConfig
) -> tuple[float, float]:
    run = fine_tune(
        data,
        LabeledTexts([], []),
        classes,
        TransformerConfig(**{**config.__dict__, "checkpoint": checkpoint, "epochs": 2}),
    )
    second = run.history[-1]
    return second.samples_per_second, second.padded_tokens_per_second


def training_flops_per_token(checkpoint: str, classes: int, tokens_per_sequence: float) -> float:
    """6 × non-embedding parameters (forward + backward matmuls) + the attention scores term."""
    _, model = load_backbone(checkpoint, classes)
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    attention = 12 * config.num_hidden_layers * config.hidden_size * tokens_per_sequence
    return 6 * dense + attention


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((v for k, v in DENSE_BF16_PEAK_TFLOPS.items() if k in name), None)


def random_weights_copy(checkpoint: str, folder: Path) -> str:
    """The same architecture with freshly initialized weights (no weights needed)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source, offline = resolve_checkpoint(checkpoint)
    config = AutoConfig.from_pretrained(source, local_files_only=offline)
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source, local_files_only=offline).save_pretrained(folder)
    return str(folder)


def main() -> int:
    shared = Path(os.environ.get("MLOPS_SHARED_DATA", Path(__file__).parents[2] / "shared/data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared / "banking77" / "train.csv")
    parser.add_argument("--checkpoint", default="", help="folder or hub id ('' = MiniLM)")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=768, help="samples per timed pass")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--autocast", default="auto", choices=["auto", "bf16", "off"])
    args = parser.parse_args()

    all_data = read_texts(args.data)
    classes = sorted(set(all_data.intents))
    data = take(all_data, args.samples, seed=0)
    config = TransformerConfig(
        batch_size=args.batch_size, max_length=args.max_length, autocast=args.autocast
    )
    device = pick_device()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = (
            random_weights_copy(args.checkpoint, Path(folder))
            if args.random_weights
            else args.checkpoint
        )
        print(
            f"device {device}, bf16 autocast {uses_bf16(config, device)}, batch "
            f"{args.batch_size}, {args.samples} samples per pass, {len(classes)} classes"
        )
        ways = {}
        for name, loop in (
            ("project", project_loop),
            ("project, no bucketing", project_loop_unbucketed),
            ("bare torch", bare_loop),
        ):
            ways[name] = loop(checkpoint, data, classes, config)
            print(f"  {name:<22} {ways[name][0]:>9,.1f} samples/s {ways[name][1]:>11,.0f} tok/s")
        bare = ways["bare torch"][0]
        print(
            f"project / bare torch loop: {ways['project'][0] / bare:.2f}× samples/s "
            f"(target ≥ 0.95×); without length bucketing "
            f"{ways['project, no bucketing'][0] / bare:.2f}×"
        )
        padded = ways["project"][1] / ways["project"][0]
        flops = training_flops_per_token(checkpoint, len(classes), padded)
        gpu, peak = peak_tflops(device)
        achieved = ways["project"][1] * flops / 1e12
        line = f"model FLOPs: {flops / 1e6:.1f} MFLOP/token, {achieved:.2f} TFLOP/s achieved"
        if peak:
            line += f", MFU {achieved / peak:.1%} of {gpu}'s {peak:.0f} TFLOP/s dense bf16"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
