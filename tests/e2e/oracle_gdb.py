# gdb Python script: the independent oracle.  Uses only gdb's own unwinders
# (DWARF CFI, sigtramp, inline and tail-call frames) on an intact core; it
# never loads stackproof.  Writes one JSON document to $STACKPROOF_ORACLE_OUT.
#
# Per thread, per frame: level, pc, sp ($sp in that frame), cfa ("frame at"
# of `info frame`), type (NORMAL/INLINE/TAILCALL/SIGTRAMP/...), function
# name, has_slot / slot (where the return address that is this frame's pc
# lies: sp - 8 unless the frame's pc is not a return address), the direct
# call before pc (if any), the callee-saved registers as gdb unwinds them and
# where `info frame` says they were saved.
import json
import os
import re

import gdb

MAX_FRAMES = int(os.environ.get("STACKPROOF_ORACLE_MAX", "400"))
CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")

TYPE_NAMES = {}
for _n in ("NORMAL_FRAME", "DUMMY_FRAME", "INLINE_FRAME", "TAILCALL_FRAME",
           "SIGTRAMP_FRAME", "ARCH_FRAME", "SENTINEL_FRAME"):
    if hasattr(gdb, _n):
        TYPE_NAMES[getattr(gdb, _n)] = _n.replace("_FRAME", "").lower()

inferior = gdb.selected_inferior()


def read(addr, n):
    if addr < 0:
        return None  # below a pc 0 (the zero word at a new thread's stack top)
    try:
        return bytes(inferior.read_memory(addr, n))
    except (gdb.error, gdb.MemoryError):
        return None


def direct_call_before(pc):
    """Target of a `call rel32` (e8) ending exactly at pc, or None."""
    b = read(pc - 5, 5)
    if b is None or b[0] != 0xE8:
        return None
    rel = int.from_bytes(b[1:], "little", signed=True)
    return (pc + rel) & 0xFFFFFFFFFFFFFFFF


def looks_like_call_end(addr):
    """Conservative: could any call instruction (e8 rel32, ff /2 with any
    modrm/sib/disp and an optional REX or segment prefix) end at addr?"""
    b = read(addr - 9, 9)
    if b is None:
        return True
    if b[-5] == 0xE8:
        return True
    for length in range(2, 10):
        i = 9 - length
        for j in (i, i + 1, i + 2):  # opcode after up to 2 prefix bytes
            if j + 1 < 9 and b[j] == 0xFF and ((b[j + 1] >> 3) & 7) in (2, 3):
                return True
    return False


def func_name(frame):
    fn = frame.function()
    if fn is not None:
        return fn.name
    return frame.name()


def func_range(pc):
    try:
        block = gdb.block_for_pc(pc)
    except RuntimeError:
        return None
    # climb to the outermost function block (not an inlined one)
    fblock = None
    while block is not None and not block.is_static and not block.is_global:
        if block.function is not None:
            fblock = block
        block = block.superblock
    if fblock is None:
        return None
    return fblock.function.name, fblock.start, fblock.end


def not_after_call_address(pc):
    """An instruction boundary inside pc's function whose preceding
    instruction (per gdb's disassembler) is not a call, and which no call
    could end at.  None when there is none."""
    rng = func_range(pc)
    if rng is None:
        return None
    name, start, end = rng
    arch = gdb.selected_frame().architecture()
    insns = arch.disassemble(start, end - 1)
    for prev, cur in zip(insns, insns[1:]):
        if prev["asm"].split()[0].startswith("call"):
            continue
        if looks_like_call_end(cur["addr"]):
            continue
        return {"function": name, "address": cur["addr"],
                "previous": prev["asm"], "function_start": start}
    return None


def saved_registers_from_info_frame(text):
    m = re.search(r"Saved registers:\s*(.*)", text, re.S)
    out = {}
    if m:
        for reg, addr in re.findall(r"(\w+) at (0x[0-9a-f]+)", m.group(1)):
            out[reg] = addr
    return out


