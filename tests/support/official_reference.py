"""The official DETR transformer restated in the official layout (sequence-first,
nn.MultiheadAttention, key_padding_mask True on padding): the independent reference for parity
tests."""

import math

import torch
import torch.nn.functional as F
from torch import nn

D, H, FF = 32, 4, 64


def _p(x, pos):
    return x if pos is None else x + pos


class RefEncoderLayer(nn.Module):
    def __init__(self, pre: bool, d: int = D, h: int = H, ff: int = FF) -> None:
        super().__init__()
        self.pre = pre
        self.self_attn = nn.MultiheadAttention(d, h)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, src, pad, pos):  # src/pos [S, B, D], pad [B, S] True = padding
        if self.pre:
            s2 = self.norm1(src)
            src = src + self.self_attn(_p(s2, pos), _p(s2, pos), s2, key_padding_mask=pad)[0]
            return src + self.linear2(F.relu(self.linear1(self.norm2(src))))
        src = self.norm1(
            src + self.self_attn(_p(src, pos), _p(src, pos), src, key_padding_mask=pad)[0]
        )
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class RefDecoderLayer(nn.Module):
    def __init__(self, pre: bool, d: int = D, h: int = H, ff: int = FF) -> None:
        super().__init__()
        self.pre = pre
        self.self_attn = nn.MultiheadAttention(d, h)
        self.multihead_attn = nn.MultiheadAttention(d, h)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, tgt, memory, pad, pos, query_pos):
        def sa(x):
            return self.self_attn(_p(x, query_pos), _p(x, query_pos), x)[0]

        def ca(x):
            return self.multihead_attn(
                _p(x, query_pos), _p(memory, pos), memory, key_padding_mask=pad
            )[0]

        def ffn(x):
            return self.linear2(F.relu(self.linear1(x)))

        if self.pre:
            tgt = tgt + sa(self.norm1(tgt))
            tgt = tgt + ca(self.norm2(tgt))
            return tgt + ffn(self.norm3(tgt))
        tgt = self.norm1(tgt + sa(tgt))
        tgt = self.norm2(tgt + ca(tgt))
        return self.norm3(tgt + ffn(tgt))


class RefTransformer(nn.Module):
    def __init__(self, pre: bool, enc: int = 2, dec: int = 2, d=D, h=H, ff=FF) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(RefEncoderLayer(pre, d, h, ff) for _ in range(enc))
        self.encoder.norm = nn.LayerNorm(d) if pre else None
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(RefDecoderLayer(pre, d, h, ff) for _ in range(dec))
        self.decoder.norm = nn.LayerNorm(d)

    def forward(self, src, mask, query_embed, pos):  # official Transformer.forward signature
        b, c, h, w = src.shape
        src, pos = src.flatten(2).permute(2, 0, 1), pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, b, 1)
        pad = ~mask.flatten(1)
        memory = src
        for layer in self.encoder.layers:
            memory = layer(memory, pad, pos)
        if self.encoder.norm is not None:
            memory = self.encoder.norm(memory)
        tgt, hs = torch.zeros_like(query_pos), []
        for layer in self.decoder.layers:
            tgt = layer(tgt, memory, pad, pos, query_pos)
            hs.append(self.decoder.norm(tgt))
        return torch.stack(hs).transpose(1, 2), memory.permute(1, 2, 0).view(b, c, h, w)


def randomise(module: nn.Module) -> None:
    # LayerNorm/bias defaults (ones, zeros) would hide a swapped or skipped parameter.
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else 1 / math.sqrt(p.shape[-1])))


def layer_inputs(b: int = 2, h: int = 3, w: int = 5, q: int = 6):
    mask = torch.ones(b, h, w, dtype=torch.bool)
    mask[0, :, 3:] = False
    mask[-1, 2:, :] = False
    return torch.randn(b, D, h, w), mask, torch.randn(q, D), torch.randn(b, D, h, w)
