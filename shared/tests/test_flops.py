"""FLOPs per token, MFU, and the cached CPU peak."""

import json

import pytest

from shared.flops import cached_cpu_peak, gpt_flops_per_token, mfu, peak_flops
from shared.paths import runs_root


def test_flops_per_token_and_mfu():
    # nanoGPT's GPT-2 small figures: N = 85M non-embedding, L=12, H=12, Q=64, T=1024
    assert gpt_flops_per_token(85_000_000, 12, 12, 64, 1024) == 6 * 85e6 + 12 * 12 * 12 * 64 * 1024
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    assert mfu(1000.0, 1e9, None) is None
    assert peak_flops("cpu", "bf16")[0] is None


def test_the_cpu_peak_is_measured_once_and_then_read_from_the_cache(monkeypatch):
    import shared.flops as flops

    calls = []
    monkeypatch.setattr(flops, "measured_matmul_flops", lambda device: calls.append(device) or 123e9)
    assert cached_cpu_peak() == 123e9
    assert cached_cpu_peak() == 123e9
    assert calls == ["cpu"]
    cache = runs_root() / ".cache" / "cpu_matmul_peak.json"
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["flops"] == 123e9
    assert cached_cpu_peak(max_age_s=0) == 123e9  # expired: measured again
    assert calls == ["cpu", "cpu"]
