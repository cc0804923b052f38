#!/usr/bin/env python3
"""Damage an ELF64 x86-64 core file, in pure Python.

    core = Core.load(path)
    core.write_u64(addr, value)     # patch a word at a virtual address
    core.remove_page(addr)          # make the page holding addr absent
    core.save(out_path)

Virtual addresses are mapped to file offsets through the PT_LOAD headers
(p_vaddr, p_offset, p_filesz).  remove_page() splits (or shrinks) the PT_LOAD
that holds the page, so gdb reports "Cannot access memory" there; the new
program-header table is appended at the end of the file (e_phoff moved) and
the optional section headers are dropped so nothing else describes the page.

CLI: corepatch.py IN OUT [--set ADDR=VALUE]... [--remove-page ADDR]...
"""
import argparse
import struct
import sys

PT_LOAD = 1
PAGE = 0x1000
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")


class CoreError(Exception):
    pass


class Segment:
    __slots__ = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr",
                 "p_filesz", "p_memsz", "p_align")

    def __init__(self, *fields):
        for name, value in zip(self.__slots__, fields):
            setattr(self, name, value)

    def pack(self):
        return PHDR.pack(*(getattr(self, n) for n in self.__slots__))

    def copy(self, **changes):
        seg = Segment(*(getattr(self, n) for n in self.__slots__))
        for k, v in changes.items():
            setattr(seg, k, v)
        return seg

    def __repr__(self):
        return "<PT %d vaddr %#x off %#x filesz %#x memsz %#x>" % (
            self.p_type, self.p_vaddr, self.p_offset, self.p_filesz, self.p_memsz)


class Core:
    def __init__(self, data):
        self.data = bytearray(data)
        if self.data[:4] != b"\x7fELF" or self.data[4] != 2 or self.data[5] != 1:
            raise CoreError("not a little-endian ELF64 file")
        h = list(EHDR.unpack_from(self.data, 0))
        self.ehdr = h
        (_ident, e_type, _machine, _version, _entry, e_phoff, _shoff, _flags,
         _ehsize, e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = h
        if e_type != 4:
            raise CoreError("not a core file (e_type %d)" % e_type)
        if e_phentsize != PHDR.size:
            raise CoreError("unexpected e_phentsize %d" % e_phentsize)
        self.segments = [Segment(*PHDR.unpack_from(self.data, e_phoff + i * PHDR.size))
                         for i in range(e_phnum)]

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            return cls(f.read())

    # -- address mapping -------------------------------------------------
    def loads(self):
        return [s for s in self.segments if s.p_type == PT_LOAD]

    def segment_for(self, addr):
        for s in self.loads():
            if s.p_vaddr <= addr < s.p_vaddr + s.p_memsz:
                return s
        return None

    def offset_of(self, addr, size=1):
        s = self.segment_for(addr)
        if s is None:
            raise CoreError("address %#x is in no PT_LOAD" % addr)
        if addr + size > s.p_vaddr + s.p_filesz:
            raise CoreError("address %#x is not backed by file data" % addr)
        return s.p_offset + (addr - s.p_vaddr)

    def read(self, addr, size):
        off = self.offset_of(addr, size)
        return bytes(self.data[off:off + size])

    def write(self, addr, raw):
        off = self.offset_of(addr, len(raw))
        self.data[off:off + len(raw)] = raw

    def read_u64(self, addr):
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def write_u64(self, addr, value):
        self.write(addr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    # -- removing a page -------------------------------------------------
    def remove_page(self, addr):
        """Make the 4 KiB page holding addr absent from the core."""
        page = addr & ~(PAGE - 1)
        seg = self.segment_for(page)
        if seg is None:
            raise CoreError("page %#x is in no PT_LOAD" % page)
        new = []
        lo_len = page - seg.p_vaddr
        if lo_len > 0:
            new.append(seg.copy(p_memsz=lo_len, p_filesz=min(seg.p_filesz, lo_len)))
        hi_start = page + PAGE
        seg_end = seg.p_vaddr + seg.p_memsz
        if hi_start < seg_end:
            delta = hi_start - seg.p_vaddr
            new.append(seg.copy(p_vaddr=hi_start,
                                p_paddr=seg.p_paddr + delta if seg.p_paddr else 0,
                                p_offset=seg.p_offset + delta,
                                p_memsz=seg_end - hi_start,
                                p_filesz=max(0, seg.p_filesz - delta)))
        i = self.segments.index(seg)
        self.segments[i:i + 1] = new
        # also poison the bytes, in case anything still reads them
        if seg.p_filesz > lo_len:
            off = seg.p_offset + lo_len
            n = min(PAGE, seg.p_filesz - lo_len)
            self.data[off:off + n] = b"\xa5" * n
        return page

    # -- writing ---------------------------------------------------------
    def save(self, path):
        data = bytearray(self.data)
        h = list(self.ehdr)
        # new program-header table at the (8-aligned) end of the file
        while len(data) % 8:
            data.append(0)
        h[5] = len(data)                 # e_phoff
        h[10] = len(self.segments)       # e_phnum
        h[6] = 0                         # e_shoff: drop section headers
        h[12] = 0                        # e_shnum
        h[13] = 0                        # e_shstrndx
        for s in self.segments:
            data += s.pack()
        EHDR.pack_into(data, 0, *h)
        with open(path, "wb") as f:
            f.write(data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--set", action="append", default=[], metavar="ADDR=VALUE",
                    help="write a 64-bit little-endian word at ADDR")
    ap.add_argument("--remove-page", action="append", default=[], metavar="ADDR")
    args = ap.parse_args(argv)
    core = Core.load(args.input)
    for item in args.set:
        a, v = item.split("=", 1)
        core.write_u64(int(a, 0), int(v, 0))
    for a in args.remove_page:
        core.remove_page(int(a, 0))
    core.save(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
