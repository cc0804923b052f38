//! Target memory as the core sees it: a fallible byte source, read in blocks.
//!
//! A failed read is an error naming the address; it is never zeros.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::rc::Rc;

use crate::memo::Memo;

pub const PAGE: u64 = 4096;

/// Front-ends read stacks 64 KiB at a time: one read per stack in most cases.
pub const STACK_BLOCK: u64 = 64 * 1024;

/// A read that could not be satisfied; `addr` is the first address that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadError {
    pub addr: u64,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot read memory at {:#x}", self.addr)
    }
}

impl std::error::Error for ReadError {}

/// A source of target memory (gdb, a core file, a test buffer).
pub trait Memory {
    /// Fill `buf` from `addr`; all or nothing.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError>;

    fn read_u64(&self, addr: u64) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The readable stretches of `[lo, hi)`, sorted, when the source knows them
    /// without probing (a file's segments, test regions); None: ask by reading.
    fn readable_ranges(&self, _lo: u64, _hi: u64) -> Option<Vec<(u64, u64)>> {
        None
    }

    /// The answers of the check reading this view ([`scoped`]); a view wrapping
    /// another forwards its inner view's.
    fn memo(&self) -> Option<&Memo> {
        None
    }
}

impl<M: Memory + ?Sized> Memory for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        (**self).read(addr, buf)
    }
    fn readable_ranges(&self, lo: u64, hi: u64) -> Option<Vec<(u64, u64)>> {
        (**self).readable_ranges(lo, hi)
    }
    fn memo(&self) -> Option<&Memo> {
        (**self).memo()
    }
}

/// `mem` with a memo: the one a check's work is passed down with.
pub struct Remembering<'a, M: ?Sized> {
    mem: &'a M,
    /// None: `mem` has one already (a check inside a check shares it).
    own: Option<Memo>,
}

impl<M: Memory + ?Sized> Memory for Remembering<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.mem.read(addr, buf)
    }
    fn readable_ranges(&self, lo: u64, hi: u64) -> Option<Vec<(u64, u64)>> {
        self.mem.readable_ranges(lo, hi)
    }
    fn memo(&self) -> Option<&Memo> {
        self.own.as_ref().or_else(|| self.mem.memo())
    }
}

/// Run `f` on `mem` with answers remembered; they are forgotten when it returns.
pub fn scoped<M: Memory + ?Sized, T>(mem: &M, f: impl FnOnce(&Remembering<'_, M>) -> T) -> T {
    let own = if mem.memo().is_some() { None } else { Some(Memo::default()) };
    f(&Remembering { mem, own })
}

/// The answer for `key` in the table of `Tag` of `mem`'s memo (computed every time
/// when it has none).
pub fn remembered<Tag: 'static, K: Eq + Hash + 'static, V: Clone + 'static>(
    mem: &(impl Memory + ?Sized),
    key: K,
    compute: impl FnOnce() -> V,
) -> V {
    match mem.memo() {
        Some(m) => m.remembered::<Tag, K, V>(key, compute),
        None => compute(),
    }
}

/// `[lo, hi)` cut to the union of `ranges` (any order, may overlap): sorted, merged.
pub fn clip_ranges(ranges: impl IntoIterator<Item = (u64, u64)>, lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> =
        ranges.into_iter().map(|(s, e)| (s.max(lo), e.min(hi))).filter(|(s, e)| s < e).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some((_, le)) if s <= *le => *le = (*le).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Explicit regions of memory; everything else is unreadable. For tests and replayed fixtures.
#[derive(Default, Clone)]
pub struct Regions {
    regions: Vec<(u64, Vec<u8>)>,
}

impl Regions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or overlay) bytes at `addr`.
    pub fn add(&mut self, addr: u64, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.regions.push((addr, bytes.into()));
        self
    }

    pub fn add_u64s(&mut self, addr: u64, words: &[u64]) -> &mut Self {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.add(addr, bytes)
    }

    fn byte(&self, addr: u64) -> Option<u8> {
        // Later regions overlay earlier ones.
        self.regions.iter().rev().find_map(|(start, bytes)| {
            let off = addr.checked_sub(*start)?;
            bytes.get(usize::try_from(off).ok()?).copied()
        })
    }
}

impl Memory for Regions {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr.checked_add(i as u64).ok_or(ReadError { addr })?;
            *b = self.byte(a).ok_or(ReadError { addr: a })?;
        }
        Ok(())
    }

    fn readable_ranges(&self, lo: u64, hi: u64) -> Option<Vec<(u64, u64)>> {
        Some(clip_ranges(self.regions.iter().map(|(s, b)| (*s, s.saturating_add(b.len() as u64))), lo, hi))
    }
}

