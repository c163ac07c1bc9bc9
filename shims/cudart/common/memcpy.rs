//! The copy and fill exports (`cudaMemcpy*`, `cudaMemset*`, symbols), each in its legacy,
//! per-thread (`_ptds`/`_ptsz`) and asynchronous flavours.

use std::ffi::{c_int, c_void};

use super::context::{current, primary};
use super::copy::{self, Dir, On, Rect, copy, copy_2d, fill, fill_2d, resolve};
use super::error::{Res, api, out};
use super::{cs, ptsz, registry};
use crate::rt::{self, cudaError_t as E, cudaMemcpyKind as K};

fn memcpy(dst: *mut c_void, src: *const c_void, n: usize, kind: K, on: On) -> Res {
    copy(dst, src, n, resolve(kind, dst, src)?, on)
}

#[allow(clippy::too_many_arguments)]
fn memcpy_2d(
    dst: *mut c_void,
    dpitch: usize,
    src: *const c_void,
    spitch: usize,
    width: usize,
    height: usize,
    kind: K,
    on: On,
) -> Res {
    let r = Rect { dst, dpitch, src, spitch, width, height };
    copy_2d(&r, resolve(kind, dst, src)?, on)
}

/// The device address of `count` bytes at `offset` in the variable `symbol`.
fn symbol_range(symbol: *const c_void, count: usize, offset: usize) -> Res<*mut c_void> {
    let (base, size) = registry::global(symbol)?;
    match offset.checked_add(count) {
        Some(end) if end <= size => Ok((base as usize + offset) as *mut c_void),
        _ => Err(E::cudaErrorInvalidValue),
    }
}

/// One side of a symbol copy is device memory; `kind` may only say where the other is.
fn symbol_dir(kind: K, other: *const c_void, to_symbol: bool) -> Res<Dir> {
    let other_on_device = match kind {
        K::cudaMemcpyDeviceToDevice => true,
        K::cudaMemcpyHostToDevice if to_symbol => false,
        K::cudaMemcpyDeviceToHost if !to_symbol => false,
        K::cudaMemcpyDefault => copy::is_device(other),
        _ => return Err(E::cudaErrorInvalidMemcpyDirection),
    };
    Ok(match (to_symbol, other_on_device) {
        (_, true) => Dir::DtoD,
        (true, false) => Dir::HtoD,
        (false, false) => Dir::DtoH,
    })
}

fn to_symbol(symbol: *const c_void, src: *const c_void, count: usize, offset: usize, kind: K, on: On) -> Res {
    let dir = symbol_dir(kind, src, true)?;
    copy(symbol_range(symbol, count, offset)?, src, count, dir, on)
}

fn from_symbol(dst: *mut c_void, symbol: *const c_void, count: usize, offset: usize, kind: K, on: On) -> Res {
    let dir = symbol_dir(kind, dst, false)?;
    copy(dst, symbol_range(symbol, count, offset)?, count, dir, on)
}

fn stream(s: rt::cudaStream_t) -> On {
    On::Stream(cs(s))
}

