"""Sparse-convolution emulation (SparK / Spark-3D) on an unmodified nnU-Net ResidualEncoder.

The encoder of a plain ``ResidualEncoderUNet`` is *walked*, not converted: this module calls the
network's own conv / pool / norm / nonlinearity modules (so no weight is duplicated and the
state-dict keys stay nnU-Net's) and adds, per feature-map resolution at least as fine as the mask
grid:

* after every conv and pool, the output is multiplied by the mask at that resolution
  (masked voxels are exactly 0, as in a submanifold sparse conv);
* InstanceNorm statistics come from visible voxels only, computed as *masked moments*
  (``mean = sum(x m)/n``, ``var = sum((x - mean)^2 m)/n``, affine, times ``m``) by
  :func:`masked_instance_norm` - no gather/scatter of visible voxels, which is where the
  reference implementation spends about half of its overhead.

Feature maps coarser than the mask grid are all-visible (dense ops), see
:func:`mae3d.pretraining.masking.upsample_mask`. The mask is an argument of every call
(:class:`MaskPyramid`, one per forward); nothing is stored globally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from dynamic_network_architectures.building_blocks.residual import (
    BasicBlockD,
    BottleneckD,
    StackedResidualBlocks,
)
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import (
    ConvDropoutNormReLU,
    StackedConvBlocks,
)
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.modules.pooling import _AvgPoolNd, _MaxPoolNd

from mae3d.pretraining.masking import MaskError, upsample_mask

__all__ = ["MaskPyramid", "Probe", "masked_instance_norm", "sparse_encoder_forward"]

#: ``probe(name, module, output, mask_or_None)`` is called after every conv, pool, norm and residual
#: block of the sparse walk (for tests and diagnostics); ``name`` is the module's path in the network.
#: Later ops may modify ``output`` in place (inplace LeakyReLU, residual add): clone it to keep it.
Probe = Callable[[str, nn.Module, torch.Tensor, "torch.Tensor | None"], None]

# nonlinearities with f(0) == 0: applying them keeps masked voxels at 0 without re-masking
_ZERO_PRESERVING = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
                    nn.Tanh, nn.Identity)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class MaskPyramid:
    """The grid mask of one forward pass, upsampled on demand to each feature-map resolution.

    Args:
        mask_b1ghw: bool grid mask, True = visible (see :mod:`mae3d.pretraining.masking`).
    """

    def __init__(self, mask_b1ghw: torch.Tensor) -> None:
        if mask_b1ghw.dtype != torch.bool or mask_b1ghw.dim() != 5 or mask_b1ghw.shape[1] != 1:
            raise MaskError(f"mask must be a bool tensor (B, 1, G, H, W), got {mask_b1ghw.dtype} "
                            f"{tuple(mask_b1ghw.shape)}")
        self.grid_mask = mask_b1ghw
        self.grid = tuple(mask_b1ghw.shape[2:])
        self._masks: dict[tuple, torch.Tensor | None] = {}
        self._counts: dict[tuple, torch.Tensor] = {}
        self._visible_blocks = mask_b1ghw.flatten(1).sum(1)

    def is_masked(self, shape: Sequence[int]) -> bool:
        """True if a feature map of ``shape`` is at least as fine as the grid (so it gets masked)."""
        return all(int(s) >= g for s, g in zip(shape, self.grid, strict=True))

    def at(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """Mask ``(B, 1, *shape)`` in ``dtype`` (1 = visible), or None where the map is all-visible."""
        key = (tuple(int(s) for s in shape), dtype)
        if key not in self._masks:
            masked = self.is_masked(key[0])
            self._masks[key] = upsample_mask(self.grid_mask, key[0], dtype) if masked else None
        return self._masks[key]

    def count(self, shape: Sequence[int]) -> torch.Tensor:
        """Visible voxels per sample at ``shape`` as a float tensor ``(B,)``."""
        key = tuple(int(s) for s in shape)
        if key not in self._counts:
            per_block = math.prod(s // g for s, g in zip(key, self.grid, strict=True))
            self._counts[key] = (self._visible_blocks * per_block).to(torch.float32)
        return self._counts[key]


class _MaskedInstanceNorm(torch.autograd.Function):
    """InstanceNorm over visible voxels with a hand-written backward.

    Expects ``x`` to be 0 at masked voxels already (the caller masks it otherwise), so that plain
    ``sum``/``vector_norm`` reductions - the fastest CPU reductions - give the masked moments and
    no index tensors, gathers or scatters are needed. Forward allocates one full-size tensor (the
    output) and keeps the input for backward, like the dense InstanceNorm; backward allocates one
    (the input gradient).
    """

    @staticmethod
    def forward(ctx, x, m, n, weight, bias, eps):  # type: ignore[override]
        with torch.autocast(device_type=x.device.type, enabled=False):  # statistics in >= float32
            return _MaskedInstanceNorm._forward(ctx, x, m, n, weight, bias, eps)

    @staticmethod
    def _forward(ctx, x, m, n, weight, bias, eps):
        in_dtype = x.dtype
        xc = x.float() if x.dtype in _LOW_PRECISION else x
        mc = m.to(xc.dtype)
        b, c = xc.shape[:2]
        dims = tuple(range(2, xc.dim()))
        nb = n.to(xc.dtype).view(b, 1, *(1,) * len(dims))
        mean = xc.sum(dim=dims, keepdim=True) / nb
        out = torch.addcmul(xc, mean, mc, value=-1.0)  # x - mean at visible voxels, 0 at masked
        var = torch.linalg.vector_norm(out, dim=dims, keepdim=True).square_() / nb  # two-pass: stable
        rstd = torch.rsqrt(var + eps)
        scale = rstd * weight.to(xc.dtype).view(1, c, *(1,) * len(dims)) if weight is not None else rstd
        out.mul_(scale)
        if bias is not None:
            out.addcmul_(bias.to(xc.dtype).view(1, c, *(1,) * len(dims)), mc)  # + bias at visible only
        ctx.save_for_backward(xc, mc, nb, mean, rstd, weight)
        ctx.has_bias = bias is not None
        ctx.in_dtype = in_dtype
        return out.to(in_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _MaskedInstanceNorm._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        x, mc, nb, mean, rstd, weight = ctx.saved_tensors
        c = x.shape[1]
        dims = tuple(range(2, x.dim()))
        # with xhat = (x - mean) * rstd at visible voxels (0 at masked), and g the upstream gradient:
        # dx = w * rstd * (g - sum(g)/n - xhat * sum(g * xhat)/n) at visible voxels, 0 at masked
        dx = grad_out.to(x.dtype) * mc  # g at visible voxels; becomes dx in place below
        gsum = dx.sum(dim=dims, keepdim=True)
        gxhat = (torch.linalg.vecdot(dx.flatten(2), x.flatten(2)).view_as(gsum) - mean * gsum) * rstd
        w = weight.to(x.dtype).view(1, c, *(1,) * len(dims)) if weight is not None else 1.0
        k = w * rstd
        c_x = k * rstd * gxhat / nb  # coefficient of x
        c_m = c_x * mean - k * gsum / nb  # coefficient of the mask
        dx.mul_(k).addcmul_(x, c_x, value=-1.0).addcmul_(c_m, mc)
        dweight = dbias = None
        if weight is not None and ctx.needs_input_grad[3]:
            dweight = gxhat.sum(dim=0).flatten().to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            dbias = gsum.sum(dim=0).flatten().to(weight.dtype if weight is not None else x.dtype)
        return dx.to(ctx.in_dtype), None, None, dweight, dbias, None


def masked_instance_norm(
    x_bcdhw: torch.Tensor,
    mask_b1dhw: torch.Tensor,
    count_b: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    input_masked: bool = False,
) -> torch.Tensor:
    """InstanceNorm with per-(sample, channel) statistics over visible voxels only; 0 at masked voxels.

    Masked moments ``mean = sum(x m)/n``, ``var = sum((x - mean)^2 m)/n``, then the affine, times
    ``m``. Low-precision inputs are normalised in float32 and returned in their own dtype.

    Args:
        x_bcdhw: features.
        mask_b1dhw: 1 = visible, 0 = masked, at the features' resolution.
        count_b: visible voxels per sample (``mask.sum`` over space), shape ``(B,)``; must be >= 1.
        weight, bias: the norm's affine parameters (``(C,)``) or None.
        eps: added to the variance, as in ``nn.InstanceNorm3d``.
        input_masked: promise that ``x_bcdhw`` is already 0 at masked voxels (true after a sparse
            conv) - saves one full-size copy; otherwise the masked values are ignored via a copy.
    """
    if not input_masked:
        x_bcdhw = x_bcdhw * mask_b1dhw
    return _MaskedInstanceNorm.apply(x_bcdhw, mask_b1dhw, count_b, weight, bias, eps)


class _MaskInPlace(torch.autograd.Function):
    """``x *= m`` in place (conv/pool backward does not need its output, so no copy is made)."""

    @staticmethod
    def forward(ctx, x, m, grad_is_masked):  # type: ignore[override]
        ctx.mark_dirty(x)
        ctx.grad_is_masked = grad_is_masked
        ctx.save_for_backward(m)
        return x.mul_(m)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        if ctx.grad_is_masked:  # exact: the only consumer's gradient is already 0 at masked voxels
            return grad, None, None
        (m,) = ctx.saved_tensors
        return grad * m, None, None


def _mask_inplace(x: torch.Tensor, m: torch.Tensor, grad_is_masked: bool) -> torch.Tensor:
    return _MaskInPlace.apply(x, m, grad_is_masked)


class _SparseWalk:
    """One sparse forward through DNA encoder modules (holds the per-call mask and switches)."""

    def __init__(self, masks: MaskPyramid, sparse_conv: bool, sparse_norm: bool, probe: Probe | None):
        self.masks = masks
        self.sparse_conv = sparse_conv
        self.sparse_norm = sparse_norm
        self.probe = probe

    def _report(self, name: str, module: nn.Module, x: torch.Tensor) -> None:
        if self.probe is not None:
            self.probe(name, module, x, self.masks.at(x.shape[2:], x.dtype))

    def run(self, module: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
        if isinstance(module, StackedConvBlocks):
            for i, block in enumerate(module.convs):
                x = self.run(block, x, f"{name}.convs.{i}")
            return x
        if isinstance(module, ConvDropoutNormReLU):
            # all_modules is what DNA's forward runs; .conv/.norm are aliases of the same objects
            ops = list(module.all_modules)
            for i, op in enumerate(ops):
                if isinstance(op, _ConvNd):
                    x = self._conv_or_pool(op, x, f"{name}.all_modules.{i}", _feeds_norm(ops[i + 1:]))
                else:
                    x = self.run(op, x, f"{name}.all_modules.{i}")
            return x
        if isinstance(module, StackedResidualBlocks):
            for i, block in enumerate(module.blocks):
                x = self.run(block, x, f"{name}.blocks.{i}")
            return x
        if isinstance(module, (BasicBlockD, BottleneckD)):
            return self._residual_block(module, x, name)
        if isinstance(module, nn.Sequential):
            for i, op in enumerate(module):
                x = self.run(op, x, f"{name}.{i}")
            return x
        if isinstance(module, (_ConvNd, _AvgPoolNd, _MaxPoolNd)):
            return self._conv_or_pool(module, x, name, feeds_norm=False)
        if isinstance(module, _InstanceNorm):
            x = self._norm(module, x)
            self._report(name, module, x)
            return x
        if isinstance(module, _DropoutNd):
            return module(x)
        if isinstance(module, _ZERO_PRESERVING):
            return module(x)
        if isinstance(module, nn.Module) and _is_activation(module):
            x = module(x)
            m = self.masks.at(x.shape[2:], x.dtype) if (self.sparse_conv or self.sparse_norm) else None
            return x * m if m is not None else x
        raise TypeError(f"S3D sparse encoder: unsupported module {type(module).__name__} at {name!r}")

    def _conv_or_pool(self, module: nn.Module, x: torch.Tensor, name: str, feeds_norm: bool) -> torch.Tensor:
        x = module(x)
        m = self.masks.at(x.shape[2:], x.dtype) if self.sparse_conv else None
        if m is not None:
            # If the output only feeds a sparse norm, that norm's backward already returns 0 at masked
            # voxels, so the mask's own backward multiply can be skipped (exactly).
            x = _mask_inplace(x, m, grad_is_masked=feeds_norm and self.sparse_norm)
        self._report(name, module, x)
        return x

    def _norm(self, norm: _InstanceNorm, x: torch.Tensor) -> torch.Tensor:
        m = self.masks.at(x.shape[2:], x.dtype) if self.sparse_norm else None
        if m is None:
            return norm(x)
        if norm.track_running_stats:
            raise TypeError("S3D sparse norm: InstanceNorm with track_running_stats is not supported")
        # after a sparse conv (and dropout, which keeps zeros) the input is already 0 at masked voxels
        return masked_instance_norm(x, m, self.masks.count(x.shape[2:]), norm.weight, norm.bias, norm.eps,
                                    input_masked=self.sparse_conv)

    def _residual_block(self, block: BasicBlockD | BottleneckD, x: torch.Tensor, name: str) -> torch.Tensor:
        if block.apply_stochastic_depth or block.apply_se:
            raise TypeError(f"S3D sparse encoder: stochastic depth / squeeze-excitation at {name!r} "
                            "is not supported")
        residual = self.run(block.skip, x, f"{name}.skip") if isinstance(block.skip, nn.Module) else x
        convs = ("conv1", "conv2", "conv3") if isinstance(block, BottleneckD) else ("conv1", "conv2")
        out = x
        for attr in convs:
            out = self.run(getattr(block, attr), out, f"{name}.{attr}")
        out += residual  # in place, as DNA's BasicBlockD does
        last = block.nonlin3 if isinstance(block, BottleneckD) else block.nonlin2
        out = self.run(last, out, f"{name}.nonlin") if isinstance(last, nn.Module) else out
        self._report(name, block, out)
        return out


def _feeds_norm(ops_after_conv: Sequence[nn.Module]) -> bool:
    """True if a conv's output reaches an InstanceNorm through dropouts only (zeros stay zeros)."""
    for op in ops_after_conv:
        if isinstance(op, _InstanceNorm):
            return not op.track_running_stats
        if not isinstance(op, _DropoutNd):
            return False
    return False


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation"