/// Caches pages of an inner source, fetched a block at a time.
///
/// A block that fails as a whole is retried page by page, so one missing page
/// does not hide its readable neighbours; a missing page is remembered as missing.
pub struct BlockCache<M> {
    inner: M,
    block: u64,
    pages: RefCell<HashMap<u64, Option<Rc<[u8]>>>>,
    /// In pages that are not wholly readable: the readable bytes from a probed address
    /// to the first unreadable one (a page may hold pieces that start mid-page).
    pieces: RefCell<std::collections::BTreeMap<u64, Rc<[u8]>>>,
    requests: Cell<u64>,
}

impl<M: Memory> BlockCache<M> {
    /// `block` is rounded up to a power of two of at least one page.
    pub fn new(inner: M, block: u64) -> Self {
        let block = block.max(PAGE).checked_next_power_of_two().unwrap_or(PAGE);
        BlockCache { inner, block, pages: Default::default(), pieces: Default::default(), requests: Cell::new(0) }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// How many reads were issued to the inner source.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// Forget everything read (the target ran, memory was written).
    pub fn clear(&self) {
        self.pages.borrow_mut().clear();
        self.pieces.borrow_mut().clear();
    }

    fn fetch(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.requests.set(self.requests.get() + 1);
        let mut buf = vec![0u8; len];
        self.inner.read(addr, &mut buf).ok().map(|_| buf)
    }

    /// Fetch the block holding `page` (and the pages of it not cached yet).
    fn fill(&self, page: u64) {
        let start = page & !(self.block - 1);
        let n = (self.block / PAGE) as usize;
        let fresh: Vec<u64> = (0..n as u64)
            .filter_map(|i| start.checked_add(i * PAGE))
            .filter(|p| !self.pages.borrow().contains_key(p))
            .collect();
        let whole = if fresh.len() == n { self.fetch(start, self.block as usize) } else { None };
        let mut pages = self.pages.borrow_mut();
        match whole {
            Some(buf) => {
                for (i, chunk) in buf.chunks(PAGE as usize).enumerate() {
                    pages.insert(start + i as u64 * PAGE, Some(Rc::from(chunk)));
                }
            }
            None => {
                drop(pages);
                // Only the page asked for is fetched alone; its neighbours wait until needed.
                let got = self.fetch(page, PAGE as usize).map(Rc::from);
                self.pages.borrow_mut().insert(page, got);
            }
        }
    }

    fn page(&self, page: u64) -> Option<Rc<[u8]>> {
        if let Some(p) = self.pages.borrow().get(&page) {
            return p.clone();
        }
        self.fill(page);
        self.pages.borrow().get(&page).cloned().flatten()
    }

    /// How many bytes from `addr` (within one page) the inner source can read:
    /// bisection, since a readable stretch is a prefix.
    fn readable_len(&self, addr: u64, max: usize) -> usize {
        let ok = |n: usize| {
            self.requests.set(self.requests.get() + 1);
            self.inner.read(addr, &mut vec![0u8; n]).is_ok()
        };
        if max == 0 || ok(max) {
            return max;
        }
        // Most unreadable addresses are in wholly missing pages: one more probe, not a bisection.
        if !ok(1) {
            return 0;
        }
        let (mut lo, mut hi) = (1usize, max); // lo readable, hi not
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ok(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The readable bytes from `addr` (in a page not wholly readable), at most `max`:
    /// a known piece covering `addr`, else probed once and remembered.
    fn piece(&self, addr: u64, max: usize) -> Rc<[u8]> {
        if let Some((&start, bytes)) = self.pieces.borrow().range(..=addr).next_back() {
            let skip = (addr - start) as usize;
            if skip < bytes.len() || (skip == bytes.len() && start == addr) {
                return Rc::from(&bytes[skip.min(bytes.len())..]);
            }
        }
        let n = self.readable_len(addr, max);
        let mut got = vec![0u8; n];
        if n > 0 {
            self.requests.set(self.requests.get() + 1);
            if self.inner.read(addr, &mut got).is_err() {
                got.clear();
            }
        }
        let got: Rc<[u8]> = Rc::from(got);
        self.pieces.borrow_mut().insert(addr, got.clone());
        got
    }

    /// The bytes from `addr` up to the first unreadable one, at most `max`.
    pub fn readable_prefix(&self, addr: u64, max: usize) -> Vec<u8> {
        let mut out = vec![0u8; max];
        match self.read(addr, &mut out) {
            Ok(()) => out,
            Err(e) => {
                let n = usize::try_from(e.addr.saturating_sub(addr)).unwrap_or(0).min(max);
                out.truncate(n);
                if self.read(addr, &mut out).is_err() {
                    out.clear();
                }
                out
            }
        }
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }
}

impl<M: Memory> Memory for BlockCache<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(ReadError { addr })?;
            let page = a & !(PAGE - 1);
            let off = (a - page) as usize;
            let take = (PAGE as usize - off).min(buf.len() - done);
            match self.page(page) {
                Some(p) => buf[done..done + take].copy_from_slice(&p[off..off + take]),
                // A partly readable page (a segment ending mid-page): the readable prefix.
                None => {
                    let piece = self.piece(a, PAGE as usize - off);
                    if piece.len() < take {
                        return Err(ReadError { addr: a + piece.len() as u64 });
                    }
                    buf[done..done + take].copy_from_slice(&piece[..take]);
                }
            }
            done += take;
        }
        Ok(())
    }

