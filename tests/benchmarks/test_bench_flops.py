"""benchmarks/bench_flops.py: its count against a hand count, and the paper presets' GFLOPs and
parameters against the paper's Table 1."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]


def _bench_flops():
    path = REPO / "benchmarks" / "bench_flops.py"
    spec = importlib.util.spec_from_file_location("bench_flops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _ConvLinear(nn.Module):
    """3x3 conv 3 -> 4 channels (padding 1) on 8x8, then a linear layer 256 -> 5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 5)

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(pixels).flatten(1))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_forward_gflops_counts_multiply_adds(device) -> None:
    # conv: 8*8 outputs x 4 channels x (3*3*3) taps = 6912; linear: 256 x 5 = 1280
    with torch.device(device):
        net = _ConvLinear()
    assert _bench_flops().forward_gflops(net, 8, 8, device=device) == pytest.approx(8192e-9)


@pytest.mark.slow
def test_paper_presets_match_table_1() -> None:
    """The mean over COCO's two commonest evaluation sizes is within 3% of the paper's GFLOPs
    (its average over 100 val images), and the parameters within 2% of its counts."""
    bench = _bench_flops()
    for exp, (paper_gflops, paper_params) in bench.PAPER.items():
        net = bench.preset_net(exp)
        gflops = [bench.forward_gflops(net, h, w) for h, w in bench.SIZES]
        assert sum(gflops) / len(gflops) == pytest.approx(paper_gflops, rel=0.03), exp
        params = sum(p.numel() for p in net.parameters()) / 1e6
        assert params == pytest.approx(paper_params, rel=0.02), exp


def test_the_printed_row_holds_each_sizes_count_their_mean_and_the_papers(capsys) -> None:
    bench = _bench_flops()
    assert bench.main(["--exp", "r50", "--size", "64x96", "96x128"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " r50 " in line)
    cells = row.split()
    net = bench.preset_net("r50")
    expected = [bench.forward_gflops(net, 64, 96), bench.forward_gflops(net, 96, 128)]
    params = sum(p.numel() for p in net.parameters()) / 1e6
    assert cells[:3] == ["[flops]", "r50", f"{params:.1f}M"]
    assert [float(c) for c in cells[3:5]] == pytest.approx(expected, abs=0.05)
    assert float(cells[5]) == pytest.approx(sum(expected) / 2, abs=0.05)
    assert cells[6:] == ["86", "/", "41M"]  # Table 1's row
