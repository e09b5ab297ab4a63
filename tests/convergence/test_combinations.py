"""Lever combinations that cannot work are refused (query groups, deformable attention)."""

from __future__ import annotations

import levers
import pytest
from torch import nn

from detr_lightning.convergence.combinations import check_combination
from detr_lightning.convergence.queries import AnchorQueries, LearnedQueries
from detr_lightning.detr.transformer import Transformer


def _transformer(**kwargs) -> Transformer:
    return Transformer(d_model=8, nhead=2, num_encoder_layers=0, num_decoder_layers=1,
                       dim_feedforward=16, **kwargs)  # fmt: skip


def test_two_query_groups_need_query_pos_attn():
    """Group DETR with K = 2 groups needs the group mask, hence query_pos=attn, like any K > 1."""
    tr = _transformer(query_pos="input")
    with pytest.raises(ValueError, match="query_pos=attn"):
        check_combination(LearnedQueries(levers.dims(), groups=2), None, None, None, tr)
    check_combination(LearnedQueries(levers.dims(), groups=1), None, None, None, tr)  # K = 1


def test_deformable_cross_attention_refuses_decoder_pos_attn_only():
    """decoder_pos=attn has no effect under cross_attention (refused); decoder_pos=none or input
    are accepted."""
    factory = lambda dims: None  # noqa: E731
    queries = AnchorQueries(levers.dims())
    with pytest.raises(ValueError, match="decoder_pos=attn"):
        check_combination(queries, factory, None, None, _transformer(decoder_pos="attn"),
                          cross_attention=factory)  # fmt: skip
    for ok in ("none", "input"):
        check_combination(queries, factory, None, None, _transformer(decoder_pos=ok),
                          cross_attention=factory)  # fmt: skip


def test_query_source_without_uses_reference_is_named():
    """A query source lacking the required ``uses_reference`` flag is refused by config path,
    attribute and contract, not with a bare AttributeError."""

    class NoFlag(nn.Module):  # a query source that never set the flag
        pass

    with pytest.raises(ValueError, match=r"model.net.queries=NoFlag .*`uses_reference`"):
        check_combination(NoFlag(), None, None, None, _transformer())
