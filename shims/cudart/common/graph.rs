//! Stream capture and CUDA graphs. Graph handles pass through; enums and result structs are
//! translated member by member (their numbering is the driver's, checked in the tests).

use std::ffi::{c_uint, c_ulonglong};
use std::ptr::null_mut;

use abi::cuda as cu;

use super::context::current;
use super::error::{Res, api, non_null, out};
use super::{cs, ptsz};
use crate::rt::{self, cudaError_t as E};

fn begin(s: rt::cudaStream_t, mode: rt::cudaStreamCaptureMode) -> Res {
    current()?;
    cu!(cuStreamBeginCapture_v2(cs(s), cu::CUstreamCaptureMode(mode.0)))
}

fn end(s: rt::cudaStream_t, graph: *mut rt::cudaGraph_t) -> Res {
    non_null(graph)?;
    current()?;
    let mut g = null_mut();
    let r = cu!(cuStreamEndCapture(cs(s), &mut g));
    // A failed capture still hands back its (null) graph.
    out(graph, g.cast())?;
    r
}

fn is_capturing(s: rt::cudaStream_t, status: *mut rt::cudaStreamCaptureStatus) -> Res {
    non_null(status)?;
    current()?;
    let mut st = cu::CUstreamCaptureStatus(0);
    cu!(cuStreamIsCapturing(cs(s), &mut st))?;
    out(status, rt::cudaStreamCaptureStatus(st.0))
}

/// `cuStreamGetCaptureInfo_v3` (with edge data) or `_v2` (without); null outputs are
/// optional except the status.
fn capture_info(
    s: rt::cudaStream_t,
    status: *mut rt::cudaStreamCaptureStatus,
    id: *mut c_ulonglong,
    graph: *mut rt::cudaGraph_t,
    deps: *mut *const rt::cudaGraphNode_t,
    edges: Option<*mut *const rt::cudaGraphEdgeData>,
    num_deps: *mut usize,
) -> Res {
    non_null(status)?;
    current()?;
    let mut st = cu::CUstreamCaptureStatus(0);
    let mut g = null_mut();
    let g_out = if graph.is_null() { null_mut() } else { &raw mut g };
    // Node handles and edge data are the driver's own arrays: same pointers, same layouts.
    match edges {
        Some(e) => cu!(cuStreamGetCaptureInfo_v3(cs(s), &mut st, id, g_out, deps.cast(), e.cast(), num_deps))?,
        None => cu!(cuStreamGetCaptureInfo_v2(cs(s), &mut st, id, g_out, deps.cast(), num_deps))?,
    }
    if !graph.is_null() {
        out(graph, g.cast())?;
    }
    out(status, rt::cudaStreamCaptureStatus(st.0))
}

per_thread! {
    fn cudaStreamBeginCapture, fn cudaStreamBeginCapture_ptsz(
        s: rt::cudaStream_t,
        mode: rt::cudaStreamCaptureMode,
    ) -> E [s = s, ptsz(s)] {
        begin(s, mode)
    }

    fn cudaStreamEndCapture, fn cudaStreamEndCapture_ptsz(
        s: rt::cudaStream_t,
        graph: *mut rt::cudaGraph_t,
    ) -> E [s = s, ptsz(s)] {
        end(s, graph)
    }

    fn cudaStreamIsCapturing, fn cudaStreamIsCapturing_ptsz(
        s: rt::cudaStream_t,
        status: *mut rt::cudaStreamCaptureStatus,
    ) -> E [s = s, ptsz(s)] {
        is_capturing(s, status)
    }

    /// CUDA 13: the one form, with edge data.
    #[cfg(vgpu_major = "13")]
    fn cudaStreamGetCaptureInfo, fn cudaStreamGetCaptureInfo_ptsz(
        s: rt::cudaStream_t,
        status: *mut rt::cudaStreamCaptureStatus,
        id: *mut c_ulonglong,
        graph: *mut rt::cudaGraph_t,
        deps: *mut *const rt::cudaGraphNode_t,
        edges: *mut *const rt::cudaGraphEdgeData,
        num_deps: *mut usize,
    ) -> E [s = s, ptsz(s)] {
        capture_info(s, status, id, graph, deps, Some(edges), num_deps)
    }
}

#[cfg(vgpu_major = "12")]
mod v12 {
    use super::*;

