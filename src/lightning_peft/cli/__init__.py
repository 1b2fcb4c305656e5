"""`lightning-peft`: a LightningCLI for fine-tuning, plus the commands fine-tuners need around it.

    lightning-peft fit --config configs/quickstart.yaml       # train (validate, test likewise); leaves last.ckpt
    lightning-peft predict --ckpt_path C --input F.jsonl       # labels + probabilities, or generated text, per input
    lightning-peft generate --adapter D --prompt "..."         # text from a trained (or any) model; `chat` for turns
    lightning-peft models | datasets                           # the offline zoo and data catalog
    lightning-peft export --ckpt_path C --output_dir D         # the adapter alone (peft format where peft has the method)
    lightning-peft merge --ckpt_path C --output_dir D          # adaptation folded into a plain transformers folder
    lightning-peft evaluate --ckpt_path C                      # forgetting / ICL / robustness probes vs the base
    lightning-peft pet --config configs/cloze/pet_bbc_news.yaml  # PET / iPET: pattern models, ensemble, distillation

One file per command (`catalog`, `export`, `evaluate`, `predict`, `generate`, `pet` with `pet_plan` and
`pet_report`), the LightningCLI in `app` (its `Trainer` with precision "auto" in `trainer`, `run_config` and
`artifact` for what a run leaves behind, `ckpt_settings` for a checkpoint trained with other settings,
`parse_errors` for one-sentence parse errors); `rebuild` turns a checkpoint back into its module and `sources`
picks what predict/generate/chat run; `tables` and `launch_env` are helpers; `quiet` silences named
third-party start-up notices (LIGHTNING_PEFT_DEBUG=1 keeps them).
"""

from .quiet import silence_third_party_noise

silence_third_party_noise()  # before anything imports bitsandbytes, Lightning or transformers

import sys  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from .app import COMMANDS, USER_ERRORS, LightningPeftCLI

# Commands that only list what is installed: answered without importing torch, Lightning or
# transformers (`app` imports them all, ~8 s on a CPU; these answer in well under 2 s).
CATALOG_COMMANDS = ("models", "datasets")
_APP_NAMES = ("COMMANDS", "USER_ERRORS", "LightningPeftCLI")


def _app() -> ModuleType:
    """The LightningCLI module, with every data module class imported (short `--data` names, `--help`)."""
    from ..data import import_data_modules
    from . import app

    import_data_modules()
    return app


def main(args: list[str] | None = None) -> None:
    """`lightning-peft`: the catalog commands directly, everything else through `app.main`."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in CATALOG_COMMANDS:
        from .catalog import datasets_command, models_command

        {"models": models_command, "datasets": datasets_command}[argv[0]](argv[1:])
        return
    _app().main(args)


def __getattr__(name: str) -> Any:
    # The CLI class and its tables live in `app`; importing it is what the catalog commands avoid.
    if name not in _APP_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return vars(_app())[name]


__all__ = ["COMMANDS", "USER_ERRORS", "LightningPeftCLI", "main"]
