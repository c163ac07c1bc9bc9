//! Contexts: primary contexts (retained per device, counted so that releases match) and
//! created ones. When a context goes away, so does everything the session made in it.

use super::handles::Ctx;
use super::{CudaSession, INVALID_CONTEXT, R};
use abi::cuda::{CUcontext, CUlimit};
use std::collections::HashMap;
use std::ptr::null_mut;

/// How the worker's threads wait for the GPU, where `VGPU_SCHED` (`spin`, `yield`, `block`)
/// says so for measuring: the scheduling bits of every context's flags, otherwise the
/// application's.
fn sched(flags: u32) -> u32 {
    use abi::cuda::CUctx_flags_enum as F;
    static S: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let set = *S.get_or_init(|| match std::env::var("VGPU_SCHED").as_deref() {
        Ok("spin") => Some(F::CU_CTX_SCHED_SPIN.0),
        Ok("yield") => Some(F::CU_CTX_SCHED_YIELD.0),
        Ok("block") => Some(F::CU_CTX_SCHED_BLOCKING_SYNC.0),
        _ => None,
    });
    set.map_or(flags, |s| (flags & !F::CU_CTX_SCHED_MASK.0) | s)
}

const SCHED_MASK: u32 = abi::cuda::CUctx_flags_enum::CU_CTX_SCHED_MASK.0;
const BLOCKING: u32 = abi::cuda::CUctx_flags_enum::CU_CTX_SCHED_BLOCKING_SYNC.0;

impl CudaSession {
    /// While other sessions share the GPU, every context of this session waits blocking
    /// (`cuCtxSetFlags`): a thread spinning in the driver's wait takes a core for all the
    /// time the others' work runs first. Four clients decoding at once on an H100 kept their
    /// summed speed with it and left 3-4 cores free (session 25). Alone again, each context
    /// gets back the scheduling the application gave it. `VGPU_SCHED` overrides both, and
    /// a `VGPU_CROWDED_SPIN_US` other than 0 (poll while shared) leaves the application's.
    pub(super) fn set_shared(&mut self, shared: bool) {
        if shared == self.shared.is_some() || sched(0) != 0 || !transport::crowd::crowded_spin().is_zero() {
            return;
        }
        if shared {
            self.shared = Some(HashMap::new());
            let contexts: Vec<u64> = self.h.contexts.keys().copied().collect();
            for c in contexts {
                self.block_if_shared(c);
            }
        } else if let Some(before) = self.shared.take() {
            for (c, bits) in before {
                let _ = self.in_context(c, |s| s.set_current_sched(bits));
            }
        }
    }

    /// Context `c`'s own scheduling back, while the GPU is still shared (it is going away).
    fn unblock(&mut self, c: u64) {
        if let Some(bits) = self.shared.as_mut().and_then(|m| m.remove(&c)) {
            let _ = self.in_context(c, |s| s.set_current_sched(bits));
        }
    }

    /// The current context's scheduling bits set to `bits`; those before. A primary
    /// context's are set as the device's too: `cuCtxSetFlags` changes how the context
    /// waits, but `cuDevicePrimaryCtxGetState` reports (and a released primary context
    /// keeps) the device's, which a session that went back to being alone showed as still
    /// blocking (session 25, `run.sh sharedflags`). That second call is best effort: the
    /// context's own flags are what the waits follow.
    fn set_current_sched(&mut self, bits: u32) -> R<u32> {
        let mut flags = 0u32;
        cu!(self.lib, cuCtxGetFlags(&mut flags))?;
        let new = (flags & !SCHED_MASK) | bits;
        cu!(self.lib, cuCtxSetFlags(new))?;
        if let Some(ctx) = self.h.contexts.get(&self.current).filter(|c| c.primary)
            && let Some(&cudev) = self.devices.get(ctx.dev)
        {
            // The device's own flags, not the context's: handed those, the setter left the
            // device's unchanged (session 26), likely refusing a bit only contexts carry.
            let (mut dev_flags, mut active) = (0u32, 0i32);
            let set = (|| {
                cu!(self.lib, cuDevicePrimaryCtxGetState(cudev, &mut dev_flags, &mut active))?;
                cu!(self.lib, cuDevicePrimaryCtxSetFlags_v2(cudev, (dev_flags & !SCHED_MASK) | bits))
            })();
            if let Err(e) = set {
                tracing::debug!("primary context scheduling not set as the device's: {e}");
            }
        }
        Ok(flags & SCHED_MASK)
    }

