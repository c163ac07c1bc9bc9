//! Streams, events and graphs: created objects join the session's sets (with the context
//! they belong to), every use is checked against them, and destruction leaves them.

use super::staging::PinnedApi;
use super::{CudaSession, NOT_SUPPORTED, R, STREAM_CAPTURE_UNSUPPORTED};
use abi::cuda::{
    CUevent, CUgraph, CUgraphExec, CUgraphExecUpdateResultInfo, CUstream, CUstreamAttrID, CUstreamAttrValue,
    CUstreamCaptureMode, CUstreamCaptureStatus,
};
use std::ptr::null_mut;

/// How long a synchronize is polled on the session's thread before it is handed to a
/// helper thread: short waits (a kernel or two) are answered without a thread handoff.
const INLINE_WAIT: std::time::Duration = std::time::Duration::from_micros(200);

/// A `stream_barrier` the worker has not waited for. A decode step copies its inputs
/// each followed by a synchronize, which the client sends as a barrier; waiting for each
/// would cost the server a few microseconds per copy. Work on the barrier's own stream is
/// ordered after it anyway; work on other streams is ordered on the GPU; only a call that
/// is neither waits for it on the host.
#[derive(Debug)]
pub(super) struct Barrier {
    /// The stream (client value) of the current context it was sent for.
    stream: u64,
    /// Whether the context's order event has been recorded on `stream` since the barrier.
    recorded: bool,
    /// Streams already made to wait for that event.
    ordered: Vec<u64>,
}

impl CudaSession {
    pub(super) fn stream_create(&mut self, flags: u32, priority: Option<i32>) -> R<u64> {
        let mut s: CUstream = null_mut();
        match priority {
            None => cu!(self.lib, cuStreamCreate(&mut s, flags))?,
            Some(p) => cu!(self.lib, cuStreamCreateWithPriority(&mut s, flags, p))?,
        }
        self.h.streams.insert(s as u64, self.current);
        Ok(s as u64)
    }

    pub(super) fn stream_destroy(&mut self, stream: u64) -> R<()> {
        // The special streams are not ours to destroy.
        if stream <= 2 {
            return Err(super::INVALID_HANDLE);
        }
        let s = self.h.stream(stream)?;
        cu!(self.lib, cuStreamDestroy_v2(s))?;
        self.h.streams.remove(&stream);
        Ok(())
    }

    pub(super) fn stream_synchronize(&mut self, stream: u64) -> R<()> {
        let s = self.h.stream(stream)?;
        cu!(self.lib, cuStreamSynchronize(s))
    }

    /// `stream_barrier`: not waited for now (see [`Barrier`]). Another barrier pending on
    /// another stream was ordered before this stream by [`Self::keep_order`], so waiting
    /// for this one later covers both.
    pub(super) fn defer_barrier(&mut self, stream: u64) -> R<()> {
        self.h.stream(stream)?;
        self.barrier = Some(Barrier { stream, recorded: false, ordered: Vec::new() });
        Ok(())
    }

    /// Wait for the pending barrier, if any; its error is kept for the next synchronous call.
    pub(super) fn flush_barrier(&mut self) {
        if let Some(b) = self.barrier.take()
            && let Err(code) = self.stream_synchronize(b.stream)
        {
            self.async_error.get_or_insert(code);
        }
    }

    /// Before each call, with its stream: one-way work on another stream is ordered after
    /// the pending barrier on the GPU (an event recorded after it, waited for by that
    /// stream), so nobody waits; anything else waits for the barrier. (Synchronous calls
    /// are flushed by the worker before they run.)
    pub(super) fn keep_order(&mut self, stream: Option<u64>) {
        let Some(b) = &self.barrier else { return };
        match stream {
            Some(t) if t == b.stream || b.ordered.contains(&t) => {}
            Some(t) => {
                if self.order_after_barrier(t).is_err() {
                    self.flush_barrier();
                }
            }
            None => self.flush_barrier(),
        }
    }

    /// Make stream `t` wait on the GPU for the work before the pending barrier. A capturing
    /// stream cannot wait for an event recorded outside its capture: that is an error here,
    /// and the caller waits on the host instead.
    fn order_after_barrier(&mut self, t: u64) -> R<()> {
        let ts = self.h.stream(t)?;
        if self.is_capturing(ts)? {
            return Err(STREAM_CAPTURE_UNSUPPORTED);
        }
        let (lib, ctx) = (self.lib, self.current);
        let event = match self.order_events.get(&ctx) {
            Some(&e) => e,
            None => {
                let e = lib.event_create()?;
                self.order_events.insert(ctx, e);
                e
            }
        };
        let b = self.barrier.as_mut().expect("a pending barrier");
        if !b.recorded {
            let s = self.h.stream(b.stream)?;
            cu!(lib, cuEventRecord(event as CUevent, s))?;
            b.recorded = true;
        }
        cu!(lib, cuStreamWaitEvent(ts, event as CUevent, 0))?;
        b.ordered.push(t);
        Ok(())
    }

