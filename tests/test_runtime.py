import platform
import sys

import pytest

from xmodlm.runtime import tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the allocator knobs are glibc's")
def test_tune_allocator_sets_glibc_thresholds():
    assert tune_allocator() is True


@pytest.mark.parametrize("kw", [dict(mmap_threshold=0), dict(trim_threshold=2**40)])
def test_tune_allocator_rejects_out_of_range_sizes(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        tune_allocator(**kw)
