"""A "legacy" training script, unchanged by explaunch: argparse flags in, files and printed lines out.

Fits a linear regression by gradient descent on generated data, prints `epoch=.. loss=..` lines, writes
metrics.json and the model (model.pt) into --out. Exits 3 when --fail is given (to show a failing job).
    python examples/legacy/train_regressor.py --lr 0.1 --epochs 50 --seed 0 --out runs/a
"""

import argparse
import json
import sys
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path())
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    if args.fail:
        print("error: asked to fail (--fail)", file=sys.stderr)
        return 3
    torch.manual_seed(args.seed)
    x = torch.randn(512, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(512)
    w = torch.zeros(4, requires_grad=True)
    for epoch in range(args.epochs):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= args.lr * w.grad
            w.grad.zero_()
        if epoch % 10 == 0:
            print(f"epoch={epoch} loss={loss.item():.6f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"w": w.detach()}, args.out / "model.pt")
    (args.out / "metrics.json").write_text(json.dumps({"final_loss": loss.item(), "epochs": args.epochs}))
    print(f"final_loss={loss.item():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
