//! Graphs: built on the server by stream capture, instantiated and launched there.

use crate::memory::sid;
use crate::state::{call, entry, put, R};
use abi::cuda::*;
use protocol::ops;
use std::os::raw::{c_char, c_uint};

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphCreate(g: *mut CUgraph, flags: c_uint) -> R {
    entry(|| unsafe { put(g, call(&ops::cuGraphCreate { flags })? as usize as CUgraph) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(e: *mut CUgraphExec, g: CUgraph, flags: u64) -> R {
    entry(|| unsafe { put(e, call(&ops::cuGraphInstantiateWithFlags { graph: g as u64, flags })? as usize as CUgraphExec) })
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
    entry(|| call(&ops::cuGraphLaunch { exec: e as u64, stream: sid(s) }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphExecUpdate_v2(e: CUgraphExec, g: CUgraph, info: *mut CUgraphExecUpdateResultInfo) -> R {
    entry(|| {
        let r = call(&ops::cuGraphExecUpdate_v2 { exec: e as u64, graph: g as u64 });
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
    entry(|| call(&ops::cuGraphExecDestroy { exec: e as u64 }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphDestroy(g: CUgraph) -> R {
    entry(|| call(&ops::cuGraphDestroy { graph: g as u64 }))
}
