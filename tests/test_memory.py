import torch

from unlearnrec.unlearn.base import MemoryMeter


def test_peak_is_the_blocks_own_not_an_earlier_high_water_mark():
    # sizes well above glibc's largest mmap threshold (32 MB), so the block's tensor is fresh
    # memory and not a chunk recycled from the allocator's arena
    big = torch.ones(75_000_000)  # an earlier 300 MB peak
    del big
    with MemoryMeter() as m:
        x = torch.ones(25_000_000)  # 100 MB
        x += 1
    assert 60 < m.peak_mb < 250
    with MemoryMeter() as small:
        pass
    assert small.peak_mb < 20