    /// While the GPU is shared, context `c` waits blocking (once), its own scheduling kept.
    fn block_if_shared(&mut self, c: u64) {
        if self.shared.as_ref().is_some_and(|m| !m.contains_key(&c))
            && let Ok(bits) = self.in_context(c, |s| s.set_current_sched(BLOCKING))
            && let Some(m) = self.shared.as_mut()
        {
            m.insert(c, bits);
        }
    }

    pub(super) fn ordinal(&self, dev: i32) -> R<usize> {
        self.device(dev)?;
        Ok(dev as usize)
    }

    pub(super) fn primary_retain(&mut self, dev: i32) -> R<u64> {
        let (d, cudev) = (self.ordinal(dev)?, self.device(dev)?);
        let mut c: CUcontext = null_mut();
        // `VGPU_SCHED` set: the scheduling flags before the context first becomes active.
        if sched(0) != 0
            && let Ok((flags, 0)) = self.primary_state(dev)
        {
            cu!(self.lib, cuDevicePrimaryCtxSetFlags_v2(cudev, sched(flags)))?;
        }
        cu!(self.lib, cuDevicePrimaryCtxRetain(&mut c, cudev))?;
        let c = c as u64;
        let e = self.h.primary_refs.entry(d).or_insert((c, 0));
        *e = (c, e.1 + 1);
        self.h.contexts.insert(c, Ctx { dev: d, primary: true });
        self.block_if_shared(c);
        Ok(c)
    }

    /// Releases only what this session retained; the last release resets the context, so
    /// what was made in it is forgotten.
    pub(super) fn primary_release(&mut self, dev: i32) -> R<()> {
        let (d, cudev) = (self.ordinal(dev)?, self.device(dev)?);
        let Some(&(c, n)) = self.h.primary_refs.get(&d) else {
            return Err(INVALID_CONTEXT);
        };
        if n == 1 {
            // The device's primary context keeps its flags past its last release: the
            // application's scheduling back first.
            self.unblock(c);
        }
        cu!(self.lib, cuDevicePrimaryCtxRelease_v2(cudev))?;
        if n > 1 {
            self.h.primary_refs.insert(d, (c, n - 1));
            return Ok(());
        }
        self.h.primary_refs.remove(&d);
        self.forget_context_resources(c);
        self.h.contexts.remove(&c);
        self.resync_current();
        Ok(())
    }

    /// Destroys everything made in the primary context; the context itself stays valid.
    pub(super) fn primary_reset(&mut self, dev: i32) -> R<()> {
        let (d, cudev) = (self.ordinal(dev)?, self.device(dev)?);
        cu!(self.lib, cuDevicePrimaryCtxReset_v2(cudev))?;
        if let Some(&(c, _)) = self.h.primary_refs.get(&d) {
            self.forget_context_resources(c);
        }
        Ok(())
    }

    /// While the GPU is shared, the scheduling the application asks for is kept for when
    /// this session is alone again, and the context goes on waiting blocking.
    pub(super) fn primary_set_flags(&mut self, dev: i32, flags: u32) -> R<()> {
        let (d, cudev) = (self.ordinal(dev)?, self.device(dev)?);
        let flags = match self.kept_sched(d) {
            Some(kept) => {
                *kept = flags & SCHED_MASK;
                (flags & !SCHED_MASK) | BLOCKING
            }
            None => sched(flags),
        };
        cu!(self.lib, cuDevicePrimaryCtxSetFlags_v2(cudev, flags))
    }

