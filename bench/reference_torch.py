"""Trains the configured CNN in PyTorch on tumord's own split, as a reference for the numpy engine.

Same images (tumord's preprocessing and cache), same group-aware split, same augmentation
(tumord.data.augment with the config's settings), same recipe: AdamW with decay on weights only,
one-cycle learning rate, label smoothing, mixup, batch size, epochs, best validation-loss epoch kept.
Only the engine differs, so the two test figures say whether a gap is the engine's or the data's.

    python bench/reference_torch.py --data ../shared/datasets/brain-tumor [--set train.epochs=40 ...]

It prints validation accuracy, loss and ROC AUC per epoch, then the test metrics of the kept epoch.
Install PyTorch with `pip install -r bench/requirements.txt`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_conv import torch_network  # noqa: E402
from tumord.config import load_config  # noqa: E402
from tumord.data.augment import augment_batch  # noqa: E402
from tumord.model.predict import to_input  # noqa: E402
from tumord.nn.losses import softmax, softmax_cross_entropy  # noqa: E402
from tumord.training.metrics import evaluate  # noqa: E402
from tumord.training.pipeline import prepare  # noqa: E402
from tumord.training.trainer import build_network, mixup  # noqa: E402


def logits_of(tnet, images, idx, input_shape, torch, batch: int = 128) -> np.ndarray:
    tnet.eval()
    with torch.no_grad():
        return np.concatenate([tnet(torch.from_numpy(to_input(np.asarray(images[idx[i : i + batch]]), input_shape)))
                               .numpy() for i in range(0, len(idx), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the per-epoch rows and test metrics here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.set)
    t, size = cfg["train"], cfg["preprocess"]["size"]
    if cfg["model"]["architecture"] != "cnn" or t["optimizer"] != "adamw" or t["schedule"] != "one_cycle":
        sys.exit("reference_torch: mirrors the cnn architecture with adamw and one_cycle only")
    data = prepare(args.data, cfg)
    names, sp = data.listing.class_names, data.split
    rng = np.random.default_rng(t["seed"])
    net = build_network(cfg["model"], size, len(names), rng)
    torch.manual_seed(t["seed"])
    tnet = torch_network(net, torch)  # the numpy network's initial weights
    decay = [p for n, p in tnet.named_parameters() if p.ndim > 1]  # conv kernels and dense weights, as tumord
    other = [p for n, p in tnet.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                             {"params": other, "weight_decay": 0.0}], lr=t["lr"])
    bs, train_idx = t["batch_size"], sp["train"]
    steps = max(1, len(train_idx) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t["lr"], total_steps=t["epochs"] * steps,
                                                pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=t["label_smoothing"])
    aug = {k: t["augment"][k] for k in ("flip", "rotate_deg", "scale", "shift", "brightness", "contrast")}
    y_val = data.labels[sp["val"]]
    best_loss, best_state, rows, start = np.inf, None, [], time.monotonic()
    for epoch in range(1, t["epochs"] + 1):
        tnet.train()
        order = train_idx[rng.permutation(len(train_idx))]
        for s in range(steps):
            idx = np.sort(order[s * bs : (s + 1) * bs])
            imgs = np.asarray(data.images[idx])
            if t["augment"]["enabled"]:
                imgs = augment_batch(imgs, rng, **aug)
            x, y = to_input(imgs, net.input_shape), torch.from_numpy(data.labels[idx])
            opt.zero_grad(set_to_none=True)
            if t["mixup"]:
                x, partner, share = mixup(x, rng, t["mixup"])
                logits = tnet(torch.from_numpy(x))
                loss = share * loss_fn(logits, y) + (1 - share) * loss_fn(logits, y[partner])
            else:
                loss = loss_fn(tnet(torch.from_numpy(x)), y)
            loss.backward()
            opt.step()
            sched.step()
        z = logits_of(tnet, data.images, sp["val"], net.input_shape, torch)
        val_loss, _ = softmax_cross_entropy(z, y_val)  # as tumord's trainer judges epochs
        m = evaluate(softmax(z), y_val, names, t["negative_class"])
        row = {"epoch": epoch, "val_loss": round(val_loss, 4), "val_accuracy": round(m["accuracy"], 4),
               "val_auc": round(m["auc"], 4), "seconds": round(time.monotonic() - start)}
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, row["best"] = val_loss, {k: v.clone() for k, v in tnet.state_dict().items()}, True
        rows.append(row)
        print(json.dumps(row), flush=True)
    tnet.load_state_dict(best_state)
    test = {}
    for split in ("val", "test"):
        p = softmax(logits_of(tnet, data.images, sp[split], net.input_shape, torch))
        test[split] = evaluate(p, data.labels[sp[split]], names, t["negative_class"])
        print(f"{split} (best validation-loss epoch): " + "  ".join(
            f"{k} {test[split][k]:.4f}" for k in ("accuracy", "auc", "sensitivity", "specificity")), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"epochs": rows, "metrics": test, "settings": t}, indent=1))


if __name__ == "__main__":
    main()
