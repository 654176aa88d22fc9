"""The gate predictor's operation count, against numbers worked out by hand."""

from spquant import build_gate


def test_channel_gate_overhead_by_hand():
    # C_in = 4, C_out = 8, input 5x5:
    #   global average pool  4 * 25 = 100 accumulates
    #   softmax over C_in    3 * 4  =  12 (exp, sum, divide)
    #   1x1 conv             4 * 8  =  32
    #   bias + sigmoid       2 * 8  =  16                      -> 160
    gate = build_gate(4, 8, {"learned_gate": True, "spatial_gate": False})
    assert gate.overhead_macs((5, 5)) == 160
    # C_in = 3, C_out = 2, input 2x7: 42 + 9 + 6 + 4 = 61
    assert build_gate(3, 2, {"learned_gate": True}).overhead_macs((2, 7)) == 61


def test_spatial_gate_overhead_by_hand():
    # spatial block gate alone, C_in = 2, input 6x6, output 6x6, 2x2 blocks -> 3x3 blocks:
    #   pooling 2 * 36 = 72; 3x3 conv 9 * 2 * 9 = 162; bias + sigmoid 2 * 9 = 18 -> 252
    gate = build_gate(2, 5, {"learned_gate": False, "spatial_gate": True})
    assert gate.overhead_macs((6, 6), (6, 6)) == 252
    # odd output 5x5 still needs ceil(5/2) = 3 blocks per side: same 252
    assert gate.overhead_macs((6, 6), (5, 5)) == 252
