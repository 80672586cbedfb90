"""The block families (`arch`) and the one factory every place that builds a model from its arguments calls.

`gpt2` is nanoGPT's block (gptzoo.zoo.model), the default: model_args without an `arch` key (nanoGPT's own
checkpoints, every variant trained before families existed) are gpt2. `oss` is the GPT-OSS-style block
(gptzoo.zoo.oss, docs/oss.md).
"""

from __future__ import annotations

from torch import nn

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.oss import OSS, OSSConfig
from gptzoo.zoo.store import ARCH_NAMES

ARCHES: tuple[str, ...] = ARCH_NAMES  # listed in zoo.store, which serving imports without torch


def arch_of(model_args: dict) -> str:
    """The family model_args name; BadValue for one the zoo does not know."""
    arch = model_args.get("arch", "gpt2")
    if arch not in ARCHES:
        raise BadValue(f"unknown arch {arch!r}: use one of {', '.join(ARCHES)}")
    return arch


def config_from_dict(model_args: dict) -> GPTConfig | OSSConfig:
    """The config of model_args' family (extra keys ignored, as nanoGPT's model_args carry some)."""
    return OSSConfig.from_dict(model_args) if arch_of(model_args) == "oss" else GPTConfig.from_dict(model_args)


def make_model(model_args: dict) -> nn.Module:
    """A freshly initialised model of model_args' family."""
    config = config_from_dict(model_args)
    return OSS(config) if isinstance(config, OSSConfig) else GPT(config)


def card_fields(model_args: dict) -> dict:
    """What a card records of the family: nothing for gpt2 (its cards stay as they were), else `arch` and the
    family's own settings (the model_args beyond gpt2's)."""
    arch = arch_of(model_args)
    if arch == "gpt2":
        return {}
    common = set(GPTConfig.__dataclass_fields__)
    config = config_from_dict(model_args).to_dict()
    return {"arch": arch, "arch_args": {k: v for k, v in config.items() if k not in common | {"arch"}}}
