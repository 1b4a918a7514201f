"""Options several commands share, declared and applied in one place."""

from __future__ import annotations

THREADS_HELP = "CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)"


def add_threads(parser, default: int | None = None) -> None:
    parser.add_argument("--threads", type=int, default=default, help=THREADS_HELP)


def apply_threads(args) -> None:
    """Set torch's CPU threads when the command was given --threads (lab/__main__.py calls this)."""
    if getattr(args, "threads", None):
        import torch  # here, so that commands without --threads start without torch

        torch.set_num_threads(args.threads)
