//! Streams through our libcuda.so.1 in this test's process, against the sim: host functions
//! (`cuLaunchHostFunc`, `cuStreamAddCallback`) run in this process, in stream order, on a
//! thread of vgpu's, and a synchronize returns only after they did; a stream's id, device
//! and attributes. (A test process holds one `InProcess` library, so one test does all.)

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

const OK: CUresult = CUresult::CUDA_SUCCESS;

/// What the functions saw, in the order they ran: their argument, their thread's name.
static RAN: Mutex<Vec<(usize, Option<String>)>> = Mutex::new(Vec::new());

unsafe extern "C" fn note(data: *mut c_void) {
    // The OS's name of the thread: the shim's threads are named by its own copy of std.
    let mut name = [0u8; 16];
    let got = unsafe { libc::pthread_getname_np(libc::pthread_self(), name.as_mut_ptr().cast(), name.len()) };
    let name = (got == 0).then(|| String::from_utf8_lossy(&name).trim_end_matches('\0').to_string());
    RAN.lock().unwrap().push((data as usize, name));
}

/// Released by the test's thread after the launch returned; how it ended is kept.
static GATE: (Mutex<Option<bool>>, Condvar) = (Mutex::new(None), Condvar::new());

unsafe extern "C" fn gated(_: *mut c_void) {
    let (m, cv) = &GATE;
    let (mut g, waited) = cv.wait_timeout_while(m.lock().unwrap(), Duration::from_secs(10), |g| g.is_none()).unwrap();
    if waited.timed_out() {
        *g = Some(false);
    }
}

static SLOW_DONE: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn slow(_: *mut c_void) {
    std::thread::sleep(Duration::from_millis(50));
    SLOW_DONE.fetch_add(1, Ordering::SeqCst);
}

/// What a function read from pinned memory a copy before it wrote.
static READ: Mutex<Vec<u8>> = Mutex::new(Vec::new());

unsafe extern "C" fn read_pinned(data: *mut c_void) {
    let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, 64) };
    *READ.lock().unwrap() = bytes.to_vec();
}

static CALLBACK: Mutex<Option<(usize, u32, usize)>> = Mutex::new(None);

unsafe extern "C" fn callback(s: CUstream, status: CUresult, data: *mut c_void) {
    *CALLBACK.lock().unwrap() = Some((s as usize, status.0, data as usize));
}

#[test]
fn streams() {
    let p = InProcess::start();
    host_functions_run_in_stream_order_and_synchronizes_wait_for_them(&p);
    ids_devices_and_attributes(&p);
}

