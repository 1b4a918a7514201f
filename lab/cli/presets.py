"""Every preset's parameter count and FLOPs per token, beside the paper's Table 2."""

from __future__ import annotations

from lab.tables import preset_table


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    print(preset_table())
    return 0
