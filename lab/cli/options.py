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


def add_model_shape(parser, default_preset: str) -> None:
    """--preset and --set FIELD=VALUE: the model shape a benchmark measures."""
    parser.add_argument("--preset", default=default_preset, help="model shape (see `python -m lab presets`)")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", dest="model_overrides",
                        help="override preset fields, e.g. --set dim=2048 n_layers=16 n_heads=16")