    /// `Session::wait_job`: a synchronize of a created stream or of an event that is still
    /// busy after [`INLINE_WAIT`] of polling is waited for on a helper thread (with the
    /// context current there too). The special streams stay here: the per-thread stream is
    /// another one on another thread. A synchronize that is done, or fails, at once is
    /// answered by the call itself.
    pub(super) fn wait_off_thread(&mut self, op: u32, args: &[u8]) -> Option<crate::WaitJob> {
        use protocol::{Op, ops};
        self.ready().ok()?;
        let (handle, event) = if op == Op::cuStreamSynchronize as u32 {
            let a: ops::cuStreamSynchronize = postcard::from_bytes(args).ok()?;
            if a.stream <= 2 {
                return None;
            }
            (self.h.stream(a.stream).ok()? as u64, false)
        } else if op == Op::cuEventSynchronize as u32 {
            let a: ops::cuEventSynchronize = postcard::from_bytes(args).ok()?;
            (self.h.event(a.event).ok()? as u64, true)
        } else {
            return None;
        };
        let lib = self.lib;
        let query = || match event {
            true => cu!(lib, cuEventQuery(handle as CUevent)),
            false => cu!(lib, cuStreamQuery(handle as CUstream)),
        };
        let start = std::time::Instant::now();
        loop {
            match query() {
                // Not polled while the GPU is shared: the wait would be a spin.
                Err(super::NOT_READY) if self.shared.is_none() && start.elapsed() < INLINE_WAIT => {
                    std::hint::spin_loop()
                }
                Err(super::NOT_READY) => break,
                _ => return None,
            }
        }
        let ctx = if event { self.current } else { self.h.stream_context(handle, self.current) };
        Some(Box::new(move || {
            cu!(lib, cuCtxSetCurrent(ctx as abi::cuda::CUcontext))?;
            match event {
                true => cu!(lib, cuEventSynchronize(handle as CUevent)),
                false => cu!(lib, cuStreamSynchronize(handle as CUstream)),
            }
        }))
    }

    pub(super) fn stream_query(&mut self, stream: u64) -> R<()> {
        let s = self.h.stream(stream)?;
        cu!(self.lib, cuStreamQuery(s))
    }

    pub(super) fn stream_wait_event(&mut self, stream: u64, event: u64, flags: u32) -> R<()> {
        let (s, e) = (self.h.stream(stream)?, self.h.event(event)?);
        cu!(self.lib, cuStreamWaitEvent(s, e, flags))
    }

    /// `cuStreamWaitValue32/64` (`write` false) and `cuStreamWriteValue32/64`: the word must
    /// lie in this session's memory.
    pub(super) fn stream_memory_op(
        &mut self,
        write: bool,
        stream: u64,
        at: u64,
        value: u64,
        flags: u32,
        wide: bool,
    ) -> R<()> {
        let s = self.h.stream(stream)?;
        self.ranges.check(at, if wide { 8 } else { 4 })?;
        let lib = self.lib;
        match (write, wide) {
            (false, false) => cu!(lib, cuStreamWaitValue32_v2(s, at, value as u32, flags)),
            (false, true) => cu!(lib, cuStreamWaitValue64_v2(s, at, value, flags)),
            (true, false) => cu!(lib, cuStreamWriteValue32_v2(s, at, value as u32, flags)),
            (true, true) => cu!(lib, cuStreamWriteValue64_v2(s, at, value, flags)),
        }
    }

    pub(super) fn stream_id(&mut self, stream: u64) -> R<u64> {
        let s = self.h.stream(stream)?;
        let mut id = 0;
        cu!(self.lib, cuStreamGetId(s, &mut id))?;
        Ok(id)
    }

    pub(super) fn stream_attribute(&mut self, stream: u64, attr: u32) -> R<Vec<u8>> {
        let s = self.h.stream(stream)?;
        let mut v = CUstreamAttrValue::default();
        cu!(self.lib, cuStreamGetAttribute(s, CUstreamAttrID(attr), &mut v))?;
        Ok(super::vmm::struct_bytes(&v))
    }

    /// As a launch attribute, checked as one (an event in it must be the session's).
    pub(super) fn set_stream_attribute(&mut self, stream: u64, attr: &protocol::LaunchAttr) -> R<()> {
        let s = self.h.stream(stream)?;
        let a = super::launch::launch_attrs(std::slice::from_ref(attr), &self.h)?.remove(0);
        cu!(self.lib, cuStreamSetAttribute(s, a.id, &a.value))
    }

