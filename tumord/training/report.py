"""The evaluation report: text for a person, JSON for programs, a PNG figure of the curves."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tumord.atomic import write_atomic
from tumord.training.metrics import roc_curve


def format_metrics(m: dict, title: str = "Evaluation") -> str:
    intervals = m.get("intervals")

    def headline(label: str, key: str) -> str:
        line = f"  {label:<12} {m[key]:.4f}"
        return line + (f"  ({intervals[key][0]:.4f}-{intervals[key][1]:.4f})" if intervals else "")

    about = (f"; {intervals['level']:.0%} intervals in brackets, from {intervals['resamples']} resamples of "
             f"{intervals['groups']} near-duplicate groups") if intervals else ""
    lines = [
        f"{title}: {m['n']} images{about}",
        headline("accuracy", "accuracy"),
        headline("sensitivity", "sensitivity"),
        headline("specificity", "specificity"),
        headline("ROC AUC", "auc"),
        f"  ECE          {m['ece']:.4f}",
        "  per class    precision  recall  support",
    ]
    for name, v in m["per_class"].items():
        lines.append(f"    {name:<12} {v['precision']:9.4f} {v['recall']:7.4f} {v['support']:8d}")
    names = m["class_names"]
    width = max(8, *(len(n) + 1 for n in names))
    lines.append("  confusion (rows: true, columns: predicted)")
    lines.append("    " + " " * width + "".join(f"{n:>{width}}" for n in names))
    for name, row in zip(names, m["confusion_matrix"]):
        lines.append(f"    {name:<{width}}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


def write_figure(path: Path, history: list[dict], probs: np.ndarray, labels: np.ndarray, metrics: dict,
                 negative_class: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metrics["class_names"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    if history:
        ep = [h["epoch"] for h in history]
        ax[0].plot(ep, [h["train_loss"] for h in history], label="train loss")
        ax[0].plot(ep, [h["val_loss"] for h in history], label="validation loss")
        ax2 = ax[0].twinx()
        ax2.plot(ep, [h["val_accuracy"] for h in history], "g--", label="validation accuracy")
        ax2.set_ylabel("accuracy")
        handles = ax[0].get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax[0].legend(handles=handles, loc="center right", fontsize="small")
    ax[0].set(title="Training curves", xlabel="epoch", ylabel="loss")
    if negative_class in names:
        neg = names.index(negative_class)
        fpr, tpr = roc_curve(1 - probs[:, neg], labels != neg)
        ax[1].plot(fpr, tpr, label=f"AUC {metrics['auc']:.4f}")
    else:
        for c, n in enumerate(names):
            fpr, tpr = roc_curve(probs[:, c], labels == c)
            ax[1].plot(fpr, tpr, label=n)
    ax[1].plot([0, 1], [0, 1], "k:", lw=0.8)
    ax[1].set(title="ROC (test split)", xlabel="false positive rate", ylabel="true positive rate")
    ax[1].legend(loc="lower right")
    cm = np.array(metrics["confusion_matrix"])
    ax[2].imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax[2].text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax[2].set(title=f"Confusion (accuracy {metrics['accuracy']:.3f})", xlabel="predicted", ylabel="true",
              xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
