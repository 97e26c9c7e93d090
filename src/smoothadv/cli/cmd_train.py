"""``smoothadv train c4``: train the MNIST network C4 (optionally adversarially) and save its weights."""

from __future__ import annotations

from smoothadv.cli._options import positive_int
from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (C4 on MNIST) with a fixed seed",
        description="Train C4 on the MNIST training split (50,000 images) with Adam and a fixed seed; "
        "--adversarial adds FGSM examples (loss 0.5 clean + 0.5 FGSM at --eps). Prints validation "
        "accuracy per epoch, then test accuracy and the success rate of FGSM at --eps on the test set.",
    )
    parser.add_argument("architecture", choices=["c4"], help="network to train")
    parser.add_argument("--adversarial", action="store_true", help="FGSM adversarial training")
    parser.add_argument("--epochs", type=int, default=6, help="passes over the training split (default: 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batch order (default: 0)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 0.001)")
    parser.add_argument(
        "--lr-schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="learning-rate schedule: cosine decay to 0 over all steps, or constant (default: cosine)",
    )
    parser.add_argument("--eps", type=float, default=0.3, help="FGSM step on [0,1] pixels (default: 0.3)")
    parser.add_argument("--threads", type=positive_int,
                        help="CPU threads while training (default: the free cores of this machine; printed)")
    parser.add_argument("--train-limit", type=int, help="train on the first N images only (quick checks)")
    parser.add_argument("--eval-limit", type=int, help="measure on the first N valid/test images only")
    parser.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.core.runtime import default_threads
    from smoothadv.experiments.training import train_c4

    threads = args.threads or default_threads()

    _, report = train_c4(
        adversarial=args.adversarial,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        eps=args.eps,
        lr_schedule=args.lr_schedule,
        out=args.out,
        threads=threads,
        train_limit=args.train_limit,
        eval_limit=args.eval_limit,
        progress=not args.no_progress,
    )
    kind = "adversarially trained (FGSM) C4" if report.adversarial else "C4"
    text = "\n".join(
        [
            f"trained {kind} on {report.train_size} MNIST images in {report.seconds:.0f} s "
            f"({threads} CPU thread{'s' if threads > 1 else ''})",
            "validation accuracy per epoch: " + ", ".join(f"{a:.4f}" for a in report.valid_accuracy),
            f"test accuracy: {report.test_accuracy:.4f}",
            f"FGSM (eps {report.eps}) success rate on correctly classified test images: "
            f"{report.fgsm_success:.4f}",
            f"wrote {report.out} (sha256 {report.sha256})",
        ]
    )
    emit(args, {**report.to_dict(), "threads": threads}, text)
    return 0
