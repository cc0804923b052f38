//! The frames of the `stackproof/verify-bt/1` JSON schema (docs/json.md), written
//! here because a deep stack has thousands of them; the document around them is
//! the gdb layer's. Text matches Python's `json.dumps(..., separators=(",", ":"))`:
//! everything outside printable ASCII is `\u` escaped.

use std::fmt::Write;

use crate::symbols::Symbol;
use crate::verify::{self, FrameIn, FrameReport, Unplaced};

/// A JSON string literal of `s`.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// One JSON object, its members in the order written.
struct Object {
    out: String,
    empty: bool,
}

impl Object {
    fn new() -> Self {
        let mut out = String::with_capacity(256);
        out.push('{');
        Object { out, empty: true }
    }

    fn key(&mut self, k: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        string(&mut self.out, k);
        self.out.push(':');
    }

    fn int(mut self, k: &str, v: u32) -> Self {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }

    /// `"0x1f"`, or null.
    fn hex(mut self, k: &str, v: Option<u64>) -> Self {
        self.key(k);
        match v {
            Some(v) => {
                let _ = write!(self.out, "\"{v:#x}\"");
            }
            None => self.out.push_str("null"),
        }
        self
    }

    /// `["0x1f","0x2a"]`.
    fn hexes(mut self, k: &str, v: &[u64]) -> Self {
        self.key(k);
        self.out.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "\"{x:#x}\"");
        }
        self.out.push(']');
        self
    }

    fn str(mut self, k: &str, v: Option<&str>) -> Self {
        self.key(k);
        match v {
            Some(s) => string(&mut self.out, s),
            None => self.out.push_str("null"),
        }
        self
    }

    fn strs<'a>(mut self, k: &str, v: impl IntoIterator<Item = &'a str>) -> Self {
        self.key(k);
        self.out.push('[');
        for (i, s) in v.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            string(&mut self.out, s);
        }
        self.out.push(']');
        self
    }

    fn raw(mut self, k: &str, json: &str) -> Self {
        self.key(k);
        self.out.push_str(json);
        self
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// A verified frame (`threads[].frames[]`).
pub fn frame_report(r: &FrameReport) -> String {
    let call = match &r.call {
        None => "null".to_string(),
        Some(c) => Object::new()
            .hex("address", Some(c.site.addr))
            .str("text", Some(&c.site.text))
            .str("kind", Some(verify::call_kind(&c.site.target)))
            .hex("target", c.target)
            .str("target_function", c.target_function.as_deref())
            .strs("via", c.via.iter().map(String::as_str))
            .strs("resolution", c.resolution.iter().map(String::as_str))
            .finish(),
    };
    Object::new()
        .int("level", r.level)
        .hex("pc", Some(r.pc))
        .hex("sp", r.sp)
        .hex("slot", r.slot)
        .hex("slot_value", r.slot_value)
        .str("function", r.function.as_ref().map(|s| &*s.name))
        .str("module", r.function.as_ref().and_then(|s| s.module.as_deref()))
        .str("kind", Some(r.kind.as_str()))
        .str("verdict", Some(r.verdict.as_str()))
        .strs("reasons", r.reasons.iter().map(|x| x.code()))
        .str("trust", Some(r.trust.as_str()))
        .hex("expected_slot", r.expected_slot)
        .raw("call", &call)
        .finish()
}

/// A frame crash printed without an address.
pub fn unplaced_frame(u: &Unplaced) -> String {
    Object::new()
        .int("level", u.level)
        .hex("pc", None)
        .hex("sp", None)
        .hex("slot", None)
        .hex("slot_value", None)
        .str("function", Some(&u.function))
        .str("module", None)
        .str("kind", Some(Unplaced::KIND.as_str()))
        .str("verdict", Some(Unplaced::VERDICT.as_str()))
        .strs("reasons", [Unplaced::REASON])
        .str("trust", Some(Unplaced::TRUST.as_str()))
        .hex("expected_slot", None)
        .raw("call", "null")
        .finish()
}

/// A frame of stackproof's own chain (`threads[].chain[]`, `threads[].lost[]`).
pub fn chain_frame(f: &FrameIn, function: Option<&Symbol>, candidates: &[u64]) -> String {
    let o = Object::new()
        .int("level", f.level)
        .hex("pc", Some(f.pc))
        .hex("sp", f.sp)
        .hex("slot", f.slot)
        .str("function", function.map(|s| &*s.name))
        .str("module", function.and_then(|s| s.module.as_deref()))
        .str("kind", Some(f.kind.as_str()))
        .str("trust", Some(f.trust.as_str()));
    // Only where the pc is one of several (pc is then the first of them).
    if candidates.len() < 2 {
        return o.finish();
    }
    o.hexes("candidates", candidates).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_python_json() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\nd\te\u{1}\u{7f}é😀");
        assert_eq!(s, r#""a\"b\\c\nd\te\u0001\u007f\u00e9\ud83d\ude00""#);
    }

    #[test]
    fn unplaced_frame_has_every_member() {
        assert_eq!(
            unplaced_frame(&Unplaced { level: 3, function: "kvm_arch_vcpu_ioctl_run".into() }),
            "{\"level\":3,\"pc\":null,\"sp\":null,\"slot\":null,\"slot_value\":null,\
             \"function\":\"kvm_arch_vcpu_ioctl_run\",\"module\":null,\"kind\":\"normal\",\
             \"verdict\":\"unknown\",\"reasons\":[\"no-address\"],\"trust\":\"scan\",\
             \"expected_slot\":null,\"call\":null}"
        );
    }
}