    /// The flags as the application set them (not the blocking waits of a shared GPU).
    pub(super) fn primary_state(&mut self, dev: i32) -> R<(u32, i32)> {
        let (d, cudev) = (self.ordinal(dev)?, self.device(dev)?);
        let (mut flags, mut active) = (0u32, 0i32);
        cu!(self.lib, cuDevicePrimaryCtxGetState(cudev, &mut flags, &mut active))?;
        if let Some(&mut bits) = self.kept_sched(d) {
            flags = (flags & !SCHED_MASK) | bits;
        }
        Ok((flags, active))
    }

    /// The application's scheduling of device `d`'s primary context, kept while the GPU is
    /// shared and the context waits blocking.
    fn kept_sched(&mut self, d: usize) -> Option<&mut u32> {
        let &(c, _) = self.h.primary_refs.get(&d)?;
        self.shared.as_mut()?.get_mut(&c)
    }

    /// `cuCtxCreate_v2`, or `cuCtxCreate_v4` without creation parameters where the driver
    /// no longer has the former. The new context becomes current, as in CUDA.
    pub(super) fn ctx_create(&mut self, flags: u32, dev: i32) -> R<u64> {
        let (d, cudev) = (self.ordinal(dev)?, self.device(dev)?);
        let mut c: CUcontext = null_mut();
        let flags = sched(flags);
        if self.lib.cuCtxCreate_v2.is_ok() {
            cu!(self.lib, cuCtxCreate_v2(&mut c, flags, cudev))?;
        } else {
            cu!(self.lib, cuCtxCreate_v4(&mut c, null_mut(), flags, cudev))?;
        }
        self.h.contexts.insert(c as u64, Ctx { dev: d, primary: false });
        self.resync_current();
        self.block_if_shared(c as u64);
        Ok(c as u64)
    }

    /// Primary contexts are released, not destroyed.
    pub(super) fn ctx_destroy(&mut self, ctx: u64) -> R<()> {
        let c = self.h.context(ctx)?;
        if self.h.contexts[&ctx].primary {
            return Err(INVALID_CONTEXT);
        }
        cu!(self.lib, cuCtxDestroy_v2(c))?;
        if let Some(m) = self.shared.as_mut() {
            m.remove(&ctx);
        }
        self.forget_context_resources(ctx);
        self.h.contexts.remove(&ctx);
        self.resync_current();
        Ok(())
    }

    pub(super) fn ctx_synchronize(&mut self) -> R<()> {
        cu!(self.lib, cuCtxSynchronize())
    }

    pub(super) fn ctx_set_limit(&mut self, limit: u32, value: u64) -> R<()> {
        cu!(self.lib, cuCtxSetLimit(CUlimit(limit), value as usize))
    }

    pub(super) fn ctx_get_limit(&mut self, limit: u32) -> R<u64> {
        let mut v = 0usize;
        cu!(self.lib, cuCtxGetLimit(&mut v, CUlimit(limit)))?;
        Ok(v as u64)
    }

    pub(super) fn stream_priority_range(&mut self) -> R<(i32, i32)> {
        let (mut least, mut greatest) = (0, 0);
        cu!(self.lib, cuCtxGetStreamPriorityRange(&mut least, &mut greatest))?;
        Ok((least, greatest))
    }

    pub(super) fn enable_peer(&mut self, peer: u64, flags: u32) -> R<()> {
        let p = self.h.context(peer)?;
        cu!(self.lib, cuCtxEnablePeerAccess(p, flags))
    }

    pub(super) fn disable_peer(&mut self, peer: u64) -> R<()> {
        let p = self.h.context(peer)?;
        cu!(self.lib, cuCtxDisablePeerAccess(p))
    }

    pub(super) fn can_access_peer(&mut self, dev: i32, peer: i32) -> R<i32> {
        let (a, b) = (self.device(dev)?, self.device(peer)?);
        let mut can = 0;
        cu!(self.lib, cuDeviceCanAccessPeer(&mut can, a, b))?;
        Ok(can)
    }
}
