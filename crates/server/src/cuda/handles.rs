//! Per-session sets of the driver objects a session made. A handle from the client is the
//! driver's pointer value, and is used only after it is found here: a forged, foreign or
//! stale value is `CUDA_ERROR_INVALID_HANDLE` (`CUDA_ERROR_INVALID_CONTEXT` for contexts)
//! instead of a pointer the driver would dereference.
//!
//! Objects made in a context record it, so that destroying (or resetting) the context
//! forgets them too.

use super::{INVALID_CONTEXT, INVALID_HANDLE, R};
use abi::cuda::{
    CUcontext, CUevent, CUfunction, CUgraph, CUgraphExec, CUlibrary, CUlinkState, CUmemoryPool, CUmodule, CUstream,
};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// CUDA ordinal of its device.
    pub dev: usize,
    /// A primary context (retained, never destroyed with `cuCtxDestroy`).
    pub primary: bool,
}

/// A function handle and what launches need to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    /// The module or library it came from (it dies with it).
    pub owner: u64,
    /// The context it belongs to.
    pub ctx: u64,
    /// `(offset, size)` of each parameter, from `cuFuncGetParamInfo`.
    pub params: Vec<(u32, u32)>,
}

/// A `cuMemCreate` allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vmm {
    pub size: u64,
    /// CUDA ordinal whose quota it counts against (none for host memory).
    pub dev: Option<usize>,
    /// References taken by `cuMemRetainAllocationHandle` and not yet released.
    pub retained: u32,
}

#[derive(Default, Debug)]
pub struct Handles {
    pub contexts: HashMap<u64, Ctx>,
    /// Device ordinal → (its primary context, how many retains this session holds).
    pub primary_refs: HashMap<usize, (u64, u32)>,
    /// Stream → its context; likewise events, modules, graph execs.
    pub streams: HashMap<u64, u64>,
    pub events: HashMap<u64, u64>,
    pub modules: HashMap<u64, u64>,
    /// Libraries are context-independent.
    pub libraries: HashSet<u64>,
    /// A library's module in a context (also in `modules`) → the library, which owns it.
    pub library_modules: HashMap<u64, u64>,
    pub functions: HashMap<u64, Func>,
    /// Graphs are context-independent.
    pub graphs: HashSet<u64>,
    pub execs: HashMap<u64, u64>,
    pub vmm: HashMap<u64, Vmm>,
    /// Reserved virtual address ranges: start → size.
    pub reserved: BTreeMap<u64, u64>,
    pub links: HashMap<u64, Link>,
    /// Pools handed out → their device: the devices' own (never destroyed) and those in
    /// `created`.
    pub pools: HashMap<u64, usize>,
    /// Pools the application created (`cuMemPoolCreate`), which it may destroy.
    pub created_pools: HashSet<u64>,
}

/// A link state.
#[derive(Debug)]
pub struct Link {
    pub ctx: u64,
    /// Once completed, the image the driver holds for it (address, size) until it is
    /// destroyed.
    pub image: Option<(usize, usize)>,
    /// Its options from `cuLinkCreate`, then each input's, which the driver may use until
    /// the link is destroyed.
    pub jit: Vec<super::jit::Jit>,
}

fn found<T>(ok: bool, h: u64, err: u32) -> R<*mut T> {
    if ok { Ok(h as *mut T) } else { Err(err) }
}

impl Handles {
    /// 0 (the legacy default stream), 1 (`CU_STREAM_LEGACY`) and 2 (`CU_STREAM_PER_THREAD`)
    /// are the driver's own special values and pass through; others must be ours.
    pub fn stream(&self, s: u64) -> R<CUstream> {
        found(s <= 2 || self.streams.contains_key(&s), s, INVALID_HANDLE)
    }
    pub fn event(&self, e: u64) -> R<CUevent> {
        found(self.events.contains_key(&e), e, INVALID_HANDLE)
    }
    pub fn module(&self, m: u64) -> R<CUmodule> {
        found(self.modules.contains_key(&m), m, INVALID_HANDLE)
    }
    pub fn library(&self, l: u64) -> R<CUlibrary> {
        found(self.libraries.contains(&l), l, INVALID_HANDLE)
    }
    pub fn function(&self, f: u64) -> R<CUfunction> {
        found(self.functions.contains_key(&f), f, INVALID_HANDLE)
    }
    pub fn graph(&self, g: u64) -> R<CUgraph> {
        found(self.graphs.contains(&g), g, INVALID_HANDLE)
    }
    pub fn exec(&self, x: u64) -> R<CUgraphExec> {
        found(self.execs.contains_key(&x), x, INVALID_HANDLE)
    }
    pub fn pool(&self, p: u64) -> R<CUmemoryPool> {
        found(self.pools.contains_key(&p), p, INVALID_HANDLE)
    }
    pub fn link(&self, l: u64) -> R<CUlinkState> {
        found(self.links.contains_key(&l), l, INVALID_HANDLE)
    }
    pub fn context(&self, c: u64) -> R<CUcontext> {
        found(self.contexts.contains_key(&c), c, INVALID_CONTEXT)
    }

