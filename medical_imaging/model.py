"""Backbone factory over MONAI, timm and torchvision: any input channel count, any head size.

    net = build_model({"arch": "resnet18", "in_channels": 1, "num_classes": 2, "image_size": 28})

Architectures (`arch`):
- `resnet18` / `resnet34` / `resnet50`: MONAI's 2D ResNet. For small inputs (image_size <= 64)
  the stem is a 3x3 stride-1 conv, the usual adaptation for 28-64 px images (the 7x7/2 stem +
  max-pool would shrink 28 px to 7 px before the first block); `width` scales every stage.
- `densenet121`: MONAI's DenseNet-121.

`dimensions: 3` builds the same MONAI networks in 3D (`spatial_dims=3`, input (N, C, D, H, W));
missing means 2. `layers` (e.g. [1, 1, 1, 1]) makes a ResNet shallower: the quick 3D preset's
network. timm and torchvision backbones are 2D only. `patch_logits` runs a network trained on
patches over a larger volume with MONAI's sliding-window inferer (memory-bounded).
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

__all__ = ["build_model", "dimensions", "patch_logits", "tune_allocator", "load_local_weights",
           "last_conv_layer", "Ensemble", "ARCHS", "ARCHS_3D"]
log = logging.getLogger(__name__)
ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", "timm:<name>", "torchvision:<name>")
ARCHS_3D = ("resnet18", "resnet34", "resnet50", "densenet121")
_MONAI_RESNETS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
                  "resnet50": ("bottleneck", [3, 4, 6, 3])}


def _monai_resnet(arch: str, cin: int, ncls: int, size: int, cfg: dict[str, Any],
                  dims: int) -> nn.Module:
    from monai.networks.nets import ResNet

    block, layers = _MONAI_RESNETS[arch]
    if cfg.get("layers"):  # a shallower variant (e.g. [1, 1, 1, 1]) for cheap 3D presets
        layers = [int(n) for n in cfg["layers"]]
    small = size <= 64
    return ResNet(
        block=block,
        layers=layers,
        block_inplanes=[64, 128, 256, 512],
        spatial_dims=dims,
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


def dimensions(config: dict[str, Any]) -> int:
    """The spatial dimensionality of a model config: `dimensions` 2 or 3; missing means 2
    (bundles written before 3D support)."""
    dims = int(config.get("dimensions", 2))
    if dims not in (2, 3):
        raise InvalidInput("dimensions", f"{dims}: a model is 2D or 3D")
    return dims


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
    dims = dimensions(config)
    if dims == 3 and ":" in arch:
        raise InvalidInput("arch", f"{arch!r} is 2D only; 3D data needs one of "
                                   f"{', '.join(ARCHS_3D)}")
    if arch in _MONAI_RESNETS:
        net = _monai_resnet(arch, cin, ncls, size, config, dims)
    elif arch == "densenet121":
        from monai.networks.nets import DenseNet121

        net = DenseNet121(spatial_dims=dims, in_channels=cin, out_channels=ncls)
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


def _convs(net: nn.Module) -> list[str]:
    """Conv2d/Conv3d names in registration order, residual shortcut convs left out: a block
    registers its 1x1 `downsample` after its main convs, and a CAM of the shortcut alone
    ignores what the block computed."""
    convs = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise InvalidInput("arch", f"{type(net).__name__} has no convolution for Grad-CAM")
    main = [n for n in convs if "downsample" not in n and "shortcut" not in n]
    return main or convs


def last_conv_layer(net: nn.Module, input_shape: tuple[int, ...] | None = None,
                    min_size: int = 4) -> str:
    """Grad-CAM's default target layer: the last Conv2d/Conv3d (not a residual shortcut).

    With `input_shape` (C, [D,] H, W) the last one whose output is still at least `min_size`
    voxels along every axis (found by one forward pass): at 28^3 a ResNet's last conv sees
    2x2x2, too coarse to point at a slice."""
    names = _convs(net)
    if input_shape is None:
        return names[-1]
    sizes: dict[str, int] = {}
    hooks = [net.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, n=n: sizes.__setitem__(n, min(out.shape[2:]))) for n in names]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros((1, *input_shape), device=next(net.parameters()).device))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    limit = min(min_size, min(input_shape[1:]))
    fine = [n for n in names if sizes.get(n, 0) >= limit]
    return fine[-1] if fine else names[-1]


class _PatchLogits(nn.Module):
    """A classifier seen as a dense predictor: each patch's logits broadcast over the patch,
    so MONAI's sliding-window inferer can blend them like a segmentation output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x).float()
        # a real copy: the inferer scales the patch output in place
        return z.reshape(*z.shape, *([1] * (x.ndim - 2))).expand(*z.shape, *x.shape[2:]).clone()


@torch.no_grad()
def patch_logits(net: nn.Module, x: torch.Tensor, roi_size: int | tuple[int, ...],
                 sw_batch_size: int = 4, overlap: float = 0.25) -> torch.Tensor:
    """Memory-bounded logits (N, K) for inputs larger than the network's patch: MONAI's
    `SlidingWindowInferer` runs `sw_batch_size` patches of `roi_size` at a time, and the
    answer is the mean of the patches' logits weighted by how many voxels each covers.
    For a network trained on patches of a larger volume (not for one trained on whole,
    resized volumes: those take `to_model_input`-style resizing instead)."""
    from monai.inferers import SlidingWindowInferer

    dims = x.ndim - 2
    roi = (roi_size,) * dims if isinstance(roi_size, int) else tuple(roi_size)
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=overlap,
                                   mode="constant", padding_mode="constant")
    dense = inferer(x, _PatchLogits(net).eval())
    return torch.as_tensor(dense).flatten(2).mean(-1)


_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed memory in the process for 3D activations (glibc only; a no-op elsewhere).

    A 28^3 batch's activations are tens of MB: glibc serves each from a fresh mmap and trims
    the heap after it, so every forward pass page-faults its memory in again. Measured on 2
    cores: a third of inference time in the kernel; 73 → 98 volumes/s at batch 16 with a
    32 MB mmap threshold, no trimming and a 256 MB top pad. Returns whether it applied."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's malloc.h
    ok = (mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1
          and mallopt(m_trim_threshold, 2 ** 31 - 1) == 1
          and mallopt(m_top_pad, 256 * 1024 * 1024) == 1)
    _ALLOCATOR_TUNED = ok
    return ok
