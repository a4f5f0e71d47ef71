"""Backbone factory over MONAI, timm and torchvision: any input channel count, any head size.

    net = build_model({"arch": "resnet18", "in_channels": 1, "num_classes": 2, "image_size": 28})

Architectures (`arch`):
- `resnet18` / `resnet34` / `resnet50`: MONAI's 2D ResNet. For small inputs (image_size <= 64)
  the stem is a 3x3 stride-1 conv, the usual adaptation for 28-64 px images (the 7x7/2 stem +
  max-pool would shrink 28 px to 7 px before the first block); `width` scales every stage.
- `densenet121`: MONAI's 2D DenseNet-121.
- `timm:<name>` (e.g. `timm:resnet18`, `timm:efficientnet_b0`): `timm.create_model` with
  `in_chans`/`num_classes`, never downloading weights.
- `torchvision:<name>` (e.g. `torchvision:resnet18`): torchvision builder, first conv adapted.

`ensemble: K` (K > 1) builds K independently initialised copies of the backbone whose logits
are averaged (`Ensemble`): the bundle then serves all of them as one model.

`pretrained` is a local checkpoint path (safetensors or a torch state dict); layers whose shape
does not match (the head, a first conv with another channel count) keep their initialisation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import InvalidInput

__all__ = ["build_model", "load_local_weights", "last_conv_layer", "Ensemble", "ARCHS"]
log = logging.getLogger(__name__)
ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", "timm:<name>", "torchvision:<name>")
_MONAI_RESNETS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
                  "resnet50": ("bottleneck", [3, 4, 6, 3])}


def _monai_resnet(arch: str, cin: int, ncls: int, size: int, cfg: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import ResNet

    block, layers = _MONAI_RESNETS[arch]
    small = size <= 64
    return ResNet(
        block=block,
        layers=layers,
        block_inplanes=[64, 128, 256, 512],
        spatial_dims=2,
        n_input_channels=cin,
        conv1_t_size=3 if small else 7,
        conv1_t_stride=1 if small else 2,
        # keep the max-pool: at 28 px it halves the cost of every block for ~no accuracy loss
        no_max_pool=bool(cfg.get("no_max_pool", False)),
        widen_factor=float(cfg.get("width", 1.0)),
        num_classes=ncls,
    )


def _torchvision(name: str, cin: int, ncls: int) -> nn.Module:
    import torchvision

    net = torchvision.models.get_model(name, weights=None, num_classes=ncls)
    if cin != 3:  # swap the first conv for one with `cin` input channels, same geometry
        for mod_name, mod in net.named_modules():
            if isinstance(mod, nn.Conv2d) and mod.in_channels == 3:
                new = nn.Conv2d(cin, mod.out_channels, mod.kernel_size, mod.stride,
                                mod.padding, bias=mod.bias is not None)
                parent = net.get_submodule(mod_name.rsplit(".", 1)[0]) if "." in mod_name else net
                setattr(parent, mod_name.rsplit(".", 1)[-1], new)
                break
    return net


class Ensemble(nn.Module):
    """Members with the same input and head; the output is the mean of their logits."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def build_model(config: dict[str, Any]) -> nn.Module:
    """An nn.Module from a JSON-able config: arch, in_channels, num_classes, image_size, ...

    Weights are random unless `config["pretrained"]` names a local checkpoint file;
    `ensemble: K > 1` gives an `Ensemble` of K such networks.
    """
    k = int(config.get("ensemble", 1))
    if k > 1:
        single = {key: v for key, v in config.items() if key != "ensemble"}
        return Ensemble([build_model(single) for _ in range(k)])
    arch = str(config.get("arch", "resnet18"))
    cin = int(config.get("in_channels", 1))
    ncls = int(config.get("num_classes", 2))
    size = int(config.get("image_size", 28))
    if arch in _MONAI_RESNETS:
        net = _monai_resnet(arch, cin, ncls, size, config)
    elif arch == "densenet121":
        from monai.networks.nets import DenseNet121

        net = DenseNet121(spatial_dims=2, in_channels=cin, out_channels=ncls)
    elif arch.startswith("timm:"):
        import timm

        net = timm.create_model(arch[5:], pretrained=False, in_chans=cin, num_classes=ncls)
    elif arch.startswith("torchvision:"):
        net = _torchvision(arch[12:], cin, ncls)
    else:
        raise InvalidInput("arch", f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")
    if config.get("pretrained"):
        load_local_weights(net, config["pretrained"])
    return net


def load_local_weights(net: nn.Module, path: str | Path) -> list[str]:
    """Load matching tensors from a local checkpoint; returns the names that were skipped."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput("pretrained", f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    net.load_state_dict(usable, strict=False)
    log.info("pretrained %s: loaded %d tensors, kept init for %d", path.name, len(usable),
             len(skipped))
    return skipped


def last_conv_layer(net: nn.Module) -> str:
    """Name of the last Conv2d in registration order: Grad-CAM's default target layer."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise InvalidInput("arch", f"{type(net).__name__} has no Conv2d layer for Grad-CAM")
    return names[-1]
