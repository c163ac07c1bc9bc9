//! Kernel launches: nvcc's call-configuration stack, `cudaLaunchKernel` (CUDA 12 nvcc),
//! `__cudaGetKernel` + `__cudaLaunchKernel` (CUDA 13 nvcc; a `cudaKernel_t` is the host
//! stub itself), `cudaLaunchKernelExC` and cooperative launches. A launch resolves the stub
//! to its `CUfunction` in the current context (cached) and calls the driver once.

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null_mut;

use abi::cuda::{CUfunction, CUstream};

use super::context::{self, Limits};
use super::error::{Res, api, non_null, out};
use super::{cs, launch_attr, ptsz, registry};
use crate::rt::{self, cudaError_t as E};

/// One `<<<grid, block, shmem, stream>>>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CallConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shmem: usize,
    pub stream: usize,
}

thread_local! {
    static CONFIGS: RefCell<Vec<CallConfig>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn push_config(c: CallConfig) {
    CONFIGS.with_borrow_mut(|v| v.push(c));
}

pub(crate) fn pop_config() -> Option<CallConfig> {
    CONFIGS.with_borrow_mut(Vec::pop)
}

fn dims(d: rt::dim3) -> [u32; 3] {
    [d.x, d.y, d.z]
}

fn dim3(d: [u32; 3]) -> rt::dim3 {
    rt::dim3 { x: d[0], y: d[1], z: d[2] }
}

/// A zero extent is `cudaErrorInvalidValue` (what NVIDIA's runtime answers, seen on an H100).
pub(crate) fn check_dims(grid: rt::dim3, block: rt::dim3) -> Res {
    if dims(grid).contains(&0) || dims(block).contains(&0) {
        return Err(E::cudaErrorInvalidValue);
    }
    Ok(())
}

/// So is a launch beyond the device's limits. Checked here because the driver underneath may send launches
/// without waiting, which would turn this into a later, deferred error.
pub(crate) fn check_limits(grid: rt::dim3, block: rt::dim3, l: &Limits) -> Res {
    let (g, b) = (dims(grid), dims(block));
    let threads = u64::from(b[0]) * u64::from(b[1]) * u64::from(b[2]);
    if threads > u64::from(l.threads) || (0..3).any(|i| b[i] > l.block[i] || g[i] > l.grid[i]) {
        return Err(E::cudaErrorInvalidValue);
    }
    Ok(())
}

/// The function to launch in the current context, after the configuration checks.
fn prepare(host: *const c_void, grid: rt::dim3, block: rt::dim3) -> Res<CUfunction> {
    check_dims(grid, block)?;
    let (ctx, device) = context::current_and_device()?;
    check_limits(grid, block, context::limits(device)?)?;
    registry::function_in(ctx, host)
}

fn launch(
    host: *const c_void,
    grid: rt::dim3,
    block: rt::dim3,
    args: *mut *mut c_void,
    shmem: usize,
    stream: CUstream,
    cooperative: bool,
) -> Res {
    let shmem = u32::try_from(shmem).map_err(|_| E::cudaErrorInvalidValue)?;
    let f = prepare(host, grid, block)?;
    let (g, b) = (grid, block);
    if cooperative {
        cu!(cuLaunchCooperativeKernel(f, g.x, g.y, g.z, b.x, b.y, b.z, shmem, stream, args))
    } else {
        cu!(cuLaunchKernel(f, g.x, g.y, g.z, b.x, b.y, b.z, shmem, stream, args, null_mut()))
    }
}

fn launch_ex(
    config: *const rt::cudaLaunchConfig_t,
    host: *const c_void,
    args: *mut *mut c_void,
    per_thread: bool,
) -> Res {
    non_null(config)?;
    // SAFETY: checked non-null; the caller's configuration.
    let c = unsafe { &*config };
    let stream = if per_thread { ptsz(c.stream) } else { c.stream };
    let mut attrs = Vec::new();
    let k = launch_attr::config(c, cs(stream), &mut attrs)?;
    let f = prepare(host, c.gridDim, c.blockDim)?;
    cu!(cuLaunchKernelEx(&k, f, args, null_mut()))
}

#[unsafe(no_mangle)]
pub extern "C" fn __cudaPushCallConfiguration(
    grid: rt::dim3,
    block: rt::dim3,
    shmem: usize,
    stream: rt::cudaStream_t,
) -> u32 {
    shim_support::guard(1, || {
        push_config(CallConfig { grid: dims(grid), block: dims(block), shmem, stream: stream as usize });
        0
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaPopCallConfiguration(
    grid: *mut rt::dim3,
    block: *mut rt::dim3,
    shmem: *mut usize,
    stream: *mut c_void,
) -> E {
    api(|| {
        let c = pop_config().ok_or(E::cudaErrorMissingConfiguration)?;
        out(grid, dim3(c.grid))?;
        out(block, dim3(c.block))?;
        out(shmem, c.shmem)?;
        out(stream.cast::<rt::cudaStream_t>(), c.stream as rt::cudaStream_t)
    })
}

per_thread! {
    fn cudaLaunchKernel, fn cudaLaunchKernel_ptsz(
        func: *const c_void,
        grid: rt::dim3,
        block: rt::dim3,
        args: *mut *mut c_void,
        shmem: usize,
        stream: rt::cudaStream_t,
    ) -> E [stream = stream, ptsz(stream)] {
        launch(func, grid, block, args, shmem, cs(stream), false)
    }

    fn cudaLaunchCooperativeKernel, fn cudaLaunchCooperativeKernel_ptsz(
        func: *const c_void,
        grid: rt::dim3,
        block: rt::dim3,
        args: *mut *mut c_void,
        shmem: usize,
        stream: rt::cudaStream_t,
    ) -> E [stream = stream, ptsz(stream)] {
        launch(func, grid, block, args, shmem, cs(stream), true)
    }
}

fn get_kernel(kernel: *mut rt::cudaKernel_t, host: *const c_void) -> Res {
    registry::function_name(host)?;
    out(kernel, host.cast_mut().cast())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaGetKernel(kernel: *mut rt::cudaKernel_t, host: *const c_void) -> E {
    api(|| get_kernel(kernel, host))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetKernel(kernel: *mut rt::cudaKernel_t, host: *const c_void) -> E {
    api(|| get_kernel(kernel, host))
}

per_thread! {
    fn __cudaLaunchKernel, fn __cudaLaunchKernel_ptsz(
        kernel: rt::cudaKernel_t,
        grid: rt::dim3,
        block: rt::dim3,
        args: *mut *mut c_void,
        shmem: usize,
        stream: rt::cudaStream_t,
    ) -> E [stream = stream, ptsz(stream)] {
        launch(kernel.cast(), grid, block, args, shmem, cs(stream), false)
    }

    fn cudaLaunchKernelExC, fn cudaLaunchKernelExC_ptsz(
        config: *const rt::cudaLaunchConfig_t,
        func: *const c_void,
        args: *mut *mut c_void,
    ) -> E [per_thread = false, true] {
        launch_ex(config, func, args, per_thread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_configuration_stack_is_lifo_and_per_thread() {
        let d = |x| rt::dim3 { x, y: 1, z: 1 };
        assert_eq!(__cudaPushCallConfiguration(d(4), d(256), 1024, 0x1234usize as rt::cudaStream_t), 0);
        assert_eq!(__cudaPushCallConfiguration(d(8), d(32), 0, null_mut()), 0);
        std::thread::spawn(|| assert_eq!(pop_config(), None)).join().unwrap();

        let (mut g, mut b, mut s, mut st) = (d(0), d(0), 0usize, null_mut::<c_void>());
        let pop = |g: &mut rt::dim3, b: &mut rt::dim3, s: &mut usize, st: &mut *mut c_void| unsafe {
            __cudaPopCallConfiguration(g, b, s, (st as *mut *mut c_void).cast())
        };
        assert_eq!(pop(&mut g, &mut b, &mut s, &mut st), E::cudaSuccess);
        assert_eq!((g.x, b.x, s, st as usize), (8, 32, 0, 0));
        assert_eq!(pop(&mut g, &mut b, &mut s, &mut st), E::cudaSuccess);
        assert_eq!((g.x, g.y, b.x, s, st as usize), (4, 1, 256, 1024, 0x1234));
        assert_eq!(pop(&mut g, &mut b, &mut s, &mut st), E::cudaErrorMissingConfiguration);
        assert_eq!(super::super::error::cudaGetLastError(), E::cudaErrorMissingConfiguration);
    }

    #[test]
    fn zero_extents_are_invalid() {
        let d = |x, y| rt::dim3 { x, y, z: 1 };
        assert_eq!(check_dims(d(1, 1), d(1, 1)), Ok(()));
        assert_eq!(check_dims(d(1, 0), d(1, 1)), Err(E::cudaErrorInvalidValue));
        assert_eq!(check_dims(d(1, 1), d(0, 1)), Err(E::cudaErrorInvalidValue));
    }

    #[test]
    fn device_limits_bound_a_launch() {
        let l = Limits { threads: 1024, block: [1024, 1024, 64], grid: [u32::MAX >> 1, 65535, 65535] };
        let d = |x, y, z| rt::dim3 { x, y, z };
        let bad = Err(E::cudaErrorInvalidValue);
        assert_eq!(check_limits(d(1 << 20, 1, 1), d(1024, 1, 1), &l), Ok(()));
        assert_eq!(check_limits(d(1, 1, 1), d(2048, 1, 1), &l), bad);
        assert_eq!(check_limits(d(1, 1, 1), d(32, 32, 2), &l), bad);
        assert_eq!(check_limits(d(1, 1, 1), d(1, 1, 65), &l), bad);
        assert_eq!(check_limits(d(1, 65536, 1), d(1, 1, 1), &l), bad);
    }
}
