"""What the pages need, and nothing about widgets: one module per concern, each over llama_core and lab.

    checkpoints  which checkpoints the app offers, path confinement, loading once per process
    chat         conversations, message checks, streamed replies with their speed
    attention    one layer's attention weights, uploaded prompts
    runs         run records: a row per run with its energy, loss and speed curves, benchmarks
    evaluation   benchmark suites run in the background, beside the paper's rows
    throughput   measuring this machine, and the paper's runs projected onto it
    carbon       Table 15 by the paper's formula, GPU and grid presets
    presets      every preset's shape and cost beside Table 2

Views (app/views/) import the module they need (`from app.services import chat`); nothing
else reaches llama_core or lab from a view.
"""

# Names that callers outside the app (tests) reach as app.services.NAME.
from app.services.chat import check_message
from app.services.checkpoints import safe_checkpoint_path

__all__ = ["check_message", "safe_checkpoint_path"]
