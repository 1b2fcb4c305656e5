"""`lightning-peft`: a LightningCLI for fine-tuning, plus the commands fine-tuners need around it.

    lightning-peft fit --config configs/quickstart.yaml       # train (validate, test, predict likewise)
    lightning-peft models | datasets                           # the offline zoo and data catalog
    lightning-peft export --ckpt_path C --output_dir D         # the adapter alone (peft format where peft has the method)
    lightning-peft merge --ckpt_path C --output_dir D          # adaptation folded into a plain transformers folder
    lightning-peft evaluate --ckpt_path C                      # forgetting / ICL / robustness probes vs the base

One file per command (`catalog`, `export`, `evaluate`), the LightningCLI in `app`; `rebuild` turns
a checkpoint back into its module for the commands; `tables` and `launch_env` are their helpers;
`quiet` silences named third-party start-up notices (LIGHTNING_PEFT_DEBUG=1 keeps them).
"""

from .quiet import silence_third_party_noise

silence_third_party_noise()  # before anything imports bitsandbytes, Lightning or transformers

from .app import COMMANDS, USER_ERRORS, LightningPeftCLI, main

__all__ = ["COMMANDS", "USER_ERRORS", "LightningPeftCLI", "main"]