    /// A host function: a stand-in queued with the driver asks the client to run function
    /// `id` when the stream reaches it, and holds the stream until it returned. Captured
    /// into a graph, the stand-in runs at every launch of the graph and is kept.
    pub(super) fn launch_host_func(&mut self, stream: u64, id: u64, callback: bool) -> R<()> {
        let s = self.h.stream(stream)?;
        let funcs = self.host_funcs.clone().filter(|f| f.joined()).ok_or(NOT_SUPPORTED)?;
        let captured = self.stream_is_capturing(stream)? != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE.0;
        let data = Box::into_raw(Box::new(StandIn { funcs, id, last: !captured })).cast();
        let lib = self.lib;
        let queued = (|| match callback {
            true => cu!(lib, cuStreamAddCallback(s, Some(run_callback), data, 0)),
            false => cu!(lib, cuLaunchHostFunc(s, Some(run_host_func), data)),
        })();
        if queued.is_err() {
            // SAFETY: boxed just above, and the driver did not take it.
            drop(unsafe { Box::from_raw(data.cast::<StandIn>()) });
        }
        queued
    }

    pub(super) fn begin_capture(&mut self, stream: u64, mode: u32) -> R<()> {
        let s = self.h.stream(stream)?;
        cu!(self.lib, cuStreamBeginCapture_v2(s, CUstreamCaptureMode(mode)))
    }

    pub(super) fn end_capture(&mut self, stream: u64) -> R<u64> {
        // Which sequence ends, for the copies captured in it (`htod_captured`).
        let capture = self.capture_info(stream).map_or(0, |(_, id)| id);
        let s = self.h.stream(stream)?;
        let mut g: CUgraph = null_mut();
        if let Err(e) = cu!(self.lib, cuStreamEndCapture(s, &mut g)) {
            // An invalidated capture ends without a graph; its copies went with it.
            self.captured.ended(capture, None);
            return Err(e);
        }
        self.h.graphs.insert(g as u64);
        self.captured.ended(capture, Some(g as u64));
        Ok(g as u64)
    }

    pub(super) fn stream_is_capturing(&mut self, stream: u64) -> R<u32> {
        let s = self.h.stream(stream)?;
        let mut st = CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        cu!(self.lib, cuStreamIsCapturing(s, &mut st))?;
        Ok(st.0)
    }

    /// `(status, capture id)`, from the newest form the driver has (the other outputs are
    /// optional and not asked for).
    pub(super) fn capture_info(&mut self, stream: u64) -> R<(u32, u64)> {
        let s = self.h.stream(stream)?;
        let mut st = CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        let mut id = 0u64;
        let lib = self.lib;
        if lib.cuStreamGetCaptureInfo_v3.is_ok() {
            cu!(lib, cuStreamGetCaptureInfo_v3(s, &mut st, &mut id, null_mut(), null_mut(), null_mut(), null_mut()))?;
        } else if lib.cuStreamGetCaptureInfo_v2.is_ok() {
            cu!(lib, cuStreamGetCaptureInfo_v2(s, &mut st, &mut id, null_mut(), null_mut(), null_mut()))?;
        } else {
            cu!(lib, cuStreamGetCaptureInfo(s, &mut st, &mut id))?;
        }
        Ok((st.0, id))
    }

    pub(super) fn stream_priority(&mut self, stream: u64) -> R<i32> {
        let s = self.h.stream(stream)?;
        let mut p = 0;
        cu!(self.lib, cuStreamGetPriority(s, &mut p))?;
        Ok(p)
    }

    pub(super) fn stream_flags(&mut self, stream: u64) -> R<u32> {
        let s = self.h.stream(stream)?;
        let mut f = 0;
        cu!(self.lib, cuStreamGetFlags(s, &mut f))?;
        Ok(f)
    }

    /// The capture mode is per thread, and every call of the session runs on this one.
    pub(super) fn exchange_capture_mode(&mut self, mode: u32) -> R<u32> {
        let mut m = CUstreamCaptureMode(mode);
        cu!(self.lib, cuThreadExchangeStreamCaptureMode(&mut m))?;
        Ok(m.0)
    }

    pub(super) fn event_create(&mut self, flags: u32) -> R<u64> {
        let mut e: CUevent = null_mut();
        cu!(self.lib, cuEventCreate(&mut e, flags))?;
        self.h.events.insert(e as u64, self.current);
        Ok(e as u64)
    }

    pub(super) fn event_destroy(&mut self, event: u64) -> R<()> {
        let e = self.h.event(event)?;
        cu!(self.lib, cuEventDestroy_v2(e))?;
        self.h.events.remove(&event);
        Ok(())
    }

    pub(super) fn event_record(&mut self, event: u64, stream: u64, flags: Option<u32>) -> R<()> {
        let (e, s) = (self.h.event(event)?, self.h.stream(stream)?);
        match flags {
            None => cu!(self.lib, cuEventRecord(e, s)),
            Some(f) => cu!(self.lib, cuEventRecordWithFlags(e, s, f)),
        }
    }

