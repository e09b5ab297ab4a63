"""The official panoptic DETR (``models/segmentation.py`` of facebookresearch/detr) restated in
the official layout and names: the independent reference for the mask-head parity tests.

``RefMHAttentionMap`` and ``RefMaskHeadSmallConv`` are the official modules (padding mask True
on padding, sequence-first transformer underneath, three FPN adapters); ``official_segm_forward``
runs a whole official DETRsegm from an official-format panoptic state dict (``detr.``-prefixed
detector keys + ``bbox_attention.*`` + ``mask_head.*``), using only torchvision, torch and
:mod:`official_reference` (no project code).
"""

import math

import torch
import torch.nn.functional as F
import torchvision
from official_reference import RefTransformer
from torch import nn
from torchvision.ops import FrozenBatchNorm2d


class RefMHAttentionMap(nn.Module):
    def __init__(self, query_dim, hidden_dim, num_heads):
        super().__init__()
        self.num_heads, self.hidden_dim = num_heads, hidden_dim
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5

    def forward(self, q, k, mask=None):  # q [B, Q, d], k [B, d, h, w], mask True = padding
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight.unsqueeze(-1).unsqueeze(-1), self.k_linear.bias)
        qh = q.view(q.shape[0], q.shape[1], self.num_heads, self.hidden_dim // self.num_heads)
        kh = k.view(
            k.shape[0], self.num_heads, self.hidden_dim // self.num_heads, k.shape[-2], k.shape[-1]
        )
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        if mask is not None:
            weights.masked_fill_(mask.unsqueeze(1).unsqueeze(1), float("-inf"))
        return F.softmax(weights.flatten(2), dim=-1).view(weights.size())


def _expand(tensor, length):
    return tensor.unsqueeze(1).repeat(1, int(length), 1, 1, 1).flatten(0, 1)


class RefMaskHeadSmallConv(nn.Module):
    def __init__(self, dim, fpn_dims, context_dim):
        super().__init__()
        inter = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1, self.gn1 = nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim)
        self.lay2, self.gn2 = nn.Conv2d(dim, inter[1], 3, padding=1), nn.GroupNorm(8, inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(8, inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(8, inter[3])
        self.lay5 = nn.Conv2d(inter[3], inter[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(8, inter[4])
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter[3], 1)

    def forward(self, x, bbox_mask, fpns):
        x = torch.cat([_expand(x, bbox_mask.shape[1]), bbox_mask.flatten(0, 1)], 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for adapter, lay, gn, fpn in (
            (self.adapter1, self.lay3, self.gn3, fpns[0]),
            (self.adapter2, self.lay4, self.gn4, fpns[1]),
            (self.adapter3, self.lay5, self.gn5, fpns[2]),
        ):
            cur = adapter(fpn)
            if cur.size(0) != x.size(0):
                cur = _expand(cur, x.size(0) // cur.size(0))
            x = cur + F.interpolate(x, size=cur.shape[-2:], mode="nearest")
            x = F.relu(gn(lay(x)))
        return self.out_lay(x)


def official_sine(pad, feats):
    """The official PositionEmbeddingSine (normalize=True) on a padding mask (True = padding)."""
    not_mask = ~pad
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(feats) // 2) / feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def _resnet(name):
    return getattr(torchvision.models, name)(norm_layer=FrozenBatchNorm2d)


def _mask_head_dims(name, d):
    trunk = _resnet(name).state_dict()
    expansion = 4 if "layer1.0.conv3.weight" in trunk else 1
    return [256 * expansion, 128 * expansion, 64 * expansion], 512 * expansion


def _calibrated_trunk(name, images):
    """A randomly initialised ResNet whose batch-norm statistics are those of ``images``: with
    identity statistics its activations grow ~1e5-fold by layer4 and swamp the attention maps in
    the mask head, which would make a parity test blind to them."""
    resnet = getattr(torchvision.models, name)(norm_layer=lambda c: nn.BatchNorm2d(c, momentum=1.0))
    with torch.no_grad():
        resnet.train()(images)
    return {
        k: v
        for k, v in resnet.state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


def official_panoptic_sd(
    resnet="resnet18", d=128, heads=8, ff=64, q=5, classes=4, enc=2, dec=2, calibration=None
):
    """A random official-format panoptic state dict, keys taken from official-structure modules.

    The trunk's batch-norm statistics come from ``calibration`` images (default: 2 random
    64 x 96 ones), the other values are their initialisation plus noise, and the mask head's
    weights on the attention-map channels are scaled up, so the masks depend on every part."""
    fpn_dims, out_channels = _mask_head_dims(resnet, d)
    if calibration is None:
        calibration = torch.randn(2, 3, 64, 96)
    parts = {
        "detr.backbone.0.body.": _calibrated_trunk(resnet, calibration),
        "detr.transformer.": RefTransformer(False, enc, dec, d, heads, ff).state_dict(),
        "detr.class_embed.": nn.Linear(d, classes + 1).state_dict(),
        "detr.query_embed.": nn.Embedding(q, d).state_dict(),
        "detr.input_proj.": nn.Conv2d(out_channels, d, 1).state_dict(),
        "bbox_attention.": RefMHAttentionMap(d, d, heads).state_dict(),
        "mask_head.": RefMaskHeadSmallConv(d + heads, fpn_dims, d).state_dict(),
    }
    for i, (cin, cout) in enumerate(((d, d), (d, d), (d, 4))):
        parts[f"detr.bbox_embed.layers.{i}."] = nn.Linear(cin, cout).state_dict()
    sd = {}
    for prefix, part in parts.items():
        for key, value in part.items():
            if not prefix.startswith("detr.backbone"):
                value = value + 0.1 * torch.randn_like(value)
            sd[prefix + key] = value
    # Sharper attention (queries differ) and maps (~1e-2 each: they sum to 1 over heads x
    # pixels) weighed like the features.
    sd["bbox_attention.q_linear.weight"] *= 4.0
    sd["mask_head.lay1.weight"][:, d:] *= 30.0
    return sd


def official_segm_forward(sd, images, real, resnet="resnet18", heads=8, ff=64, enc=2, dec=2):
    """The official DETRsegm forward (post-norm, sine positions) on ``images`` [B, 3, H, W] with
    ``real`` [B, H, W] True on real pixels. Returns pred_logits, pred_boxes, pred_masks."""
    det = {k[len("detr.") :]: v for k, v in sd.items() if k.startswith("detr.")}
    d = det["query_embed.weight"].shape[1]
    body = _resnet(resnet)
    trunk = {k[len("backbone.0.body.") :]: v for k, v in det.items() if k.startswith("backbone.")}
    missing, _ = body.load_state_dict(trunk, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"}
    x = body.maxpool(body.relu(body.bn1(body.conv1(images))))
    features = []
    for layer in (body.layer1, body.layer2, body.layer3, body.layer4):
        x = layer(x)
        features.append(x)
    pad = F.interpolate((~real)[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
    transformer = RefTransformer(False, enc, dec, d, heads, ff).eval()
    transformer.load_state_dict(
        {k[len("transformer.") :]: v for k, v in det.items() if k.startswith("transformer.")}
    )
    src_proj = F.conv2d(x, det["input_proj.weight"], det["input_proj.bias"])
    hs, memory = transformer(src_proj, ~pad, det["query_embed.weight"], official_sine(pad, d // 2))
    logits = F.linear(hs[-1], det["class_embed.weight"], det["class_embed.bias"])
    box = hs[-1]
    for i in range(3):
        box = F.linear(
            box, det[f"bbox_embed.layers.{i}.weight"], det[f"bbox_embed.layers.{i}.bias"]
        )
        box = box.relu() if i < 2 else box.sigmoid()
    attention = RefMHAttentionMap(d, d, heads)
    attention.load_state_dict({k[15:]: v for k, v in sd.items() if k.startswith("bbox_attention.")})
    fpn_dims, _ = _mask_head_dims(resnet, d)
    head = RefMaskHeadSmallConv(d + heads, fpn_dims, d)
    head.load_state_dict({k[10:]: v for k, v in sd.items() if k.startswith("mask_head.")})
    bbox_mask = attention(hs[-1], memory, mask=pad)
    seg = head(src_proj, bbox_mask, [features[2], features[1], features[0]])
    masks = seg.view(images.shape[0], hs.shape[2], seg.shape[-2], seg.shape[-1])
    return logits, box, masks