def frame_record(frame, level):
    rec = {"level": level}
    rec["pc"] = frame.pc()
    rec["type"] = TYPE_NAMES.get(frame.type(), str(frame.type()))
    rec["function"] = func_name(frame)
    try:
        rec["sp"] = int(frame.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
    except gdb.error:
        rec["sp"] = None
    frame.select()
    info = gdb.execute("info frame", to_string=True)
    m = re.search(r"frame at (0x[0-9a-f]+)", info)
    rec["cfa"] = int(m.group(1), 16) if m else None
    saved_at = saved_registers_from_info_frame(info)
    rec["saved_at"] = {k: int(v, 16) for k, v in saved_at.items()}
    regs = {}
    for r in CALLEE_SAVED:
        try:
            v = frame.read_register(r)
        except gdb.error:
            continue
        if v.is_optimized_out:
            continue
        try:
            regs[r] = int(v) & 0xFFFFFFFFFFFFFFFF
        except gdb.error:
            continue
    rec["regs"] = regs
    # Callee-saved registers whose saved copy gdb located on the stack
    # (only these are "known" from the stack rather than "same value").
    rec["saved_regs"] = {r: regs[r] for r in CALLEE_SAVED
                         if r in regs and r in saved_at}
    return rec


def walk_thread():
    frames = []
    frame = gdb.newest_frame()
    stop_reason = None
    while frame is not None and len(frames) < MAX_FRAMES:
        frames.append(frame_record(frame, len(frames)))
        try:
            older = frame.older()
        except gdb.error as e:
            stop_reason = str(e)
            break
        if older is None:
            stop_reason = gdb.frame_stop_reason_string(frame.unwind_stop_reason())
        frame = older
    # Which frames' pc is a return address stored at sp - 8?  An inline frame and
    # the frame holding it are one physical frame: only the holder (the outermost
    # of the group) has the slot, and only when the group's innermost frame's pc
    # is a return address.
    for i, rec in enumerate(frames):
        head = i
        while head > 0 and frames[head - 1]["type"] == "inline":
            head -= 1
        has_slot = head > 0 and rec["sp"] is not None
        if rec["type"] in ("tailcall", "inline"):
            has_slot = False          # reached by a jmp / part of the holder's frame
        if has_slot:
            # tail-call frames share the sp of the frame outer to them; the
            # ra that frame's pc is was pushed by the frame inner of the chain
            j = head - 1
            while j > 0 and frames[j]["type"] == "tailcall":
                j -= 1
            if frames[j]["type"] == "sigtramp":
                has_slot = False      # pc restored from the signal frame
        rec["has_slot"] = bool(has_slot)
        rec["slot"] = rec["sp"] - 8 if has_slot else None
        if has_slot:
            b = read(rec["slot"], 8)
            rec["slot_value"] = int.from_bytes(b, "little") if b else None
        else:
            rec["slot_value"] = None
        target = direct_call_before(rec["pc"]) if i > 0 else None
        rec["direct_call_target"] = target
        rec["direct_call_target_function"] = None
        if target is not None:
            rng = func_range(target)
            rec["direct_call_target_function"] = rng[0] if rng else None
    return frames, stop_reason


def main():
    out = {"threads": [], "not_after_call": {}, "text": []}
    try:
        sel = gdb.selected_thread()
    except gdb.error:
        sel = None
    for th in sorted(inferior.threads(), key=lambda t: t.num):
        th.switch()
        frames, why = walk_thread()
        out["threads"].append({"thread": th.num, "global": th.global_num,
                               "lwp": th.ptid[1], "frames": frames,
                               "stop_reason": why})
    if sel is not None:
        sel.switch()
        out["selected_thread"] = sel.num
        names = set()
        for th in out["threads"]:
            for fr in th["frames"]:
                if fr["function"] and fr["function"] not in names:
                    names.add(fr["function"])
                    cand = not_after_call_address(fr["pc"])
                    if cand:
                        out["not_after_call"][fr["function"]] = cand
    info_files = gdb.execute("info files", to_string=True)
    for lo, hi, path in re.findall(
            r"(0x[0-9a-f]+) - (0x[0-9a-f]+) is \.text(?: in (\S+))?", info_files):
        out["text"].append({"start": int(lo, 16), "end": int(hi, 16), "path": path})
    with open(os.environ["STACKPROOF_ORACLE_OUT"], "w") as f:
        json.dump(out, f, indent=1)


main()