    pub(super) fn event_synchronize(&mut self, event: u64) -> R<()> {
        let e = self.h.event(event)?;
        cu!(self.lib, cuEventSynchronize(e))
    }

    pub(super) fn event_query(&mut self, event: u64) -> R<()> {
        let e = self.h.event(event)?;
        cu!(self.lib, cuEventQuery(e))
    }

    /// `cuEventElapsedTime_v2` where the driver has it (CUDA 12.8+), else the original.
    pub(super) fn event_elapsed(&mut self, start: u64, end: u64) -> R<f32> {
        let (a, b) = (self.h.event(start)?, self.h.event(end)?);
        let mut ms = 0f32;
        if self.lib.cuEventElapsedTime_v2.is_ok() {
            cu!(self.lib, cuEventElapsedTime_v2(&mut ms, a, b))?;
        } else {
            cu!(self.lib, cuEventElapsedTime(&mut ms, a, b))?;
        }
        Ok(ms)
    }

    pub(super) fn graph_create(&mut self, flags: u32) -> R<u64> {
        let mut g: CUgraph = null_mut();
        cu!(self.lib, cuGraphCreate(&mut g, flags))?;
        self.h.graphs.insert(g as u64);
        Ok(g as u64)
    }

    pub(super) fn graph_instantiate(&mut self, graph: u64, flags: u64) -> R<u64> {
        let g = self.h.graph(graph)?;
        let mut x: CUgraphExec = null_mut();
        cu!(self.lib, cuGraphInstantiateWithFlags(&mut x, g, flags))?;
        self.h.execs.insert(x as u64, self.current);
        Ok(x as u64)
    }

    pub(super) fn graph_nodes(&mut self, graph: u64) -> R<Vec<u64>> {
        let g = self.h.graph(graph)?;
        let mut n = 0;
        cu!(self.lib, cuGraphGetNodes(g, null_mut(), &mut n))?;
        if n == 0 {
            // The driver refuses an array for no nodes (an empty capture, which PyTorch makes).
            return Ok(Vec::new());
        }
        let mut nodes = vec![null_mut(); n];
        cu!(self.lib, cuGraphGetNodes(g, nodes.as_mut_ptr(), &mut n))?;
        nodes.truncate(n);
        Ok(nodes.into_iter().map(|p| p as u64).collect())
    }

    pub(super) fn graph_launch(&mut self, exec: u64, stream: u64) -> R<()> {
        let (x, s) = (self.h.exec(exec)?, self.h.stream(stream)?);
        cu!(self.lib, cuGraphLaunch(x, s))
    }

    /// The `CUgraphExecUpdateResult` when the update happened; the status when it did not.
    pub(super) fn graph_exec_update(&mut self, exec: u64, graph: u64) -> R<u32> {
        let (x, g) = (self.h.exec(exec)?, self.h.graph(graph)?);
        let mut info = CUgraphExecUpdateResultInfo::default();
        cu!(self.lib, cuGraphExecUpdate_v2(x, g, &mut info))?;
        Ok(info.result.0)
    }

    pub(super) fn graph_exec_destroy(&mut self, exec: u64) -> R<()> {
        let x = self.h.exec(exec)?;
        cu!(self.lib, cuGraphExecDestroy(x))?;
        self.h.execs.remove(&exec);
        Ok(())
    }

    pub(super) fn graph_destroy(&mut self, graph: u64) -> R<()> {
        let g = self.h.graph(graph)?;
        cu!(self.lib, cuGraphDestroy(g))?;
        self.h.graphs.remove(&graph);
        self.captured.graph_destroyed(graph);
        Ok(())
    }
}

/// What the driver's callback thread gets for a host function: whom to ask to run which.
struct StandIn {
    funcs: std::sync::Arc<crate::host_funcs::HostFuncs>,
    id: u64,
    last: bool,
}

unsafe extern "C" fn run_host_func(data: *mut std::ffi::c_void) {
    stand_in(data, 0);
}

unsafe extern "C" fn run_callback(_: CUstream, status: abi::cuda::CUresult, data: *mut std::ffi::c_void) {
    stand_in(data, status.0);
}

/// Run on the driver's thread, which makes no CUDA call here (the driver forbids it).
fn stand_in(data: *mut std::ffi::c_void, status: u32) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: a `StandIn` boxed by `launch_host_func`, freed only after its last run.
        let s = unsafe { &*data.cast::<StandIn>() };
        s.funcs.run(protocol::host_funcs::Run { id: s.id, status, last: s.last });
        if s.last {
            // SAFETY: as above; the driver runs a stand-in that is not in a graph once.
            drop(unsafe { Box::from_raw(data.cast::<StandIn>()) });
        }
    });
}
