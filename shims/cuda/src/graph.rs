//! Graphs: built on the server by stream capture, instantiated and launched there.

use crate::memory::sid;
use crate::route::{self, Target};
use crate::state::{self, R, entry, put};
use abi::cuda::*;
use parking_lot::Mutex;
use protocol::ops;
use std::collections::HashMap;
use std::os::raw::{c_char, c_uint};
use std::sync::{Arc, LazyLock};

/// Host-to-device copies captured into a graph over a socket: (address in this process,
/// length, the server's id for its kept bytes). Natively such a copy reads the
/// application's memory at every launch; the server cannot, so the bytes are sent again
/// before each launch of an executable graph made from it.
type Copies = Arc<Vec<(u64, u64, u64)>>;

type ByHandle = LazyLock<Mutex<HashMap<u64, Copies>>>;

/// By graph, and by executable graph (from the graph it was made or last updated from).
static GRAPHS: ByHandle = LazyLock::new(Default::default);
static EXECS: ByHandle = LazyLock::new(Default::default);

fn copies_of(map: &ByHandle, h: u64) -> Option<Copies> {
    map.lock().get(&h).cloned()
}

fn set_copies(map: &ByHandle, h: u64, c: Option<Copies>) {
    let mut m = map.lock();
    match c {
        Some(c) => _ = m.insert(h, c),
        None => _ = m.remove(&h),
    }
}

/// A capture just ended as `graph`: which copies in it came from this process's memory.
pub fn captured(t: Target, graph: u64) -> Result<(), R> {
    if !route::CAPTURED_SENT.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let c = route::call(t, &ops::captured_copies { graph: route::raw(graph) })?;
    set_copies(&GRAPHS, graph, (!c.is_empty()).then(|| Arc::new(c)));
    Ok(())
}

/// Before a launch of `exec`: its captured copies' bytes as the application's memory holds
/// them now. Memory no longer pinned or registered here is left as it was (reading it could
/// fault; natively the launch would read whatever is there).
fn refresh(t: Target, exec: u64) -> Result<(), R> {
    let Some(copies) = copies_of(&EXECS, exec) else { return Ok(()) };
    for &(host, len, id) in copies.iter() {
        if state::is_pinned(host, len) {
            // SAFETY: `len` bytes of host memory this process allocated or registered as
            // pinned, still held (checked just above).
            let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, len as usize) };
            route::call_to(t, &ops::refresh_captured { id }, &[bytes], None)?;
        }
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphCreate(g: *mut CUgraph, flags: c_uint) -> R {
    entry(|| {
        let t = route::here();
        let h = route::tag(t.server, route::call(t, &ops::cuGraphCreate { flags })?)?;
        route::remember(h, t.ctx);
        unsafe { put(g, h as usize as CUgraph) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(e: *mut CUgraphExec, g: CUgraph, flags: u64) -> R {
    entry(|| {
        let t = route::of(g as u64)?;
        let x = route::call(t, &ops::cuGraphInstantiateWithFlags { graph: route::raw(g as u64), flags })?;
        let x = route::tag(t.server, x)?;
        route::remember(x, t.ctx);
        set_copies(&EXECS, x, copies_of(&GRAPHS, g as u64));
        unsafe { put(e, x as usize as CUgraphExec) }
    })
}

/// The legacy five-argument forms; the error node and log are not reported remotely.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiate_v2(
    e: *mut CUgraphExec,
    g: CUgraph,
    err_node: *mut CUgraphNode,
    log: *mut c_char,
    log_size: usize,
) -> R {
    if !err_node.is_null() {
        unsafe { *err_node = std::ptr::null_mut() };
    }
    if !log.is_null() && log_size > 0 {
        unsafe { *log = 0 };
    }
    unsafe { cuGraphInstantiateWithFlags(e, g, 0) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiate(
    e: *mut CUgraphExec,
    g: CUgraph,
    err_node: *mut CUgraphNode,
    log: *mut c_char,
    log_size: usize,
) -> R {
    unsafe { cuGraphInstantiate_v2(e, g, err_node, log, log_size) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphLaunch(e: CUgraphExec, s: CUstream) -> R {
    entry(|| {
        let t = route::with_stream(route::of(e as u64)?, sid(s))?;
        refresh(t, e as u64)?;
        route::call(t, &ops::cuGraphLaunch { exec: route::raw(e as u64), stream: route::raw(sid(s)) })
    })
}

/// A graph's nodes, as handles of its server (the explicit node API is not supported: they
/// serve to count, as PyTorch does after a capture).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphGetNodes(g: CUgraph, nodes: *mut CUgraphNode, num: *mut usize) -> R {
    entry(|| {
        if num.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let t = route::of(g as u64)?;
        let all = route::call(t, &ops::graph_nodes { graph: route::raw(g as u64) })?;
        if nodes.is_null() {
            return unsafe { put(num, all.len()) };
        }
        // SAFETY: the caller's array of `*num` entries; those past the graph's are null, and
        // `*num` becomes how many were filled.
        let out = unsafe { std::slice::from_raw_parts_mut(nodes, *num) };
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = match all.get(i) {
                Some(&n) => route::tag(t.server, n)? as usize as CUgraphNode,
                None => std::ptr::null_mut(),
            };
        }
        unsafe { put(num, out.len().min(all.len())) }
    })
}

/// The graph's work goes to the device ahead of its first launch (no copies are refreshed:
/// a launch does that).
#[unsafe(no_mangle)]
pub extern "C" fn cuGraphUpload(e: CUgraphExec, s: CUstream) -> R {
    entry(|| {
        let t = route::with_stream(route::of(e as u64)?, sid(s))?;
        route::call(t, &ops::cuGraphUpload { exec: route::raw(e as u64), stream: route::raw(sid(s)) })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphExecUpdate_v2(e: CUgraphExec, g: CUgraph, info: *mut CUgraphExecUpdateResultInfo) -> R {
    entry(|| {
        let t = route::of(e as u64)?;
        if route::server_of(g as u64)? != t.server {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let r = route::call(t, &ops::cuGraphExecUpdate_v2 { exec: route::raw(e as u64), graph: route::raw(g as u64) });
        if r.is_ok() {
            set_copies(&EXECS, e as u64, copies_of(&GRAPHS, g as u64));
        }
        if let Some(i) = unsafe { info.as_mut() } {
            i.errorNode = std::ptr::null_mut();
            i.errorFromNode = std::ptr::null_mut();
            i.result = CUgraphExecUpdateResult(match r {
                Ok(v) => v,
                // The update was refused: say so the way the driver does.
                Err(_) => CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_ERROR.0,
            });
        }
        r.map(|_| ())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphExecDestroy(e: CUgraphExec) -> R {
    entry(|| {
        route::call(route::of(e as u64)?, &ops::cuGraphExecDestroy { exec: route::raw(e as u64) })?;
        route::forget(e as u64);
        set_copies(&EXECS, e as u64, None);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphDestroy(g: CUgraph) -> R {
    entry(|| {
        route::call(route::of(g as u64)?, &ops::cuGraphDestroy { graph: route::raw(g as u64) })?;
        route::forget(g as u64);
        set_copies(&GRAPHS, g as u64, None);
        Ok(())
    })
}