    per_thread! {
        /// CUDA 12's original form: status and id only.
        fn cudaStreamGetCaptureInfo, fn cudaStreamGetCaptureInfo_ptsz(
            s: rt::cudaStream_t,
            status: *mut rt::cudaStreamCaptureStatus,
            id: *mut c_ulonglong,
        ) -> E [s = s, ptsz(s)] {
            capture_info(s, status, id, null_mut(), null_mut(), None, null_mut())
        }

        fn cudaStreamGetCaptureInfo_v2, fn cudaStreamGetCaptureInfo_v2_ptsz(
            s: rt::cudaStream_t,
            status: *mut rt::cudaStreamCaptureStatus,
            id: *mut c_ulonglong,
            graph: *mut rt::cudaGraph_t,
            deps: *mut *const rt::cudaGraphNode_t,
            num_deps: *mut usize,
        ) -> E [s = s, ptsz(s)] {
            capture_info(s, status, id, graph, deps, None, num_deps)
        }

        fn cudaStreamGetCaptureInfo_v3, fn cudaStreamGetCaptureInfo_v3_ptsz(
            s: rt::cudaStream_t,
            status: *mut rt::cudaStreamCaptureStatus,
            id: *mut c_ulonglong,
            graph: *mut rt::cudaGraph_t,
            deps: *mut *const rt::cudaGraphNode_t,
            edges: *mut *const rt::cudaGraphEdgeData,
            num_deps: *mut usize,
        ) -> E [s = s, ptsz(s)] {
            capture_info(s, status, id, graph, deps, Some(edges), num_deps)
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaThreadExchangeStreamCaptureMode(mode: *mut rt::cudaStreamCaptureMode) -> E {
    api(|| {
        non_null(mode)?;
        // SAFETY: checked non-null; the caller's mode.
        let mut m = cu::CUstreamCaptureMode(unsafe { *mode }.0);
        cu!(cuThreadExchangeStreamCaptureMode(&mut m))?;
        out(mode, rt::cudaStreamCaptureMode(m.0))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGraphCreate(graph: *mut rt::cudaGraph_t, flags: c_uint) -> E {
    api(|| {
        non_null(graph)?;
        current()?;
        let mut g = null_mut();
        cu!(cuGraphCreate(&mut g, flags))?;
        out(graph, g.cast())
    })
}

fn instantiate(exec: *mut rt::cudaGraphExec_t, graph: rt::cudaGraph_t, flags: c_ulonglong) -> Res {
    non_null(exec)?;
    current()?;
    let mut e = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut e, graph.cast(), flags))?;
    out(exec, e.cast())
}

/// The CUDA 12+ three-argument form (the C++ five-argument overload calls it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGraphInstantiate(
    exec: *mut rt::cudaGraphExec_t,
    graph: rt::cudaGraph_t,
    flags: c_ulonglong,
) -> E {
    api(|| instantiate(exec, graph, flags))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGraphInstantiateWithFlags(
    exec: *mut rt::cudaGraphExec_t,
    graph: rt::cudaGraph_t,
    flags: c_ulonglong,
) -> E {
    api(|| instantiate(exec, graph, flags))
}

fn launch(exec: rt::cudaGraphExec_t, s: rt::cudaStream_t) -> Res {
    current()?;
    cu!(cuGraphLaunch(exec.cast(), cs(s)))
}

/// `cudaGraphNode_t` is the driver's `CUgraphNode`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGraphGetNodes(g: rt::cudaGraph_t, nodes: *mut rt::cudaGraphNode_t, num: *mut usize) -> E {
    api(|| {
        current()?;
        cu!(cuGraphGetNodes(g.cast(), nodes.cast(), num))
    })
}

fn upload(exec: rt::cudaGraphExec_t, s: rt::cudaStream_t) -> Res {
    current()?;
    cu!(cuGraphUpload(exec.cast(), cs(s)))
}

per_thread! {
    fn cudaGraphLaunch, fn cudaGraphLaunch_ptsz(exec: rt::cudaGraphExec_t, s: rt::cudaStream_t) -> E [s = s, ptsz(s)] {
        launch(exec, s)
    }

    fn cudaGraphUpload, fn cudaGraphUpload_ptsz(exec: rt::cudaGraphExec_t, s: rt::cudaStream_t) -> E [s = s, ptsz(s)] {
        upload(exec, s)
    }
}

/// The CUDA 12+ form, with `cudaGraphExecUpdateResultInfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGraphExecUpdate(
    exec: rt::cudaGraphExec_t,
    graph: rt::cudaGraph_t,
    info: *mut rt::cudaGraphExecUpdateResultInfo,
) -> E {
    api(|| {
        current()?;
        let mut i = cu::CUgraphExecUpdateResultInfo {
            result: cu::CUgraphExecUpdateResult(0),
            errorNode: null_mut(),
            errorFromNode: null_mut(),
        };
        let r = cu!(cuGraphExecUpdate_v2(exec.cast(), graph.cast(), &mut i));
        if !info.is_null() {
            out(
                info,
                rt::cudaGraphExecUpdateResultInfo {
                    result: rt::cudaGraphExecUpdateResult(i.result.0),
                    errorNode: i.errorNode.cast(),
                    errorFromNode: i.errorFromNode.cast(),
                },
            )?;
        }
        r
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGraphExecDestroy(exec: rt::cudaGraphExec_t) -> E {
    api(|| {
        current()?;
        cu!(cuGraphExecDestroy(exec.cast()))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGraphDestroy(graph: rt::cudaGraph_t) -> E {
    api(|| {
        current()?;
        cu!(cuGraphDestroy(graph.cast()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn enums_and_layouts_match_the_driver() {
        use cu::CUstreamCaptureMode as CM;
        use rt::cudaStreamCaptureMode as RM;
        assert_eq!(RM::cudaStreamCaptureModeRelaxed.0, CM::CU_STREAM_CAPTURE_MODE_RELAXED.0);
        assert_eq!(RM::cudaStreamCaptureModeThreadLocal.0, CM::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL.0);
        assert_eq!(
            rt::cudaStreamCaptureStatus::cudaStreamCaptureStatusInvalidated.0,
            cu::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_INVALIDATED.0
        );
        assert_eq!(
            rt::cudaGraphExecUpdateResult::cudaGraphExecUpdateErrorTopologyChanged.0,
            cu::CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED.0
        );
        assert_eq!(size_of::<rt::cudaGraphEdgeData>(), size_of::<cu::CUgraphEdgeData>());
        assert_eq!(offset_of!(rt::cudaGraphEdgeData, type_), offset_of!(cu::CUgraphEdgeData, type_));
        assert_eq!(
            rt::cudaGraphInstantiateFlags::cudaGraphInstantiateFlagAutoFreeOnLaunch.0,
            cu::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH.0
        );
    }
}