    fn readable_ranges(&self, lo: u64, hi: u64) -> Option<Vec<(u64, u64)>> {
        self.inner.readable_ranges(lo, hi)
    }
    fn memo(&self) -> Option<&Memo> {
        self.inner.memo()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_fail_on_gap_naming_the_address() {
        let mut m = Regions::new();
        m.add(0x1000, vec![1, 2, 3]);
        let mut b = [0u8; 4];
        assert_eq!(m.read(0x1000, &mut b), Err(ReadError { addr: 0x1003 }));
        let mut b = [0u8; 3];
        m.read(0x1000, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
    }

    #[test]
    fn cache_reads_blocks_and_isolates_missing_pages() {
        let mut m = Regions::new();
        m.add(0x10000, vec![0xaa; 0x3000]); // pages 0x10000..0x13000
        m.add(0x14000, vec![0xbb; 0x1000]); // 0x13000 missing
        let c = BlockCache::new(&m, 0x10000);
        assert_eq!(c.read_u64(0x10008).unwrap(), 0xaaaa_aaaa_aaaa_aaaa);
        assert_eq!(c.read_u64(0x14000).unwrap(), 0xbbbb_bbbb_bbbb_bbbb);
        assert_eq!(c.read_u64(0x13000), Err(ReadError { addr: 0x13000 }));
        // A read straddling into the missing page fails at the page, not at the start.
        assert_eq!(c.read_u64(0x12ffc), Err(ReadError { addr: 0x13000 }));
        assert_eq!(c.readable_prefix(0x12ff0, 100).len(), 16);
        // A page readable only in part: the error names the first unreadable byte.
        let mut m2 = Regions::new();
        m2.add(0x20000, vec![0x90; 0x3b0]);
        let c2 = BlockCache::new(&m2, 0x10000);
        let mut b = vec![0u8; 0x400];
        assert_eq!(c2.read(0x20000, &mut b), Err(ReadError { addr: 0x203b0 }));
        assert_eq!(c2.readable_prefix(0x20000, 0x400).len(), 0x3b0);
        let n = c.requests();
        c.read_u64(0x10010).unwrap();
        assert_eq!(c.requests(), n, "cached pages cost no new request");
    }

    #[test]
    fn pieces_of_a_page_are_probed_once() {
        // Two pieces inside one page, starting mid-page (as in the seed 000 replay).
        let mut m = Regions::new();
        m.add(0x30800, vec![1; 0x100]);
        m.add(0x30c00, vec![2; 0x10]);
        let c = BlockCache::new(&m, 0x10000);
        assert_eq!(c.read_u64(0x30800).unwrap(), 0x0101_0101_0101_0101);
        let n = c.requests();
        assert_eq!(c.read_u64(0x308f8).unwrap(), 0x0101_0101_0101_0101);
        assert_eq!(c.read_u64(0x308fc), Err(ReadError { addr: 0x30900 }));
        assert_eq!(c.requests(), n, "a known piece costs no new request");
        assert_eq!(c.read_u64(0x30c08).unwrap(), 0x0202_0202_0202_0202);
        assert_eq!(c.read_u64(0x30c0c), Err(ReadError { addr: 0x30c10 }));
        let n = c.requests();
        assert_eq!(c.read_u64(0x30a00), Err(ReadError { addr: 0x30a00 }));
        assert_eq!(c.requests() - n, 2, "an unreadable address costs two probes");
        c.clear();
        let n = c.requests();
        assert_eq!(c.read_u64(0x30c00).unwrap(), 0x0202_0202_0202_0202);
        assert!(c.requests() > n, "cleared: read again");
    }

    #[test]
    fn cache_survives_top_of_address_space() {
        let mut m = Regions::new();
        m.add(u64::MAX - 7, vec![7; 8]);
        let c = BlockCache::new(&m, 0x10000);
        assert_eq!(c.read_u64(u64::MAX - 7).unwrap(), 0x0707_0707_0707_0707);
        let mut b = [0u8; 16];
        assert!(c.read(u64::MAX - 7, &mut b).is_err());
    }
}
