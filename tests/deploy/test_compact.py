"""Compaction removes provably silent channels and changes no output bit (spquant.deploy.compact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.deploy import DeploySim, Interpreter, fold_model, load, save
from spquant.deploy.compact import compact, static_gate_rows
from spquant.deploy.interpreter import gate_int
from spquant.deploy.memory import deployed_memory
from spquant.layers import ConvBNLIF
from spquant.models import VGG9, QuantSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(prior: bool, off: dict[int, list[int]], on_rest: bool = False, seed: int = 0, plan=None):
    """A gated VGG on 2x8x8 events; in gated layer i the channels off[i] get a gate bias so low
    that no input can open them; with ``on_rest`` every other channel's gate is always open."""
    torch.manual_seed(seed)
    prune = {"channel_prior": prior, "spatial_prior": prior, "learned_gate": True, "predictor_bits": 2}
    if prior:
        prune["channel_prior_threshold"] = -0.3
    spec = QuantSpec(mode="spquant", prune=prune)
    net = VGG9(4, in_channels=2, input_size=(8, 8), width=1.0, plan=plan or [6, "A", 8, 8], spec=spec)
    layer = 0
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ConvBNLIF):
                m.bn.weight.uniform_(0.5, 3.0)
                m.bn.bias.uniform_(-1.0, 1.5)
                if m.gate is not None:
                    m.gate.predictor.weight.normal_(0, 1.5)
                    m.gate.predictor.bias.normal_(0, 1.0)
                    if on_rest:
                        m.gate.predictor.bias.fill_(60.0)
                    for c in off.get(layer, []):
                        m.gate.predictor.bias[c] = -60.0
                    layer += 1
    return net.eval()


def _fold(net):
    return fold_model(net, (2, 8, 8), input_bits=2, input_scale=1.0)


def _events(seed: int, n: int = 6, T: int = 4):
    return np.random.RandomState(seed).randint(0, 4, size=(T, n, 2, 8, 8))


def test_static_rows_match_the_gate_on_every_kind_of_count_vector():
    """Rows called never/always kept by the sign rule are so for all-zero, one-hot, tied and random
    counts; a mixed-sign row is neither, and both decisions occur for it."""
    rng = np.random.RandomState(0)
    program = _fold(_net(False, {}))
    node = next(n for n in program.nodes if n["op"] == "channel_gate")
    c_out, c_in = program.arrays[node["A"]].shape
    A = rng.randint(-(2**17), 2**17, size=(c_out, c_in)).astype(np.int64)
    A[0] = -rng.randint(1, 2**17, size=c_in)  # never kept
    A[1] = rng.randint(0, 2**17, size=c_in)  # always kept (zeros allowed: E . A >= 0)
    A[1, 0] = 0
    A[2] = 1000
    A[2, 0] = -1000  # mixed signs
    program.arrays[node["A"]] = A
    off, on = static_gate_rows(program, node)
    assert off[0] and not on[0] and on[1] and not off[1] and not off[2] and not on[2]
    D = len(program.arrays[node["exp_hi"]]) << int(node["lo_bits"])
    counts = np.concatenate(
        [
            np.zeros((1, c_in), dtype=np.int64),
            np.eye(c_in, dtype=np.int64) * (D - 1),
            np.full((1, c_in), 7, dtype=np.int64),
            rng.randint(0, D, size=(400, c_in)),
        ]
    )
    args = (program.arrays[node["exp_hi"]], program.arrays[node["exp_lo"]], int(node["lo_bits"]))
    g = gate_int(counts, A, *args, int(node["exp_frac_bits"]))
    assert not g[:, off].any() and g[:, on].all()
    assert 0 < g[:, 2].sum() < len(counts)


def test_no_static_rows_when_the_exponent_tables_give_no_positive_term():
    program = _fold(_net(False, {0: [1]}))
    node = next(n for n in program.nodes if n["op"] == "channel_gate")
    assert static_gate_rows(program, node)[0][1]
    program.arrays[node["exp_hi"]] = np.zeros_like(program.arrays[node["exp_hi"]])
    off, on = static_gate_rows(program, node)
    assert not off.any() and not on.any()


