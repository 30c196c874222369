import torch

from unlearnrec.unlearn.base import MemoryMeter


def test_peak_is_the_blocks_own_not_an_earlier_high_water_mark():
    big = torch.ones(40_000_000)  # an earlier 160 MB peak
    del big
    with MemoryMeter() as m:
        x = torch.ones(8_000_000)  # 32 MB
        x += 1
    assert 20 < m.peak_mb < 100
    with MemoryMeter() as small:
        pass
    assert small.peak_mb < 20
