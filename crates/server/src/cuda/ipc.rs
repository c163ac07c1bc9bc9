//! Inter-process sharing (`cuIpc*`): memory and events of one session opened by another
//! session of the same server, as processes on one host share them natively (PyTorch's
//! `torch.multiprocessing`, Triton's Python backend). Every session's worker is a process of
//! the GPU host, so the driver's handles work between them as they are.

use super::ranges::{Kind, Range};
use super::{CudaSession, INVALID_VALUE, R};
use abi::cuda::{CUevent, CUipcEventHandle, CUipcMemHandle};

/// A handle's bytes as the driver's 64-byte struct.
fn reserved(bytes: &[u8]) -> R<[std::ffi::c_char; 64]> {
    protocol::ipc_reserved(bytes).ok_or(INVALID_VALUE)
}

impl CudaSession {
    /// Only this session's own allocations are shared (the driver also refuses others').
    pub(super) fn ipc_get_mem_handle(&mut self, dptr: u64) -> R<Vec<u8>> {
        self.allocation(dptr)?;
        let mut h = CUipcMemHandle { reserved: [0; 64] };
        cu!(self.lib, cuIpcGetMemHandle(&mut h, dptr))?;
        Ok(protocol::ipc_bytes(&h.reserved))
    }

    /// Opened in the current context; the whole allocation becomes a range of this session.
    pub(super) fn ipc_open_mem_handle(&mut self, handle: &[u8], flags: u32) -> R<(u64, u64)> {
        let dev = self.current_device()?;
        let h = CUipcMemHandle { reserved: reserved(handle)? };
        let mut p = 0;
        cu!(self.lib, cuIpcOpenMemHandle_v2(&mut p, h, flags))?;
        let (mut base, mut size) = (0, 0usize);
        if let Err(e) = cu!(self.lib, cuMemGetAddressRange_v2(&mut base, &mut size, p)) {
            let _ = cu!(self.lib, cuIpcCloseMemHandle(p));
            return Err(e);
        }
        self.ranges.insert(p, Range { len: size as u64, dev, ctx: self.current, kind: Kind::Ipc });
        Ok((p, size as u64))
    }

    pub(super) fn ipc_close_mem_handle(&mut self, dptr: u64) -> R<()> {
        self.ranges.get(dptr).filter(|r| r.kind == Kind::Ipc).ok_or(INVALID_VALUE)?;
        cu!(self.lib, cuIpcCloseMemHandle(dptr))?;
        self.ranges.remove(dptr);
        Ok(())
    }

    pub(super) fn ipc_get_event_handle(&mut self, event: u64) -> R<Vec<u8>> {
        let e = self.h.event(event)?;
        let mut h = CUipcEventHandle { reserved: [0; 64] };
        cu!(self.lib, cuIpcGetEventHandle(&mut h, e))?;
        Ok(protocol::ipc_bytes(&h.reserved))
    }

    /// An event of this session from then on, in the current context.
    pub(super) fn ipc_open_event_handle(&mut self, handle: &[u8]) -> R<u64> {
        let h = CUipcEventHandle { reserved: reserved(handle)? };
        let mut e: CUevent = std::ptr::null_mut();
        cu!(self.lib, cuIpcOpenEventHandle(&mut e, h))?;
        self.h.events.insert(e as u64, self.current);
        Ok(e as u64)
    }
}