def sparse_encoder_forward(
    encoder: ResidualEncoder,
    x_bcdhw: torch.Tensor,
    masks: MaskPyramid,
    *,
    sparse_conv: bool = True,
    sparse_norm: bool = True,
    probe: Probe | None = None,
    prefix: str = "encoder",
) -> list[torch.Tensor]:
    """Run ``encoder`` (DNA ``ResidualEncoder``) sparsely; returns the stage outputs (skips).

    Same modules and parameters as ``encoder(x)``; with an all-visible mask (or both switches off)
    the result equals the dense forward up to float rounding.

    Args:
        encoder: the network's encoder (``network.encoder``).
        x_bcdhw: input patch (zero-filled at masked voxels if the caller wants no leakage).
        masks: the batch's mask pyramid.
        sparse_conv: mask conv/pool outputs.
        sparse_norm: InstanceNorm statistics over visible voxels, output 0 at masked voxels.
        probe: optional callback, see :data:`Probe`.
        prefix: name prefix passed to ``probe`` (``"encoder"`` matches ``network.named_modules()``).
    """
    walk = _SparseWalk(masks, sparse_conv, sparse_norm, probe)
    x = x_bcdhw
    if encoder.stem is not None:
        x = walk.run(encoder.stem, x, f"{prefix}.stem")
    skips = []
    for i, stage in enumerate(encoder.stages):
        x = walk.run(stage, x, f"{prefix}.stages.{i}")
        skips.append(x)
    return skips