per_thread! {
    fn cudaMemcpy, fn cudaMemcpy_ptds(
        dst: *mut c_void,
        src: *const c_void,
        n: usize,
        kind: K,
    ) -> E [on = On::Legacy, On::PerThread] {
        memcpy(dst, src, n, kind, on)
    }

    fn cudaMemcpyAsync, fn cudaMemcpyAsync_ptsz(
        dst: *mut c_void,
        src: *const c_void,
        n: usize,
        kind: K,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        memcpy(dst, src, n, kind, stream(s))
    }

    fn cudaMemcpy2D, fn cudaMemcpy2D_ptds(
        dst: *mut c_void,
        dpitch: usize,
        src: *const c_void,
        spitch: usize,
        w: usize,
        h: usize,
        kind: K,
    ) -> E [on = On::Legacy, On::PerThread] {
        memcpy_2d(dst, dpitch, src, spitch, w, h, kind, on)
    }

    fn cudaMemcpy2DAsync, fn cudaMemcpy2DAsync_ptsz(
        dst: *mut c_void,
        dpitch: usize,
        src: *const c_void,
        spitch: usize,
        w: usize,
        h: usize,
        kind: K,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        memcpy_2d(dst, dpitch, src, spitch, w, h, kind, stream(s))
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemcpyPeer(
    dst: *mut c_void,
    dst_dev: c_int,
    src: *const c_void,
    src_dev: c_int,
    n: usize,
) -> E {
    api(|| {
        current()?;
        let (dc, sc) = (primary(dst_dev)?, primary(src_dev)?);
        cu!(cuMemcpyPeer(dst as u64, dc, src as u64, sc, n))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemcpyPeerAsync(
    dst: *mut c_void,
    dst_dev: c_int,
    src: *const c_void,
    src_dev: c_int,
    n: usize,
    s: rt::cudaStream_t,
) -> E {
    api(|| {
        current()?;
        let (dc, sc) = (primary(dst_dev)?, primary(src_dev)?);
        cu!(cuMemcpyPeerAsync(dst as u64, dc, src as u64, sc, n, cs(s)))
    })
}

per_thread! {
    fn cudaMemset, fn cudaMemset_ptds(p: *mut c_void, value: c_int, n: usize) -> E [on = On::Legacy, On::PerThread] {
        fill(p, value, n, on)
    }

    fn cudaMemsetAsync, fn cudaMemsetAsync_ptsz(
        p: *mut c_void,
        value: c_int,
        n: usize,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        fill(p, value, n, stream(s))
    }

    fn cudaMemset2D, fn cudaMemset2D_ptds(
        p: *mut c_void,
        pitch: usize,
        value: c_int,
        w: usize,
        h: usize,
    ) -> E [on = On::Legacy, On::PerThread] {
        fill_2d(p, pitch, value, w, h, on)
    }

    fn cudaMemset2DAsync, fn cudaMemset2DAsync_ptsz(
        p: *mut c_void,
        pitch: usize,
        value: c_int,
        w: usize,
        h: usize,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        fill_2d(p, pitch, value, w, h, stream(s))
    }

    fn cudaMemcpyToSymbol, fn cudaMemcpyToSymbol_ptds(
        symbol: *const c_void,
        src: *const c_void,
        n: usize,
        offset: usize,
        kind: K,
    ) -> E [on = On::Legacy, On::PerThread] {
        to_symbol(symbol, src, n, offset, kind, on)
    }

    fn cudaMemcpyToSymbolAsync, fn cudaMemcpyToSymbolAsync_ptsz(
        symbol: *const c_void,
        src: *const c_void,
        n: usize,
        offset: usize,
        kind: K,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        to_symbol(symbol, src, n, offset, kind, stream(s))
    }

    fn cudaMemcpyFromSymbol, fn cudaMemcpyFromSymbol_ptds(
        dst: *mut c_void,
        symbol: *const c_void,
        n: usize,
        offset: usize,
        kind: K,
    ) -> E [on = On::Legacy, On::PerThread] {
        from_symbol(dst, symbol, n, offset, kind, on)
    }

    fn cudaMemcpyFromSymbolAsync, fn cudaMemcpyFromSymbolAsync_ptsz(
        dst: *mut c_void,
        symbol: *const c_void,
        n: usize,
        offset: usize,
        kind: K,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        from_symbol(dst, symbol, n, offset, kind, stream(s))
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetSymbolAddress(dev_ptr: *mut *mut c_void, symbol: *const c_void) -> E {
    api(|| out(dev_ptr, registry::global(symbol)?.0 as *mut c_void))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetSymbolSize(size: *mut usize, symbol: *const c_void) -> E {
    api(|| out(size, registry::global(symbol)?.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_directions() {
        let p = std::ptr::null();
        assert_eq!(symbol_dir(K::cudaMemcpyHostToDevice, p, true), Ok(Dir::HtoD));
        assert_eq!(symbol_dir(K::cudaMemcpyDeviceToDevice, p, true), Ok(Dir::DtoD));
        assert_eq!(symbol_dir(K::cudaMemcpyDeviceToHost, p, false), Ok(Dir::DtoH));
        assert_eq!(symbol_dir(K::cudaMemcpyDeviceToDevice, p, false), Ok(Dir::DtoD));
        assert_eq!(symbol_dir(K::cudaMemcpyDeviceToHost, p, true), Err(E::cudaErrorInvalidMemcpyDirection));
        assert_eq!(symbol_dir(K::cudaMemcpyHostToDevice, p, false), Err(E::cudaErrorInvalidMemcpyDirection));
        assert_eq!(symbol_dir(K::cudaMemcpyHostToHost, p, true), Err(E::cudaErrorInvalidMemcpyDirection));
    }
}
