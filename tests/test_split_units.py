"""Split-DNN pieces that need no trained model: latent codec, slimmable head, width controller, recipe."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from edge.split import config
from edge.split.codec import HEADER_BYTES, LatentCodec, dequantise, pack_bits, quantise, unpack_bits
from edge.split.controller import WidthController
from edge.split.errors import FingerprintMismatch, PacketError, SplitError
from edge.split.models import SlimmableHead, Student, fake_quantise
from edge.split.train import sandwich

FP = bytes(range(8))


def codec(**kw) -> LatentCodec:
    lo = np.full((3, 8), -2.0, np.float32)
    hi = np.full((3, 8), 2.0, np.float32)
    return LatentCodec([2, 4, 8], lo, hi, (4, 4), FP, **kw)


def latent(c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (c, 4, 4)).astype(np.float32)


def reseal(packet: bytes, offset: int, value: bytes) -> bytes:
    """Change header bytes and recompute the checksum: a well-formed packet with a bad field."""
    body = bytearray(packet[:-4])
    body[offset:offset + len(value)] = value
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_bit_packing_round_trips_and_is_dense(bits: int) -> None:
    q = np.random.default_rng(bits).integers(0, 1 << bits, 77).astype(np.uint8)
    packed = pack_bits(q, bits)
    assert len(packed) == -(-77 * bits // 8)
    np.testing.assert_array_equal(unpack_bits(packed, bits, 77), q)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_packet_round_trip_error_within_half_a_step(bits: int) -> None:
    c = codec()
    z = np.clip(latent(4), -2, 2)
    packet = c.encode(z, 1, bits)
    dec = c.decode(packet)
    assert (dec.width, dec.bits, dec.latent.shape) == (1, bits, (4, 4, 4))
    step = 4.0 / ((1 << bits) - 1)
    assert np.abs(dec.latent - z).max() <= step / 2 + 1e-5
    # Exact size: header + body (packed or zstd'd, whichever is smaller) + CRC.
    assert len(packet) <= HEADER_BYTES + c.body_bytes(1, bits) + 4


def test_fewer_bits_and_narrower_widths_make_smaller_packets() -> None:
    c = codec()
    sizes = {(k, b): len(c.encode(latent(c.channels[k]), k, b)) for k in range(3) for b in (2, 4, 8)}
    assert sizes[0, 2] < sizes[0, 8] < sizes[2, 8]
    assert sizes[2, 2] < sizes[2, 4] < sizes[2, 8]


def test_per_frame_ranges_follow_the_frame_and_cost_four_bytes_per_channel() -> None:
    z = latent(4) * 10  # far outside the static range [-2, 2]
    static, per_frame = codec(), codec(per_frame_ranges=True)
    err_static = np.abs(static.decode(static.encode(z, 1, 8)).latent - z).max()
    err_frame = np.abs(per_frame.decode(per_frame.encode(z, 1, 8)).latent - z).max()
    assert err_frame < 0.2 < err_static
    assert per_frame.decode(per_frame.encode(z, 1, 8)).latent.shape == (4, 4, 4)


def test_quantise_matches_the_training_fake_quantiser() -> None:
    z = latent(4)
    lo, hi = np.full(4, -1.5, np.float32), np.full(4, 1.0, np.float32)
    ref = fake_quantise(torch.from_numpy(z)[None], torch.from_numpy(lo), torch.from_numpy(hi), 4)[0].numpy()
    np.testing.assert_allclose(dequantise(quantise(z, lo, hi, 4), lo, hi, 4), ref, atol=1e-5)


def test_bad_packets_raise_one_line_errors() -> None:
    c = codec()
    good = c.encode(latent(4), 1, 4)
    cases = {
        "too short": good[:10],
        "magic": b"XX" + good[2:],
        "CRC-32": good[:-6] + bytes([good[-6] ^ 0xFF]) + good[-5:],
        "width index 7 out of range 0..2": reseal(good, 4, bytes([7])),
        "bit depth 3 not supported": reseal(good, 5, bytes([3])),
        "latent shape (5, 4, 4) does not match width 1": reseal(good, 6, bytes([5])),
        "latent shape (4, 3, 4)": reseal(good, 7, bytes([3])),
        "payload has": reseal(good, 5, bytes([8])),  # header says 8 bits, body holds 4-bit codes
    }
    for want, packet in cases.items():
        with pytest.raises(PacketError) as exc:
            c.decode(packet)
        assert want in str(exc.value) and "\n" not in str(exc.value), want
    other = LatentCodec(c.channels, c.lo, c.hi, c.grid, b"\xff" * 8)
    with pytest.raises(FingerprintMismatch, match="different checkpoints"):
        other.decode(good)
    with pytest.raises(PacketError, match="does not match width 0"):
        c.encode(latent(4), 0, 4)


def tiny_model_config() -> config.ModelConfig:
    return config.ModelConfig(teacher_channels=(8, 8, 8), head_channels=(8, 8, 8), bottleneck=8, widths=(0.25, 0.5, 1.0))


def test_slimmable_head_switches_width_without_touching_weights() -> None:
    torch.manual_seed(0)
    head = SlimmableHead(tiny_model_config()).eval()
    x = torch.randn(2, 3, 32, 32)
    ptrs = [p.data_ptr() for p in head.parameters()]
    shapes = []
    for k in (2, 0, 1, 2):
        head.set_width(k)
        shapes.append(tuple(head(x).shape))
    assert shapes == [(2, 8, 4, 4), (2, 2, 4, 4), (2, 4, 4, 4), (2, 8, 4, 4)]
    assert [p.data_ptr() for p in head.parameters()] == ptrs
    # Narrow widths share the first channels' convolution weights, but not their batch norm.
    with torch.no_grad():
        pre = torch.nn.functional.conv2d(head.body(x), head.bottleneck.weight)
    assert torch.allclose(head.norm.bn[0](pre[:, :2]), head(x, 0))
    with pytest.raises(IndexError, match="out of range 0..2"):
        head.set_width(3)


def test_switchable_batch_norm_keeps_statistics_per_width() -> None:
    torch.manual_seed(0)
    head = SlimmableHead(tiny_model_config()).train()
    head(torch.randn(4, 3, 32, 32), 0)
    assert head.norm.bn[0].num_batches_tracked == 1
    assert head.norm.bn[1].num_batches_tracked == 0 and head.norm.bn[2].num_batches_tracked == 0


def test_sandwich_rule_trains_widest_narrowest_and_one_between() -> None:
    import random

    rng = random.Random(0)
    picks = [sandwich(3, rng) for _ in range(20)]
    assert all(p[:2] == [3, 0] and len(p) == 3 and 1 <= p[2] <= 2 for p in picks)
    assert {p[2] for p in picks} == {1, 2}
    assert sandwich(0, rng) == [0]


def test_student_forward_every_width_and_bit_depth() -> None:
    torch.manual_seed(0)
    s = Student(tiny_model_config()).eval()
    x = torch.randn(2, 3, 32, 32)
    for k in range(3):
        for b in (None, 2, 4, 8):
            out = s(x, k, b)
            assert out["shape"].shape == (2, 3) and out["colour"].shape == (2, 4) and out["position"].shape == (2, 2)


def test_controller_picks_narrower_widths_on_slower_links() -> None:
    sizes = [150, 280, 540, 1050]
    chosen = {}
    for mbit in (0.25, 1, 5, 25):
        ctl = WidthController(sizes, [2.0] * 4, budget_ms=8.0, bandwidth_bps=1e9, probe_every=0)
        rng = np.random.default_rng(0)
        for i in range(40):  # packets of varied sizes over a link with 2 ms latency
            b = sizes[i % 4] + rng.integers(0, 20)
            ctl.observe(b, 0.002 + 8 * b / (mbit * 1e6) + rng.uniform(0, 1e-4))
        assert ctl.estimate.bandwidth_bps == pytest.approx(mbit * 1e6, rel=0.15)
        assert ctl.estimate.latency_s == pytest.approx(0.002, abs=5e-4)
        chosen[mbit] = ctl.choose()
    assert chosen[0.25] == 0 and chosen[25] == 3
    assert chosen[0.25] <= chosen[1] <= chosen[5] <= chosen[25]


def test_controller_does_not_mistake_scheduling_jitter_for_a_slow_link() -> None:
    sizes = [150, 280, 540, 1050]
    chosen = {}
    for mbit in (0.25, 25):
        ctl = WidthController(sizes, [2.0] * 4, budget_ms=8.0, probe_every=0)
        rng = np.random.default_rng(1)
        for i in range(64):  # up to 2 ms of extra delay per packet, as on a busy host
            b = sizes[3] if i % 8 == 0 else sizes[i % 3]
            ctl.observe(b, 0.002 + 8 * b / (mbit * 1e6) + rng.uniform(0, 2e-3))
        chosen[mbit] = ctl.choose()
    assert chosen == {0.25: 0, 25: 3}


def test_controller_probes_the_widest_width_periodically() -> None:
    ctl = WidthController([100, 200], [1.0, 1.0], budget_ms=1.5, bandwidth_bps=1e6, probe_every=4)
    widths = [ctl.next_width() for _ in range(8)]
    assert widths == [0, 0, 0, 1, 0, 0, 0, 1]


def test_recipe_errors_name_file_key_and_expectation(tmp_path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  bits: [3]\n")
    with pytest.raises(SplitError, match=r"r.yaml: key 'train.bits': .*expected bit depths from 2, 4, 8, got \[3\]"):
        config.load(p)
    p.write_text("model:\n  bottlenek: 4\n")
    with pytest.raises(SplitError, match=r"key 'model.bottlenek': unknown key"):
        config.load(p)
    assert config.load("tiny").model.width_channels() == [2, 4, 8]