@pytest.mark.parametrize("prior", [False, True], ids=["gate-only", "gate+prior"])
def test_compacted_program_is_bit_identical_on_every_surviving_tensor(prior):
    off = {0: [1, 4], 1: [0, 3, 5], 2: [2]}
    program = _fold(_net(prior, off))
    small, report = compact(program)
    assert report.weights_after < report.weights_before
    # the channels removed per gated LIF: exactly the rows of A with no non-negative entry
    removed = {}
    for lif in (n for n in program.nodes if n["op"] == "lif_pruned"):
        A = program.arrays[program.node(lif["inputs"][1])["A"]]
        removed[lif["name"]] = list(np.flatnonzero((A < 0).all(axis=1)))
    assert list(removed) == list(report.layers)
    for i, name in enumerate(removed):
        assert set(off[i]) <= set(removed[name])
        assert report.layers[name][1] == report.layers[name][0] - len(removed[name])
    x = _events(1)
    big_all = Interpreter(program).run_all(x, path="reference")
    small_all = Interpreter(small).run_all(x, path="reference")
    assert np.array_equal(big_all[program.output], small_all[small.output])
    # every LIF tensor: the original's removed channels never spiked; the rest are identical
    for name in (n["name"] for n in program.nodes if n["op"] in ("lif", "lif_pruned")):
        big, sm = big_all[name], small_all[name]
        gone = removed.get(name, [])
        live = [c for c in range(big.shape[2]) if c not in gone]
        assert not big[:, :, gone].any(), name
        assert np.array_equal(big[:, :, live], sm), name
        if gone:
            assert big[:, :, live].any(), "a kept channel must spike for this check to mean something"
    # the fast path, the deploy simulation and a saved file agree with the reference
    assert np.array_equal(Interpreter(small).run(x, path="fast"), small_all[small.output])
    sim = DeploySim(small).run_codes(torch.from_numpy(x))[small.output]
    assert np.array_equal(sim.numpy().astype(np.int64), small_all[small.output])


def test_gate_reading_removed_channels_keeps_its_decisions(tmp_path):
    """The next layer's gate sees the removed channels' zero counts through its extra column."""
    program = _fold(_net(False, {0: [0, 2, 3]}, seed=2))
    small, report = compact(program)
    gates = [n for n in small.nodes if n["op"] == "channel_gate"]
    channels, kept = next(iter(report.layers.values()))
    assert kept <= channels - 3
    assert small.arrays[gates[1]["A"]].shape[1] == kept + 1
    x = _events(3, n=8)
    big_all = Interpreter(program).run_all(x, path="reference")
    small_all = Interpreter(small).run_all(x, path="reference")
    g = gates[1]["name"]
    assert np.array_equal(big_all[g], small_all[g])
    assert 0 < big_all[g].mean() < 1, "the second gate must make real decisions for this test"
    save(small, tmp_path / "m.spq")
    loaded = load(tmp_path / "m.spq")
    assert np.array_equal(Interpreter(loaded).run(x, path="fast"), big_all[program.output])


def test_a_gate_left_with_only_open_channels_is_removed():
    program = _fold(_net(False, {0: [1], 1: [2], 2: [0]}, on_rest=True))
    small, report = compact(program)
    assert len(report.gates_removed) == 3
    assert not any(n["op"] in ("channel_gate", "lif_pruned") for n in small.nodes)
    x = _events(4)
    assert np.array_equal(Interpreter(small).run(x), Interpreter(program).run(x, path="reference"))


def test_nothing_static_leaves_the_program_unchanged():
    program = _fold(_net(False, {}))
    for gate in (n for n in program.nodes if n["op"] == "channel_gate"):
        A = program.arrays[gate["A"]]
        A[:, 0], A[:, 1] = -1, 1  # every row has both signs: no decision is static
    small, report = compact(program)
    assert not report.changed and "compaction" not in small.meta
    assert [n["op"] for n in small.nodes] == [n["op"] for n in program.nodes]
    for k, v in program.arrays.items():
        assert np.array_equal(small.arrays[k], v)


def test_negative_threshold_channel_is_not_removed():
    """With V < 0 a channel that never gets current still spikes (u = 0 > V): it must stay."""
    program = _fold(_net(False, {0: [1]}))
    lif = next(n for n in program.nodes if n["op"] == "lif_pruned")
    V = program.arrays[lif["V"]]
    program.arrays[lif["V"]] = (
        np.full(6, -5, dtype=V.dtype) if V.size == 1 else np.where(np.arange(V.size) == 1, -5, V)
    )
    small, report = compact(program)
    assert report.layers[lif["name"]] == (6, 6)
    x = _events(5)
    big = Interpreter(program).run_all(x, path="reference")
    assert big[lif["name"]][:, :, 1].all(), "the channel spikes at every step"
    assert np.array_equal(Interpreter(small).run(x, path="reference"), big[program.output])


def test_memory_as_deployed_shrinks_against_the_network_as_trained():
    program = _fold(_net(False, {0: [0, 1, 2], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}))
    small, _ = compact(program)
    before, after = deployed_memory(program), deployed_memory(small)
    assert after.fp32_bytes == before.fp32_bytes
    assert after.weight_bytes < before.weight_bytes and after.reduction > before.reduction
    small.meta["compaction"] = ["not", "a", "dict"]  # a hostile file: ignored, not a crash
    assert deployed_memory(small).fp32_bytes < before.fp32_bytes
