"""EDCSTFN — Tan, Di, Zhang, Guo, Gao, "An Enhanced Deep Convolutional Model for Spatiotemporal
Image Fusion", Remote Sensing 11(24):2898, 2019.

Facts from the paper and the official code, github.com/theonegis/edcstfn (Apache-2.0): fusion
network on ``master`` @ e4bbd14, loss autoencoder on branch ``autoencoder`` @ 0592759. Our own
code; the parameter counts equal the official classes instantiated with 6 bands (FusionNet
284,134; autoencoder 481,734 of which the loss encoder is 241,696).

Fusion network (all at the fine resolution, 3x3 convolutions):

* fine encoder on ``F_ref``: B -> 32 -> 64 -> 128, ReLU after each;
* residual encoder on ``cat(C_ref, F_ref, C2)``: 3B -> 32 -> 64 -> 128, no activation at the end;
* their sum goes through the decoder 128 -> 64 -> 32 (ReLU) -> 1x1 conv to B.

Two references (t1 < t2 < t3; the official example runs with ``--refs 2``, our default, n_refs=2;
``edcstfn-1ref`` is the same network with one pair, the official ``--refs 1``):
in training each pair gives its own prediction and the loss is the mean of both; at test time
the two fused feature maps are weighted per pixel by ``1/|residual features|`` (normalised) before
the one decoder pass.

Loss (stage ``fusion``): ``MSE + MSE(E(pred), E(target)) + 0.8 (1 - MS-SSIM)``, where ``E`` is the
frozen encoder of an hourglass autoencoder (B -> 32 -> 64 -> 128 (stride 2) -> 128; decoder back
with a bicubic x2 upsampling) trained first (stage ``autoencoder``) on fine images with
``L1 + 0.8 (1 - MS-SSIM)``. Adam lr 1e-3, weight decay 1e-6, ReduceLROnPlateau(0.1, patience 5).

Deviations (also in catalog/papers/edcstfn.yaml):

* Coarse images arrive on the fine grid (the official code upsamples native 16x-coarser patches
  bilinearly inside ``forward``; same thing done earlier).
* Zero padding inside the convolutions instead of ReplicationPad2d + unpadded conv (same
  parameters, differs only at patch borders; avoids one copy per layer, ``pad="replicate"``
  restores the official behaviour).
* MS-SSIM is the standard product ``prod_{i<5} cs_i^w_i * ssim_5^w_5`` (the official copy of
  pytorch-msssim raises ``ssim_5`` to ``4 w_5``, a known bug of that package); like the official
  code the per-level values are mapped to (x + 1) / 2 before the product ("normalize") and the
  window shrinks to the patch on small levels.
* The autoencoder is trained as stage 1 on the fine images of the training batches (t1, t2, t3)
  instead of a separate data set; it is frozen (``requires_grad=False``) outside that stage, so it
  is not in the canonical trainable-parameter count, and it never produces the test output:
  ``forward`` always runs the fusion network.

Quick budget only (``Recipe.quick_args``/``quick_optim``; ``--full-recipe`` builds and trains the
network as published, and the architecture and parameter count are the same in both):

* ``init="identity"``: the same layers, initialised so that the untrained network returns F1 (one
  pair) or the mean of F1 and F3 (two pairs): the first ``B`` channels of every fine-encoder and
  decoder conv are a Dirac kernel, the residual encoder's last conv starts at zero, the other
  channels keep PyTorch's default start. The paper specifies no initialisation; with the default
  one the decoder first has to relearn F1 through six convolutions (quick model 0.043 test RMSE on
  the demo, worse than copy-f1). This is NOT a start from the ``delta`` baseline: the coarse change
  has to be learned by the residual encoder, so training visibly improves on the start.
* ``pad="replicate"``: the official code's ReplicationPad2d (fewer border errors on 64 px patches).
* ``ae_share=0.1``: the loss autoencoder gets 1 epoch of 10 (it only shapes the feature term).
* Adam at the paper's lr 1e-3 with a 20-step linear warm-up and per-step cosine decay to zero
  (the plateau rule never fires in 9 short epochs).
* Both budgets: the weights of the epoch with the lowest validation RMSE are kept (``select="best"``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfcat.models import Batch, Budget, FusionModel, OptimSpec, Recipe, Stage, register_model, variant_of
from stfcat.models.losses import feature_loss, ms_ssim


def _conv3(cin: int, cout: int, pad: str, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate" if pad == "replicate" else "zeros")


class _FineEncoder(nn.Sequential):
    def __init__(self, bands: int, pad: str) -> None:
        super().__init__(
            _conv3(bands, 32, pad), nn.ReLU(True),
            _conv3(32, 64, pad), nn.ReLU(True),
            _conv3(64, 128, pad), nn.ReLU(True),
        )


class _ResidualEncoder(nn.Sequential):
    def __init__(self, bands: int, pad: str) -> None:
        super().__init__(
            _conv3(3 * bands, 32, pad), nn.ReLU(True),
            _conv3(32, 64, pad), nn.ReLU(True),
            _conv3(64, 128, pad),
        )


class _Decoder(nn.Sequential):
    def __init__(self, bands: int, pad: str) -> None:
        super().__init__(
            _conv3(128, 64, pad), nn.ReLU(True),
            _conv3(64, 32, pad), nn.ReLU(True),
            nn.Conv2d(32, bands, 1),
        )


class LossAutoEncoder(nn.Module):
    """Hourglass autoencoder whose encoder gives the feature (perceptual) loss."""

    def __init__(self, bands: int, pad: str) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            _conv3(bands, 32, pad), nn.ReLU(True),
            _conv3(32, 64, pad), nn.ReLU(True),
            _conv3(64, 128, pad, stride=2), nn.ReLU(True),
            _conv3(128, 128, pad), nn.ReLU(True),
        )
        self.dec_in = nn.Sequential(_conv3(128, 128, pad), nn.ReLU(True))
        self.dec_out = nn.Sequential(
            _conv3(128, 64, pad), nn.ReLU(True),
            _conv3(64, 32, pad), nn.ReLU(True),
            nn.Conv2d(32, bands, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.dec_in(self.encoder(x))
        h = F.interpolate(h, scale_factor=2, mode="bicubic", align_corners=False)
        return self.dec_out(h)[..., : x.shape[-2], : x.shape[-1]]


RECIPE = Recipe(
    optim=OptimSpec(name="adam", lr=1e-3, weight_decay=1e-6, scheduler="plateau",
                    scheduler_args={"factor": 0.1, "patience": 5}),
    # Quick: 1 epoch autoencoder (ae_share 0.1) + 9 epochs fusion of 20 steps, batch 4 of 64 px.
    quick=Budget(epochs=10, patch=64, batch=4, steps_per_epoch=20),
    # Official example: 60 epochs, batch 4, coarse patch 35 (= 560 fine px) at stride 30.
    paper=Budget(epochs=60, patch=560, batch=4, steps_per_epoch=50),
    notes="stage 1 autoencoder (L1 + 0.8(1-MS-SSIM)), stage 2 fusion (MSE + feature MSE + 0.8(1-MS-SSIM))",
    # The paper's lr with a short warm-up (the identity start is fragile for the first steps) and
    # a cosine decay to zero within the budget: the plateau rule never fires in 9 short epochs.
    quick_optim=OptimSpec(name="adam", lr=1e-3, weight_decay=1e-6, scheduler="cosine", schedule_unit="step",
                          warmup_steps=20),
    # identity start of the same network (initialisation is not part of the paper); the official
    # replicate padding (fewer border errors on 64 px patches); the loss autoencoder, which only
    # shapes the feature term, gets 1 epoch of 10 instead of a quarter of the quick budget
    quick_args={"init": "identity", "pad": "replicate", "ae_share": 0.1},
    quick_notes="checkpoint selected on the validation split (select='best', both budgets)",
    select="best",
)


@register_model("edcstfn", paper="edcstfn", family="cnn", params=284_134, recipe=RECIPE)
class EDCSTFN(FusionModel):
    """Fine encoder + residual encoder + decoder at full resolution, compound loss with a frozen AE encoder."""

    n_refs = 2
    halo = 8
    receptive_field = 5  # 3x3 convs: 3 in the encoders (in parallel) + 2 in the decoder; the 2-ref weights are per pixel

    def __init__(self, bands: int = 6, ratio: int = 16, *, pad: Literal["zeros", "replicate"] = "zeros",
                 alpha: float = 0.8, init: Literal["default", "identity"] = "default",
                 ae_share: float = 0.25) -> None:
        super().__init__(bands, ratio)
        if pad not in ("zeros", "replicate"):
            raise ValueError(f"pad must be 'zeros' or 'replicate', got {pad!r}")
        if init not in ("default", "identity"):
            raise ValueError(f"init must be 'default' or 'identity', got {init!r}")
        if not 0.0 < ae_share < 1.0:
            raise ValueError(f"ae_share must be in (0, 1), got {ae_share}")
        self.pad, self.alpha, self.init, self.ae_share = pad, alpha, init, ae_share
        self.encoder = _FineEncoder(bands, pad)
        self.residual = _ResidualEncoder(bands, pad)
        self.decoder = _Decoder(bands, pad)
        self.autoencoder = LossAutoEncoder(bands, pad)
        self.autoencoder.requires_grad_(False)
        if init == "identity":
            self._identity_start()

    def _identity_start(self) -> None:
        """Start the unchanged architecture at "F2 = F1": the fine path carries F1 through its
        first ``B`` channels and the residual encoder's last conv starts at zero.

        With PyTorch's default initialisation the decoder first has to learn to reproduce F1
        through six convolutions, which takes most of a quick budget; here that comes for free and
        training spends its steps on the change. Channels ``B..`` keep their random start so the
        network still has its full capacity, and the zeroed conv still gets gradients (its input
        is non-zero), so the residual features grow from the first step."""
        b = self.bands
        # only 3x3/1x1 convs with at least b in/out channels are on the fine path
        convs = [m for m in (*self.encoder, *self.decoder) if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv in convs:
                k = conv.kernel_size[0] // 2
                conv.weight[:b].zero_()
                conv.bias[:b].zero_()
                for i in range(b):
                    # reflectance is >= 0, so the ReLUs between these convs pass it unchanged
                    conv.weight[i, i, k, k] = 1.0
            last = self.residual[-1]
            last.weight.zero_()
            last.bias.zero_()

    def config(self) -> dict:
        return {**super().config(), "pad": self.pad, "alpha": self.alpha, "init": self.init,
                "ae_share": self.ae_share}

    def fusion_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.residual.parameters(), *self.decoder.parameters()]

    def _features(self, f: Tensor, c: Tensor, c2: Tensor) -> tuple[Tensor, Tensor]:
        res = self.residual(torch.cat((c, f, c2), 1))
        return self.encoder(f) + res, res

    def predict_each(self, batch: Batch) -> list[Tensor]:
        """One prediction per reference pair (the training outputs)."""
        refs = [("f1", "c1")] + ([("f3", "c3")] if "f3" in batch else [])
        return [self.decoder(self._features(batch[f], batch[c], batch["c2"])[0]) for f, c in refs]

    def forward(self, batch: Batch) -> Tensor:
        # the loss network is trainable only inside stage 1; prediction never touches it
        self.autoencoder.requires_grad_(False)
        fused1, res1 = self._features(batch["f1"], batch["c1"], batch["c2"])
        if "f3" not in batch:
            return self.decoder(fused1)
        fused3, res3 = self._features(batch["f3"], batch["c3"], batch["c2"])
        a, b = 1.0 / (res1.abs() + 1e-8), 1.0 / (res3.abs() + 1e-8)
        w = (a / (a + b)).clamp(0.0, 1.0)
        return self.decoder(w * fused1 + (1.0 - w) * fused3)

    # -- losses ----------------------------------------------------------------------------
    def _vision_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred, target) + self.alpha * (1.0 - ms_ssim(pred, target, normalize=True))

    def autoencoder_loss(self, batch: Batch, target: Tensor) -> Tensor:
        self.autoencoder.requires_grad_(True)
        fine = torch.cat([batch["f1"], target] + ([batch["f3"]] if "f3" in batch else []), 0)
        return self._vision_loss(self.autoencoder(fine), fine)

    def compound_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return (F.mse_loss(pred, target) + feature_loss(self.autoencoder.encoder, pred, target)
                + self.alpha * (1.0 - ms_ssim(pred, target, normalize=True)))

    def fusion_loss(self, batch: Batch, target: Tensor) -> Tensor:
        self.autoencoder.requires_grad_(False)
        preds = self.predict_each(batch)
        return sum(self.compound_loss(p, target) for p in preds) / len(preds)

    def stages(self) -> list[Stage]:
        # the optimiser of stage 1 is built over the AE parameters, so they must require grad then
        self.autoencoder.requires_grad_(True)
        return [
            Stage("autoencoder", loss=self.autoencoder_loss, params=list(self.autoencoder.parameters()), share=self.ae_share),
            Stage("fusion", loss=self.fusion_loss, params=self.fusion_parameters(), share=1.0 - self.ae_share),
        ]




class EDCSTFN1Ref(EDCSTFN):
    """EDCSTFN with one reference pair (the official ``--refs 1``): C1, F1, C2 -> F2."""

    n_refs = 1


variant_of("edcstfn", "edcstfn-1ref", cls=EDCSTFN1Ref)
