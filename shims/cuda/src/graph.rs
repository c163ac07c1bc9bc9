//! Graphs: built on the server by stream capture, instantiated and launched there.

use crate::memory::sid;
use crate::route;
use crate::state::{R, entry, put};
use abi::cuda::*;
use protocol::ops;
use std::os::raw::{c_char, c_uint};

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
        route::call(t, &ops::cuGraphLaunch { exec: route::raw(e as u64), stream: route::raw(sid(s)) })
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
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphDestroy(g: CUgraph) -> R {
    entry(|| {
        route::call(route::of(g as u64)?, &ops::cuGraphDestroy { graph: route::raw(g as u64) })?;
        route::forget(g as u64);
        Ok(())
    })
}