fn ids_devices_and_attributes(p: &InProcess) {
    unsafe {
        let create: unsafe extern "C" fn(*mut CUstream, u32) -> CUresult = p.get(b"cuStreamCreate");
        let id: unsafe extern "C" fn(CUstream, *mut u64) -> CUresult = p.get(b"cuStreamGetId");
        let device: unsafe extern "C" fn(CUstream, *mut CUdevice) -> CUresult = p.get(b"cuStreamGetDevice");
        let get: unsafe extern "C" fn(CUstream, CUstreamAttrID, *mut CUstreamAttrValue) -> CUresult =
            p.get(b"cuStreamGetAttribute");
        let set: unsafe extern "C" fn(CUstream, CUstreamAttrID, *const CUstreamAttrValue) -> CUresult =
            p.get(b"cuStreamSetAttribute");
        let copy: unsafe extern "C" fn(CUstream, CUstream) -> CUresult = p.get(b"cuStreamCopyAttributes");
        let (mut a, mut b) = (std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(create(&mut a, 0), OK);
        assert_eq!(create(&mut b, 0), OK);
        let (mut ia, mut ib) = (0, 0);
        assert_eq!(id(a, &mut ia), OK);
        assert_eq!(id(b, &mut ib), OK);
        assert_ne!(ia, ib);
        let mut d = -1;
        assert_eq!(device(a, &mut d), OK);
        assert_eq!(d, 0);
        assert_eq!(device(std::ptr::null_mut(), &mut d), OK);
        assert_eq!(d, 0);

        // An access-policy window: its bytes arrive and come back, and copy to another stream.
        let window = CUstreamAttrID::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW;
        let mut v = CUstreamAttrValue::default();
        v.accessPolicyWindow = CUaccessPolicyWindow {
            base_ptr: 0x7000_0000 as *mut c_void,
            num_bytes: 1 << 20,
            hitRatio: 0.5,
            hitProp: CUaccessProperty::CU_ACCESS_PROPERTY_PERSISTING,
            missProp: CUaccessProperty::CU_ACCESS_PROPERTY_STREAMING,
        };
        assert_eq!(set(a, window, &v), OK);
        for s in [a, b] {
            if s == b {
                assert_eq!(copy(b, a), OK);
            }
            let mut got = CUstreamAttrValue::default();
            assert_eq!(get(s, window, &mut got), OK);
            let w = got.accessPolicyWindow;
            assert_eq!((w.base_ptr as usize, w.num_bytes, w.hitRatio), (0x7000_0000, 1 << 20, 0.5));
            assert_eq!((w.hitProp, w.missProp), (v.accessPolicyWindow.hitProp, v.accessPolicyWindow.missProp));
        }
        // A graph uploaded ahead of its launch.
        let begin: unsafe extern "C" fn(CUstream, CUstreamCaptureMode) -> CUresult = p.get(b"cuStreamBeginCapture_v2");
        let end: unsafe extern "C" fn(CUstream, *mut CUgraph) -> CUresult = p.get(b"cuStreamEndCapture");
        let inst: unsafe extern "C" fn(*mut CUgraphExec, CUgraph, u64) -> CUresult =
            p.get(b"cuGraphInstantiateWithFlags");
        let upload: unsafe extern "C" fn(CUgraphExec, CUstream) -> CUresult = p.get(b"cuGraphUpload");
        let launch: unsafe extern "C" fn(CUgraphExec, CUstream) -> CUresult = p.get(b"cuGraphLaunch");
        let sync: unsafe extern "C" fn(CUstream) -> CUresult = p.get(b"cuStreamSynchronize");
        let (mut g, mut e) = (std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(begin(a, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED), OK);
        assert_eq!(end(a, &mut g), OK);
        assert_eq!(inst(&mut e, g, 0), OK);
        let nodes: unsafe extern "C" fn(CUgraph, *mut CUgraphNode, *mut usize) -> CUresult = p.get(b"cuGraphGetNodes");
        let mut n = 99;
        assert_eq!(nodes(g, std::ptr::null_mut(), &mut n), OK);
        assert_eq!(n, 0, "an empty capture, as PyTorch checks for");
        assert_eq!(upload(e, b), OK);
        assert_eq!(launch(e, b), OK);
        assert_eq!(sync(b), OK);
        // One-way, as a launch: an executable graph the server does not have fails later.
        assert_eq!(upload(0x4444 as CUgraphExec, b), OK);
        assert_eq!(sync(b), CUresult::CUDA_ERROR_INVALID_HANDLE);

        assert_eq!(set(a, window, std::ptr::null()), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(get(a, window, std::ptr::null_mut()), CUresult::CUDA_ERROR_INVALID_VALUE);
    }
}

fn host_functions_run_in_stream_order_and_synchronizes_wait_for_them(p: &InProcess) {
    unsafe {
        let launch: unsafe extern "C" fn(CUstream, CUhostFn, *mut c_void) -> CUresult = p.get(b"cuLaunchHostFunc");
        let add: unsafe extern "C" fn(CUstream, CUstreamCallback, *mut c_void, u32) -> CUresult =
            p.get(b"cuStreamAddCallback");
        let create: unsafe extern "C" fn(*mut CUstream, u32) -> CUresult = p.get(b"cuStreamCreate");
        let sync: unsafe extern "C" fn(CUstream) -> CUresult = p.get(b"cuStreamSynchronize");
        let ctx_sync: unsafe extern "C" fn() -> CUresult = p.get(b"cuCtxSynchronize");
        let alloc: unsafe extern "C" fn(*mut CUdeviceptr, usize) -> CUresult = p.get(b"cuMemAlloc_v2");
        let memset: unsafe extern "C" fn(CUdeviceptr, u8, usize, CUstream) -> CUresult = p.get(b"cuMemsetD8Async");
        let dtoh: unsafe extern "C" fn(*mut c_void, CUdeviceptr, usize) -> CUresult = p.get(b"cuMemcpyDtoH_v2");

        let mut s = std::ptr::null_mut();
        assert_eq!(create(&mut s, 0), OK);

        // In order, each once, on one thread that is not the caller's.
        for i in 1..=100usize {
            assert_eq!(launch(s, Some(note), i as *mut c_void), OK);
        }
        assert_eq!(sync(s), OK);
        let ran = std::mem::take(&mut *RAN.lock().unwrap());
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
        assert!(ran.iter().all(|r| r.1.as_deref() == Some("vgpu-host-funcs")), "{:?}", ran[0]);

        // The launch does not wait for the function: it returns while the function waits
        // for this thread.
        assert_eq!(launch(s, Some(gated), std::ptr::null_mut()), OK);
        {
            let (m, cv) = &GATE;
            let mut g = m.lock().unwrap();
            g.get_or_insert(true);
            cv.notify_all();
        }
        assert_eq!(sync(s), OK);
        assert_eq!(*GATE.0.lock().unwrap(), Some(true), "the launch returned before its function did");

        // A synchronize, of the stream, the context or a synchronous copy behind it,
        // returns after the function returned.
        assert_eq!(launch(s, Some(slow), std::ptr::null_mut()), OK);
        assert_eq!(sync(s), OK);
        assert_eq!(SLOW_DONE.load(Ordering::SeqCst), 1);
        assert_eq!(launch(std::ptr::null_mut(), Some(slow), std::ptr::null_mut()), OK);
        assert_eq!(ctx_sync(), OK);
        assert_eq!(SLOW_DONE.load(Ordering::SeqCst), 2);
        let mut d = 0;
        assert_eq!(alloc(&mut d, 64), OK);
        assert_eq!(launch(std::ptr::null_mut(), Some(slow), std::ptr::null_mut()), OK);
        assert_eq!(memset(d, 7, 64, std::ptr::null_mut()), OK);
        let mut back = [0u8; 64];
        assert_eq!(dtoh(back.as_mut_ptr().cast(), d, 64), OK);
        assert_eq!(SLOW_DONE.load(Ordering::SeqCst), 3);
        assert_eq!(back, [7; 64]);

        // A function reads what a device-to-host copy before it wrote into pinned memory,
        // also with another copy queued behind it.
        let alloc_host: unsafe extern "C" fn(*mut *mut c_void, usize) -> CUresult = p.get(b"cuMemAllocHost_v2");
        let dtoh_async: unsafe extern "C" fn(*mut c_void, CUdeviceptr, usize, CUstream) -> CUresult =
            p.get(b"cuMemcpyDtoHAsync_v2");
        let (mut first, mut second) = (std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(alloc_host(&mut first, 64), OK);
        assert_eq!(alloc_host(&mut second, 64), OK);
        assert_eq!(memset(d, 9, 64, s), OK);
        assert_eq!(dtoh_async(first, d, 64, s), OK);
        assert_eq!(launch(s, Some(read_pinned), first), OK);
        // No synchronous call of this thread collects the copy meanwhile.
        let ran = wait_until(Duration::from_secs(10), || !READ.lock().unwrap().is_empty());
        assert!(ran.is_some(), "the function did not run");
        assert_eq!(*READ.lock().unwrap(), [9; 64]);
        assert_eq!(memset(d, 5, 64, s), OK);
        assert_eq!(dtoh_async(second, d, 64, s), OK);
        assert_eq!(launch(s, Some(read_pinned), second), OK);
        assert_eq!(dtoh_async(first, d, 64, s), OK);
        assert_eq!(sync(s), OK);
        assert_eq!(*READ.lock().unwrap(), [5; 64]);
        assert_eq!(std::slice::from_raw_parts(second as *const u8, 64), [5; 64]);

        // A callback gets the application's stream, success and its argument.
        assert_eq!(add(s, Some(callback), 0x5151 as *mut c_void, 0), OK);
        assert_eq!(sync(s), OK);
        assert_eq!(*CALLBACK.lock().unwrap(), Some((s as usize, 0, 0x5151)));

        // Refused as natively: no function, callback flags.
        assert_eq!(launch(s, None, std::ptr::null_mut()), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(add(s, Some(callback), std::ptr::null_mut(), 1), CUresult::CUDA_ERROR_INVALID_VALUE);
        // A stream the server does not have: the launch is one-way, so its error comes back
        // with the next synchronous call, as a kernel launch's would.
        assert_eq!(launch(0xdead0 as CUstream, Some(note), std::ptr::null_mut()), OK);
        assert_eq!(ctx_sync(), CUresult::CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(ctx_sync(), OK);
        assert!(RAN.lock().unwrap().is_empty());
    }
}