    /// The context a stream's work runs in: its own, or (for the special streams) `current`.
    pub fn stream_context(&self, s: u64, current: u64) -> u64 {
        self.streams.get(&s).copied().unwrap_or(current)
    }

    /// Whether `[ptr, ptr+size)` lies inside one reserved virtual range.
    pub fn reserved_contains(&self, ptr: u64, size: u64) -> bool {
        let Some(end) = ptr.checked_add(size) else {
            return false;
        };
        self.reserved.range(..=ptr).next_back().is_some_and(|(&s, &len)| s.checked_add(len).is_some_and(|e| end <= e))
    }

    /// Forget a module or library's functions.
    pub fn forget_owner(&mut self, owner: u64) {
        self.functions.retain(|_, f| f.owner != owner);
    }

    /// Forget a module and its functions.
    pub fn forget_module(&mut self, m: u64) {
        self.modules.remove(&m);
        self.library_modules.remove(&m);
        self.forget_owner(m);
    }

    /// Forget what died with context `ctx`. The context itself stays (a reset primary
    /// context is still valid); its caller removes it when it is gone.
    pub fn forget_ctx(&mut self, ctx: u64) {
        self.streams.retain(|_, c| *c != ctx);
        self.events.retain(|_, c| *c != ctx);
        let dead: Vec<u64> = self.modules.iter().filter(|(_, c)| **c == ctx).map(|(m, _)| *m).collect();
        for m in dead {
            self.forget_module(m);
        }
        self.functions.retain(|_, f| f.ctx != ctx);
        self.execs.retain(|_, c| *c != ctx);
        self.links.retain(|_, l| l.ctx != ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_streams_pass_forged_ones_do_not() {
        let mut h = Handles::default();
        for s in 0..=2 {
            assert_eq!(h.stream(s).unwrap() as u64, s);
        }
        assert_eq!(h.stream(0xdead_beef), Err(INVALID_HANDLE));
        h.streams.insert(0x5000, 0x100);
        assert_eq!(h.stream(0x5000).unwrap() as u64, 0x5000);
        assert_eq!(h.stream_context(0x5000, 0x200), 0x100);
        assert_eq!(h.stream_context(0, 0x200), 0x200);
        assert_eq!(h.context(0x100), Err(INVALID_CONTEXT));
        assert_eq!(h.event(0), Err(INVALID_HANDLE));
        assert_eq!(h.function(0x10), Err(INVALID_HANDLE));
        assert_eq!(h.graph(0x10), Err(INVALID_HANDLE));
        assert_eq!(h.exec(0x10), Err(INVALID_HANDLE));
        assert_eq!(h.module(0x10), Err(INVALID_HANDLE));
        assert_eq!(h.library(0x10), Err(INVALID_HANDLE));
    }

    #[test]
    fn forgetting_a_context_takes_what_it_owned() {
        let mut h = Handles::default();
        h.contexts.insert(0x100, Ctx { dev: 0, primary: false });
        h.streams.insert(0x1, 0x100);
        h.streams.insert(0x2, 0x200);
        h.events.insert(0x3, 0x100);
        h.modules.insert(0x4, 0x100);
        h.modules.insert(0x5, 0x200);
        h.libraries.insert(0x6);
        h.functions.insert(0x7, Func { owner: 0x4, ctx: 0x100, params: vec![] });
        h.functions.insert(0x8, Func { owner: 0x6, ctx: 0x100, params: vec![] });
        h.functions.insert(0x9, Func { owner: 0x6, ctx: 0x200, params: vec![] });
        h.execs.insert(0xa, 0x100);
        h.forget_ctx(0x100);
        assert!(h.contexts.contains_key(&0x100));
        assert_eq!(h.streams.keys().copied().collect::<Vec<_>>(), vec![0x2]);
        assert!(h.events.is_empty() && h.execs.is_empty());
        assert_eq!(h.modules.keys().copied().collect::<Vec<_>>(), vec![0x5]);
        assert!(h.libraries.contains(&0x6));
        assert_eq!(h.functions.keys().copied().collect::<Vec<_>>(), vec![0x9]);
        h.forget_owner(0x6);
        assert!(h.functions.is_empty());
    }

    #[test]
    fn reserved_ranges() {
        let mut h = Handles::default();
        h.reserved.insert(0x10000, 0x10000);
        assert!(h.reserved_contains(0x10000, 0x10000));
        assert!(h.reserved_contains(0x18000, 0x8000));
        assert!(!h.reserved_contains(0x18000, 0x8001));
        assert!(!h.reserved_contains(0xf000, 0x2000));
        assert!(!h.reserved_contains(u64::MAX, 2));
    }
}
