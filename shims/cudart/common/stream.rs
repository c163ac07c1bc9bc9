//! Streams and events. Handles pass through: a `cudaStream_t` is the driver's `CUstream`
//! (null, `cudaStreamLegacy` and `cudaStreamPerThread` included), a `cudaEvent_t` its
//! `CUevent`; the flag bits are the driver's too.

use std::ffi::{c_int, c_uint, c_void};
use std::ptr::null_mut;

use abi::cuda as cu;

use super::context::current;
use super::error::{Res, api, non_null, out};
use super::{cs, ptsz};
use crate::rt::{self, cudaError_t as E};

fn ce(e: rt::cudaEvent_t) -> cu::CUevent {
    e.cast()
}

fn create(p: *mut rt::cudaStream_t, flags: c_uint, priority: Option<c_int>) -> Res {
    non_null(p)?;
    current()?;
    let mut s = null_mut();
    match priority {
        None => cu!(cuStreamCreate(&mut s, flags))?,
        Some(prio) => cu!(cuStreamCreateWithPriority(&mut s, flags, prio))?,
    }
    out(p, s.cast())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaStreamCreate(p: *mut rt::cudaStream_t) -> E {
    api(|| create(p, 0, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaStreamCreateWithFlags(p: *mut rt::cudaStream_t, flags: c_uint) -> E {
    api(|| create(p, flags, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaStreamCreateWithPriority(p: *mut rt::cudaStream_t, flags: c_uint, priority: c_int) -> E {
    api(|| create(p, flags, Some(priority)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaStreamDestroy(s: rt::cudaStream_t) -> E {
    api(|| {
        current()?;
        cu!(cuStreamDestroy_v2(cs(s)))
    })
}

fn synchronize(s: rt::cudaStream_t) -> Res {
    current()?;
    cu!(cuStreamSynchronize(cs(s)))
}

fn query(s: rt::cudaStream_t) -> Res {
    current()?;
    cu!(cuStreamQuery(cs(s)))
}

fn wait_event(s: rt::cudaStream_t, e: rt::cudaEvent_t, flags: c_uint) -> Res {
    current()?;
    cu!(cuStreamWaitEvent(cs(s), ce(e), flags))
}

fn launch_host_func(s: rt::cudaStream_t, f: rt::cudaHostFn_t, data: *mut c_void) -> Res {
    current()?;
    cu!(cuLaunchHostFunc(cs(s), f, data))
}

/// A runtime callback, which takes the runtime's status where the driver's takes its own.
struct Callback {
    f: unsafe extern "C" fn(rt::cudaStream_t, E, *mut c_void),
    data: *mut c_void,
}

unsafe extern "C" fn run_callback(s: cu::CUstream, status: cu::CUresult, data: *mut c_void) {
    // SAFETY: boxed by `add_callback` for this one run (callbacks are never captured).
    let cb = unsafe { Box::from_raw(data.cast::<Callback>()) };
    // SAFETY: the application's callback with its own argument.
    unsafe { (cb.f)(s.cast(), super::error::from_cu(status), cb.data) }
}

fn add_callback(s: rt::cudaStream_t, f: rt::cudaStreamCallback_t, data: *mut c_void, flags: c_uint) -> Res {
    let f = f.ok_or(E::cudaErrorInvalidValue)?;
    current()?;
    let boxed = Box::into_raw(Box::new(Callback { f, data }));
    let added = cu!(cuStreamAddCallback(cs(s), Some(run_callback), boxed.cast(), flags));
    if added.is_err() {
        // SAFETY: boxed just above; the driver did not take it.
        drop(unsafe { Box::from_raw(boxed) });
    }
    added
}

fn stream_id(s: rt::cudaStream_t, id: *mut u64) -> Res {
    non_null(id)?;
    current()?;
    cu!(cuStreamGetId(cs(s), id))
}

fn stream_device(s: rt::cudaStream_t, dev: *mut c_int) -> Res {
    non_null(dev)?;
    current()?;
    let mut d = 0;
    cu!(cuStreamGetDevice(cs(s), &mut d))?;
    out(dev, d)
}

fn get_attribute(s: rt::cudaStream_t, id: rt::cudaLaunchAttributeID, value: *mut rt::cudaLaunchAttributeValue) -> Res {
    non_null(value)?;
    current()?;
    let mut v = cu::CUlaunchAttributeValue::default();
    cu!(cuStreamGetAttribute(cs(s), cu::CUlaunchAttributeID(id.0), &mut v))?;
    out(value, super::launch_attr::stream_value(id, &v)?)
}

fn set_attribute(
    s: rt::cudaStream_t,
    id: rt::cudaLaunchAttributeID,
    value: *const rt::cudaLaunchAttributeValue,
) -> Res {
    non_null(value)?;
    current()?;
    // SAFETY: the caller's value, checked non-null.
    let a =
        super::launch_attr::attribute(&rt::cudaLaunchAttribute { id, val: unsafe { *value }, ..Default::default() })?;
    cu!(cuStreamSetAttribute(cs(s), a.id, &a.value))
}

fn copy_attributes(dst: rt::cudaStream_t, src: rt::cudaStream_t) -> Res {
    current()?;
    cu!(cuStreamCopyAttributes(cs(dst), cs(src)))
}

fn priority(s: rt::cudaStream_t, p: *mut c_int) -> Res {
    non_null(p)?;
    current()?;
    cu!(cuStreamGetPriority(cs(s), p))
}

fn flags(s: rt::cudaStream_t, f: *mut c_uint) -> Res {
    non_null(f)?;
    current()?;
    cu!(cuStreamGetFlags(cs(s), f))
}

per_thread! {
    fn cudaStreamSynchronize, fn cudaStreamSynchronize_ptsz(s: rt::cudaStream_t) -> E [s = s, ptsz(s)] {
        synchronize(s)
    }

    fn cudaStreamQuery, fn cudaStreamQuery_ptsz(s: rt::cudaStream_t) -> E [s = s, ptsz(s)] {
        query(s)
    }

    fn cudaStreamWaitEvent, fn cudaStreamWaitEvent_ptsz(
        s: rt::cudaStream_t,
        e: rt::cudaEvent_t,
        flags: c_uint,
    ) -> E [s = s, ptsz(s)] {
        wait_event(s, e, flags)
    }

    fn cudaLaunchHostFunc, fn cudaLaunchHostFunc_ptsz(
        s: rt::cudaStream_t,
        f: rt::cudaHostFn_t,
        data: *mut c_void,
    ) -> E [s = s, ptsz(s)] {
        launch_host_func(s, f, data)
    }

    fn cudaStreamAddCallback, fn cudaStreamAddCallback_ptsz(
        s: rt::cudaStream_t,
        f: rt::cudaStreamCallback_t,
        data: *mut c_void,
        flags: c_uint,
    ) -> E [s = s, ptsz(s)] {
        add_callback(s, f, data, flags)
    }

    fn cudaStreamGetId, fn cudaStreamGetId_ptsz(s: rt::cudaStream_t, id: *mut u64) -> E [s = s, ptsz(s)] {
        stream_id(s, id)
    }

    fn cudaStreamGetDevice, fn cudaStreamGetDevice_ptsz(s: rt::cudaStream_t, dev: *mut c_int) -> E [s = s, ptsz(s)] {
        stream_device(s, dev)
    }

    fn cudaStreamGetAttribute, fn cudaStreamGetAttribute_ptsz(
        s: rt::cudaStream_t,
        id: rt::cudaLaunchAttributeID,
        out: *mut rt::cudaLaunchAttributeValue,
    ) -> E [s = s, ptsz(s)] {
        get_attribute(s, id, out)
    }

    fn cudaStreamSetAttribute, fn cudaStreamSetAttribute_ptsz(
        s: rt::cudaStream_t,
        id: rt::cudaLaunchAttributeID,
        value: *const rt::cudaLaunchAttributeValue,
    ) -> E [s = s, ptsz(s)] {
        set_attribute(s, id, value)
    }

    fn cudaStreamCopyAttributes, fn cudaStreamCopyAttributes_ptsz(
        dst: rt::cudaStream_t,
        src: rt::cudaStream_t,
    ) -> E [dst = dst, ptsz(dst)] {
        copy_attributes(dst, src)
    }

    fn cudaStreamGetPriority, fn cudaStreamGetPriority_ptsz(s: rt::cudaStream_t, p: *mut c_int) -> E [s = s, ptsz(s)] {
        priority(s, p)
    }

    fn cudaStreamGetFlags, fn cudaStreamGetFlags_ptsz(s: rt::cudaStream_t, f: *mut c_uint) -> E [s = s, ptsz(s)] {
        flags(s, f)
    }
}

fn event_create(p: *mut rt::cudaEvent_t, flags: c_uint) -> Res {
    non_null(p)?;
    current()?;
    let mut e = null_mut();
    cu!(cuEventCreate(&mut e, flags))?;
    out(p, e.cast())
}

fn record(e: rt::cudaEvent_t, s: rt::cudaStream_t, flags: Option<c_uint>) -> Res {
    current()?;
    match flags {
        None => cu!(cuEventRecord(ce(e), cs(s))),
        Some(f) => cu!(cuEventRecordWithFlags(ce(e), cs(s), f)),
    }
}

/// `v2` (CUDA 12.8+) where the driver has it, else the original.
fn elapsed(ms: *mut f32, start: rt::cudaEvent_t, end: rt::cudaEvent_t, v2: bool) -> Res {
    non_null(ms)?;
    current()?;
    if v2 {
        match cu!(cuEventElapsedTime_v2(ms, ce(start), ce(end))) {
            Err(E::cudaErrorCallRequiresNewerDriver | E::cudaErrorNotSupported) => {}
            r => return r,
        }
    }
    cu!(cuEventElapsedTime(ms, ce(start), ce(end)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaEventCreate(p: *mut rt::cudaEvent_t) -> E {
    api(|| event_create(p, 0))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaEventCreateWithFlags(p: *mut rt::cudaEvent_t, flags: c_uint) -> E {
    api(|| event_create(p, flags))
}

// Inter-process event sharing: the runtime's handle has the driver's 64 bytes.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaIpcGetEventHandle(h: *mut rt::cudaIpcEventHandle_t, e: rt::cudaEvent_t) -> E {
    api(|| {
        non_null(h)?;
        current()?;
        let mut d = cu::CUipcEventHandle { reserved: [0; 64] };
        cu!(cuIpcGetEventHandle(&mut d, ce(e)))?;
        out(h, rt::cudaIpcEventHandle_t { reserved: d.reserved })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaIpcOpenEventHandle(e: *mut rt::cudaEvent_t, h: rt::cudaIpcEventHandle_t) -> E {
    api(|| {
        non_null(e)?;
        current()?;
        let mut d = null_mut();
        cu!(cuIpcOpenEventHandle(&mut d, cu::CUipcEventHandle { reserved: h.reserved }))?;
        out(e, d.cast())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaEventDestroy(e: rt::cudaEvent_t) -> E {
    api(|| {
        current()?;
        cu!(cuEventDestroy_v2(ce(e)))
    })
}

per_thread! {
    fn cudaEventRecord, fn cudaEventRecord_ptsz(e: rt::cudaEvent_t, s: rt::cudaStream_t) -> E [s = s, ptsz(s)] {
        record(e, s, None)
    }

    fn cudaEventRecordWithFlags, fn cudaEventRecordWithFlags_ptsz(
        e: rt::cudaEvent_t,
        s: rt::cudaStream_t,
        flags: c_uint,
    ) -> E [s = s, ptsz(s)] {
        record(e, s, Some(flags))
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaEventSynchronize(e: rt::cudaEvent_t) -> E {
    api(|| {
        current()?;
        cu!(cuEventSynchronize(ce(e)))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaEventQuery(e: rt::cudaEvent_t) -> E {
    api(|| {
        current()?;
        cu!(cuEventQuery(ce(e)))
    })
}

/// CUDA 13's `cudaEventElapsedTime` is 12's `_v2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaEventElapsedTime(ms: *mut f32, start: rt::cudaEvent_t, end: rt::cudaEvent_t) -> E {
    api(|| elapsed(ms, start, end, cfg!(vgpu_major = "13")))
}

#[cfg(vgpu_major = "12")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaEventElapsedTime_v2(ms: *mut f32, start: rt::cudaEvent_t, end: rt::cudaEvent_t) -> E {
    api(|| elapsed(ms, start, end, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_match_the_driver() {
        assert_eq!(rt::cudaStreamNonBlocking, cu::CUstream_flags::CU_STREAM_NON_BLOCKING.0);
        assert_eq!(rt::cudaEventDisableTiming, cu::CUevent_flags::CU_EVENT_DISABLE_TIMING.0);
        assert_eq!(rt::cudaEventBlockingSync, cu::CUevent_flags::CU_EVENT_BLOCKING_SYNC.0);
        assert_eq!(rt::cudaEventInterprocess, cu::CUevent_flags::CU_EVENT_INTERPROCESS.0);
        assert_eq!(super::super::PER_THREAD as usize, 2);
    }
}
