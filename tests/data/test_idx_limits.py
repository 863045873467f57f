"""IDX files cost no more than what they honestly hold: gzip bombs."""


import gzip
import struct
import tracemalloc

import pytest

from fashion_ensemble.data.idx import read_idx
from fashion_ensemble.errors import UserError

# -- 6. IDX gzip bombs -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_idx_gzip_bomb_costs_no_memory(tmp_path):
    header = struct.pack(">IIII", 0x803, 10, 28, 28)
    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:  # declares 10 images, expands to 200 MB
        f.write(header)
        zeros = bytes(2**20)
        for _ in range(200):
            f.write(zeros)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    with pytest.raises(UserError, match="truncated or padded"):
        read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # was: the whole 200 MB (and 4.5 GB RSS for a 2 GB one)

    huge = tmp_path / "huge-idx3-ubyte.gz"
    huge.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 2**31, 1000, 1000)))
    with pytest.raises(UserError, match="more than the"):
        read_idx(huge)
    overflow = tmp_path / "overflow-idx3-ubyte.gz"
    overflow.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(UserError, match="more than the"):  # was: passed the length check, then a reshape traceback
        read_idx(overflow)
