"""Slow, obvious pure-Python HDR histogram: the reference `_fastpath.histogram` is tested against.

Same layout and encoding as the Cython module, written from the definitions rather than with
its bit tricks: a value's bucket is found by trying buckets in order, slot bounds by
arithmetic on the bucket's width, and the varints byte by byte. Used only by tests.
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_left
from itertools import accumulate, groupby

_PAYLOAD_HEADER = struct.Struct(">IIIIQQd")
ENCODING_COOKIE = 0x1C849313
COMPRESSED_COOKIE = 0x1C849314


class RefHistogram:
    def __init__(self, lowest: int = 1, highest: int = 3_600_000_000, significant_figures: int = 3):
        assert lowest >= 1 and highest >= 2 * lowest and 1 <= significant_figures <= 5
        self.lowest = lowest
        self.highest = highest
        self.significant_figures = significant_figures
        # Smallest power of two with 2 * 10**s distinct unit slots.
        self.sub_bucket_count = 1
        while self.sub_bucket_count < 2 * 10**significant_figures:
            self.sub_bucket_count *= 2
        self.half = self.sub_bucket_count // 2
        self.unit = 1  # largest power of two <= lowest
        while self.unit * 2 <= lowest:
            self.unit *= 2
        # Bucket b spans [0, sub_bucket_count * unit * 2**b); enough buckets to hold highest.
        self.bucket_count = 1
        while self.sub_bucket_count * self.unit * 2 ** (self.bucket_count - 1) <= highest:
            self.bucket_count += 1
        self.counts = [0] * ((self.bucket_count + 1) * self.half)
        self.total_count = 0
        self.raw_min: int | None = None
        self.raw_max: int | None = None

    # -- layout --

    def index_of(self, value: int) -> int:
        for b in range(self.bucket_count):
            width = self.unit * 2**b
            if value < self.sub_bucket_count * width:
                sub = value // width  # in [half, sub_bucket_count) except in bucket 0
                return b * self.half + sub if b > 0 else sub
        raise ValueError(f"{value} beyond the last bucket")

    def slot(self, index: int) -> tuple[int, int]:
        """(lowest value, width) of slot ``index``."""
        if index < self.sub_bucket_count:
            return index * self.unit, self.unit
        b = index // self.half - 1
        width = self.unit * 2**b
        return (index - b * self.half) * width, width

    # -- recording and queries --

    def record(self, value: int, count: int = 1) -> None:
        value = min(max(value, 0), self.highest)
        self.counts[self.index_of(value)] += count
        self.total_count += count
        self.raw_min = value if self.raw_min is None else min(self.raw_min, value)
        self.raw_max = value if self.raw_max is None else max(self.raw_max, value)

    @property
    def min(self) -> int:
        return 0 if self.raw_min is None else self.slot(self.index_of(self.raw_min))[0]

    @property
    def max(self) -> int:
        if not self.raw_max:  # also 0 for a recorded 0, as every HdrHistogram library does
            return 0
        low, width = self.slot(self.index_of(self.raw_max))
        return low + width - 1

    def value_at_percentile(self, percentile: float) -> int:
        return self.percentiles([percentile])[0]

    def percentiles(self, percentiles: list[float]) -> list[int]:
        if not self.total_count:
            return [0] * len(percentiles)
        running = list(accumulate(self.counts))
        result = []
        for p in percentiles:
            target = max(1, int(min(p, 100.0) * self.total_count / 100 + 0.5))
            low, width = self.slot(bisect_left(running, target))  # first slot reaching target
            result.append(low + width - 1 if p else low)
        return result

    def _midpoints(self) -> list[tuple[int, int]]:
        nonzero = [(i, c) for i, c in enumerate(self.counts) if c]
        return [(self.slot(i)[0] + self.slot(i)[1] // 2, c) for i, c in nonzero]

    @property
    def mean(self) -> float:
        if not self.total_count:
            return 0.0
        return sum(m * c for m, c in self._midpoints()) / self.total_count

    @property
    def stddev(self) -> float:
        if not self.total_count:
            return 0.0
        mean = self.mean
        return (sum((m - mean) ** 2 * c for m, c in self._midpoints()) / self.total_count) ** 0.5

    # -- V2 compressed encoding --

    def encode(self) -> bytes:
        limit = 0 if self.raw_max is None else self.index_of(self.raw_max) + 1
        body = bytearray()
        for count, same in groupby(self.counts[:limit]):
            run = len(list(same))
            # Each zero run (even of one) as -run; other counts one by one.
            body += _varint(-run) if count == 0 else _varint(count) * run
        header = _PAYLOAD_HEADER.pack(
            ENCODING_COOKIE,
            len(body),
            0,
            self.significant_figures,
            self.lowest,
            self.highest,
            1.0,
        )
        compressed = zlib.compress(header + bytes(body))
        return struct.pack(">II", COMPRESSED_COOKIE, len(compressed)) + compressed

    @classmethod
    def decode(cls, data: bytes) -> RefHistogram:
        cookie, length = struct.unpack_from(">II", data)
        assert cookie & ~0xF0 == COMPRESSED_COOKIE & ~0xF0 and length == len(data) - 8
        payload = zlib.decompress(data[8:])
        cookie, payload_len, _, sig, lowest, highest, _ = _PAYLOAD_HEADER.unpack_from(payload)
        assert cookie & ~0xF0 == ENCODING_COOKIE & ~0xF0
        h = cls(lowest, highest, sig)
        body = payload[_PAYLOAD_HEADER.size :]
        assert len(body) == payload_len
        pos = index = 0
        while pos < len(body):
            value, pos = _read_varint(body, pos)
            if value < 0:
                index += -value
            else:
                if value:
                    low, width = h.slot(index)
                    h.counts[index] = value
                    h.total_count += value
                    h.raw_min = low if h.raw_min is None else h.raw_min
                    h.raw_max = low + width - 1  # slot bounds: all that the encoding keeps
                index += 1
        return h


def _varint(value: int) -> bytes:
    """ZigZag, then LEB128 with at most 9 bytes (the ninth holds 8 bits)."""
    v = (value << 1) ^ (value >> 63) if value < 0 else value << 1
    v &= (1 << 64) - 1
    out = bytearray()
    for _ in range(8):
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    v = 0
    for i in range(9):
        byte = data[pos]
        pos += 1
        if i == 8:
            v |= byte << 56
            break
        v |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    return (v >> 1) ^ -(v & 1), pos
