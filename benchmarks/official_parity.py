"""``bench_official.py --parity``: max differences between our DETR-R50 and the official code at
the same weights (no timing).

The official model (random init; its frozen BatchNorms given random statistics, gammas in
[0.1, 0.5] so that the random trunk stays well conditioned) is saved as a release file
``{"model": state_dict}`` and loaded into ours by :func:`load_pretrained_into`, the fine-tuning
path. Dropout is 0 in both (our dropout draws its masks differently by design). Batch: two
images of different sizes, padded. Printed: max abs / rel difference of the eval outputs (last
and aux layers), of the post-processed detections, of every loss of the criteria (two
targets in one image, none in the other) and their weighted total, of all gradients (relative to
the largest official one), and whether the matchers agree on the official outputs of every
decoder layer. Expect ~1e-5 relative or less; near-ties of the matching cost may differ.
"""

from __future__ import annotations

import copy
import os
import tempfile

import torch
from torch import Tensor, nn

from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.matcher import HungarianMatcher
from detr_lightning.detr.model import build_detr
from detr_lightning.detr.official import convert_official_state_dict, load_pretrained_into
from detr_lightning.detr.postprocess import PostProcess


def _diff(name: str, ours: Tensor, official: Tensor) -> float:
    """Print and return the max relative difference (to the official's largest magnitude)."""
    d = (ours.detach().double() - official.detach().double()).abs().max().item()
    r = d / max(official.detach().double().abs().max().item(), 1e-30)
    print(f"[parity] {name:28s} max abs {d:.2e}  rel {r:.2e}")
    return r


def _batch() -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    """Two images (150x203, 121x170) padded to 150x203, True on real pixels; targets: 2 boxes
    in the first image, none in the second."""
    gen = torch.Generator().manual_seed(0)
    pixels, real = torch.zeros(2, 3, 150, 203), torch.zeros(2, 150, 203, dtype=torch.bool)
    targets = []
    for i, ((h, w), n) in enumerate(zip([(150, 203), (121, 170)], [2, 0], strict=True)):
        pixels[i, :, :h, :w] = torch.randn(3, h, w, generator=gen)
        real[i, :h, :w] = True
        centre = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
        size = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
        targets.append({"labels": torch.randint(1, 91, (n,), generator=gen),
                        "boxes": torch.cat([centre, size], 1)})  # fmt: skip
    return pixels, real, targets


def run_parity(official: nn.Module, criterion: nn.Module, postprocess: nn.Module) -> float:
    """Compare (module docstring); ``official``, ``criterion``, ``postprocess``: the official
    ``build_model``'s, built with ``dropout=0``. Returns the largest relative difference of the
    outputs, losses and gradients."""
    from util.misc import NestedTensor  # the official code's; on sys.path by build_official

    for m in official.modules():
        if type(m).__name__ == "FrozenBatchNorm2d":
            m.weight.uniform_(0.1, 0.5), m.bias.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    path = os.path.join(tempfile.mkdtemp(), "release.pth")
    torch.save({"model": official.state_dict()}, path)
    ours = build_detr("resnet50", dropout=0.0)
    load_pretrained_into(ours, path)
    pixels, real, targets = _batch()
    worst = []
    with torch.no_grad():
        o, u = official.eval()(NestedTensor(pixels, ~real)), ours.eval()(pixels, real)
    for i, (lu, lo) in enumerate(zip([u, *u["aux_outputs"]], [o, *o["aux_outputs"]], strict=True)):
        tag = "last layer" if i == 0 else f"aux {i - 1}"
        worst += [_diff(f"eval {tag} {k}", lu[k], lo[k]) for k in ("pred_logits", "pred_boxes")]
    sizes = torch.tensor([[480, 640], [375, 500]])
    po, pu = postprocess(o, sizes), PostProcess()(u, sizes)
    for k in ("scores", "labels", "boxes"):
        _diff(f"postprocess {k}", torch.stack([r[k] for r in pu]).float(),
              torch.stack([r[k] for r in po]).float())  # fmt: skip
    layers = [o, *o["aux_outputs"]]
    official_pairs = [pair for lay in layers for pair in criterion.matcher(lay, targets)]
    our_pairs = [pair for m in HungarianMatcher().match_layers(layers, targets) for pair in m]
    same = all(
        torch.equal(oi, ui) and torch.equal(oj, uj)
        for (oi, oj), (ui, uj) in zip(official_pairs, our_pairs, strict=True)
    )
    print(f"[parity] matcher indices on the official outputs, every layer: "
          f"{'identical' if same else 'DIFFERENT'}")  # fmt: skip
    ours_criterion = SetCriterion(91, HungarianMatcher())
    o = official.train()(NestedTensor(pixels, ~real))
    u = ours.train()(pixels, real, targets)
    lo, lu = criterion(o, copy.deepcopy(targets)), ours_criterion(u, targets)
    if set(lo) != set(lu):
        print(f"[parity] loss keys differ: {sorted(set(lo) ^ set(lu))}")
    worst += [max(_diff(f"loss {k}", lu[k], lo[k]) for k in sorted(set(lo) & set(lu)))]
    total_o = sum(v * criterion.weight_dict[k] for k, v in lo.items() if k in criterion.weight_dict)
    total_u = ours_criterion.weighted_total(lu)
    worst.append(_diff("weighted total", total_u, total_o))
    total_o.backward(), total_u.backward()
    go = convert_official_state_dict(
        {n: p.grad for n, p in official.named_parameters() if p.grad is not None}
    )
    gu = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    if set(go) != set(gu):
        print(f"[parity] parameters with gradients differ: {sorted(set(go) ^ set(gu))[:5]}")
    keys = sorted(set(go) & set(gu))
    flat = [torch.cat([g[k].flatten() for k in keys]) for g in (gu, go)]
    worst.append(_diff(f"gradients ({len(keys)} tensors)", *flat))
    print(f"[parity] largest relative difference (outputs, losses, gradients): {max(worst):.2e}")
    return max(worst)
