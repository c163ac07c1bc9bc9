//! `cuGetExportTable`: the driver's private tables, which NVIDIA's own runtime (`libcudart`,
//! and the static runtime that nvcc links into every program by default, PyTorch's and
//! CuPy's among them) asks for by UUID before its first call. Without them such a program
//! stops at its first CUDA call ("API call is not supported in the installed CUDA driver").
//!
//! The UUIDs, the slots the runtime calls and what they mean are public knowledge from
//! ZLUDA's `dark_api` (reverse engineered) and what NVIDIA's driver was seen to answer
//! (`scripts/gpu/darktrace.c`; see `docs/export-tables.md`). Each table is an array of
//! addresses; slot 0 of most holds the table's size in bytes. In the runtime's tables slots
//! nobody has seen called stay null; in cuBLAS's, each says once that it was called. What is
//! asked for beyond these is logged once by UUID and answered `CUDA_ERROR_INVALID_VALUE`, as
//! the driver answers an unknown UUID.

use crate::state::{R, entry, put};
use abi::cuda::*;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::c_void;
use std::os::raw::{c_int, c_uint};

type Slot = *const c_void;

/// A table of addresses the runtime reads and calls.
#[repr(transparent)]
struct Table<const N: usize>([Slot; N]);
// SAFETY: the tables are immutable addresses of functions and statics.
unsafe impl<const N: usize> Sync for Table<N> {}

impl<const N: usize> Table<N> {
    fn start(&'static self) -> Slot {
        self.0.as_ptr().cast()
    }
}

const fn size_of_table<const N: usize>() -> Slot {
    (N * std::mem::size_of::<Slot>()) as Slot
}

const fn slots<const N: usize>(sized: bool, set: &[(usize, Slot)]) -> Table<N> {
    let mut t = [std::ptr::null(); N];
    if sized {
        t[0] = size_of_table::<N>();
    }
    let mut i = 0;
    while i < set.len() {
        t[set[i].0] = set[i].1;
        i += 1;
    }
    Table(t)
}

// The UUIDs as the runtime passes them (bytes in the order of their written form).
const CUDART_INTERFACE: [u8; 16] = uuid(0x6BD5FB6C_5BF4_E74A_8987_D93912FD9DF9);
const TOOLS_TLS: [u8; 16] = uuid(0x42D85A81_23F6_CB47_8298_F6E78A3AECDC);
const TOOLS_RUNTIME_CALLBACK_HOOKS: [u8; 16] = uuid(0xA094798C_2E74_2E74_93F2_0800200C0A66);
const CONTEXT_LOCAL_STORAGE: [u8; 16] = uuid(0xC693336E_1121_DF11_A8C3_68F355D89593);
const CTX_CREATE_BYPASS: [u8; 16] = uuid(0x0CA50B8C_1004_929A_89A7_D0DF10E77286);
const HEAP_ACCESS: [u8; 16] = uuid(0x195BCBF4_D67D_024A_ACC5_1D29CEA631AE);
const DEVICE_EXTENDED_RT: [u8; 16] = uuid(0xB10541E1_F7C7_C74A_9F64_F223BE99F1E2);
const INTEGRITY_CHECK: [u8; 16] = uuid(0xD4082055_BDE6_704B_8D34_BA123C66E1F2);
const CONTEXT_CHECKS: [u8; 16] = uuid(0x263E8860_7CD2_6143_92F6_BBD5006DFA7E);
const TOOLS_CONTEXT: [u8; 16] = uuid(0x21318C60_9714_3248_8CA6_41FF7324C8F2);
const KERNEL_KEYS: [u8; 16] = uuid(0x1734DC26_800D_4745_8726_C0F1E7DD8BCA);
const MODULE_WALK: [u8; 16] = uuid(0x6E163FBE_B958_444D_835C_E182AFF1991E);

/// Tables the runtime asks for and does without: answered "no such table" without a word.
const DONE_WITHOUT: [[u8; 16]; 2] = [
    // Asked before cuInit; a driver that has it lets the runtime skip part of its start.
    uuid(0xF8CFF951_2146_8B4E_B9E2_FB469E7C0DD9),
    // NVRTC compiles NVVM IR through the driver where it has this; without it NVRTC
    // compiles by itself (CuPy's kernels and cuFFT's run so).
    uuid(0xDA9151D3_3AE6_CC41_A5C0_4F26D533E328),
];

const fn uuid(v: u128) -> [u8; 16] {
    v.to_be_bytes()
}

static CUDART: Table<13> = slots(
    true,
    &[
        (1, module_from_wrapper as Slot),
        (2, primary_context as Slot),
        (6, module_from_wrapper_ext as Slot),
        (7, nothing as Slot),
        (8, module_from_fatbin_ext as Slot),
        (12, compilers_loaded as Slot),
    ],
);
// cuBLAS asks slot 2 for the calling thread's context before its first kernel (and passes it
// to the tools-context table): its current one, as NVIDIA's driver answers.
static TOOLS: Table<4> =
    slots(true, &[(1, hooks_quiet::<101> as Slot), (2, thread_context as Slot), (3, hooks_quiet::<103> as Slot)]);
// The runtime calls slot 5 as it exits (with 3 and NULL) once a tool has registered, and
// slot 4 with an output; what they do for tools, vgpu has no tools for.
static HOOKS: Table<7> = slots(
    true,
    &[
        (1, hooks_quiet::<1> as Slot),
        (2, hooks_buffer_1 as Slot),
        (3, hooks_quiet::<3> as Slot),
        (4, hooks_quiet::<4> as Slot),
        (5, hooks_quiet::<5> as Slot),
        (6, hooks_buffer_2 as Slot),
    ],
);
// This one has no size slot.
static STORAGE: Table<4> =
    slots(false, &[(0, storage_put as Slot), (1, storage_delete as Slot), (2, storage_get as Slot)]);
static BYPASS: Table<2> = slots(true, &[(1, not_supported_3 as Slot)]);
static HEAP: Table<3> = slots(true, &[(1, not_supported_3 as Slot), (2, not_supported_2 as Slot)]);
static EXTENDED: Table<26> = slots(true, &[(5, not_supported_4 as Slot), (13, not_supported_2 as Slot)]);
static INTEGRITY: Table<3> = slots(true, &[(1, integrity_check as Slot), (2, integrity_enable as Slot)]);
static CHECKS: Table<4> = slots(true, &[(2, context_check as Slot), (3, check_3 as Slot)]);
// NVIDIA's cuBLAS(Lt) asks slot 4 before choosing a GEMM algorithm, and 51 and 39 in some
// programs; the other 89 slots nobody has seen called: each says so, once, by number.
static TOOLS_CONTEXT_TABLE: Table<93> = unseen_slots::<93, 0x21318C60>(slots(
    true,
    &[(4, context_number as Slot), (39, tools_value as Slot), (51, tools_object as Slot)],
));
// cuBLASLt asks slot 4 for two buffers and slot 13 to transform what it wrote into them
// before some tensor-core GEMMs; without the table it crashes. Every slot answers not
// supported, so that it gives up on those kernels instead; the two it is known to ask say
// so only in a trace (every PyTorch run asks).
static KERNEL_KEYS_TABLE: Table<17> = unseen_slots::<17, 0x1734DC26>(slots(
    true,
    &[(4, refused::<0x1734DC26, 4> as Slot), (13, refused::<0x1734DC26, 13> as Slot)],
));
// cuFFT finds the kernel it compiled (through NVRTC) and loaded by walking the module's
// functions with slot 7; without the table it fails (CUFFT_INTERNAL_ERROR). 98 slots, as
// driver 580's; nobody has been seen calling the others.
static MODULE_WALK_TABLE: Table<99> = unseen_slots::<99, 0x6E163FBE>(slots(true, &[(7, each_function as Slot)]));

fn table(id: &[u8; 16]) -> Option<Slot> {
    Some(match *id {
        CUDART_INTERFACE => CUDART.start(),
        TOOLS_TLS => TOOLS.start(),
        TOOLS_RUNTIME_CALLBACK_HOOKS => HOOKS.start(),
        CONTEXT_LOCAL_STORAGE => STORAGE.start(),
        CTX_CREATE_BYPASS => BYPASS.start(),
        HEAP_ACCESS => HEAP.start(),
        DEVICE_EXTENDED_RT => EXTENDED.start(),
        INTEGRITY_CHECK => INTEGRITY.start(),
        CONTEXT_CHECKS => CHECKS.start(),
        TOOLS_CONTEXT => TOOLS_CONTEXT_TABLE.start(),
        KERNEL_KEYS => KERNEL_KEYS_TABLE.start(),
        MODULE_WALK => MODULE_WALK_TABLE.start(),
        _ => return None,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetExportTable(out: *mut *const c_void, id: *const CUuuid) -> R {
    entry(|| {
        if out.is_null() || id.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let id: [u8; 16] = unsafe { std::ptr::read_unaligned(id.cast()) };
        client::trace_note(|| format!("cuGetExportTable {}", hex(&id)));
        match table(&id) {
            Some(t) => unsafe { put(out, t) },
            None if DONE_WITHOUT.contains(&id) => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
            None => {
                let name = format!("cuGetExportTable({})", hex(&id));
                shim_support::log_once!(&name, "vgpu: {name}: an export table vgpu does not have");
                Err(CUresult::CUDA_ERROR_INVALID_VALUE)
            }
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

// ---------- the runtime's interface: modules from its registered fat binaries

unsafe extern "C" fn module_from_wrapper(m: *mut CUmodule, wrapper: *const c_void) -> R {
    unsafe { crate::module::cuModuleLoadData(m, wrapper) }
}

unsafe extern "C" fn module_from_wrapper_ext(
    m: *mut CUmodule,
    wrapper: *const c_void,
    a3: *mut c_void,
    a4: *mut c_void,
    a5: c_uint,
) -> R {
    unsafe { load_plain("module_from_wrapper_ext", m, wrapper, [a3, a4], a5) }
}

unsafe extern "C" fn module_from_fatbin_ext(
    fatbin: *const c_void,
    m: *mut CUmodule,
    a3: *mut c_void,
    a4: *mut c_void,
    a5: c_uint,
) -> R {
    unsafe { load_plain("module_from_fatbin_ext", m, fatbin, [a3, a4], a5) }
}

/// The extended loads as the runtime calls them: the extra arguments empty. Anything else is
/// a form nobody has documented.
unsafe fn load_plain(what: &str, m: *mut CUmodule, image: *const c_void, extra: [*mut c_void; 2], flags: c_uint) -> R {
    if extra.iter().any(|p| !p.is_null()) || flags != 0 {
        return unseen(what);
    }
    unsafe { crate::module::cuModuleLoadData(m, image) }
}

/// The device's primary context, for the runtime to make current.
unsafe extern "C" fn primary_context(ctx: *mut CUcontext, dev: CUdevice) -> R {
    client::trace_note(|| format!("export table: primary context of device {dev}"));
    unsafe { crate::context::cuDevicePrimaryCtxRetain(ctx, dev) }
}

extern "C" fn nothing(_: usize) {}

/// The runtime asks the driver to load its JIT compilers: the server's driver has its own.
extern "C" fn compilers_loaded() -> R {
    CUresult::CUDA_SUCCESS
}

/// Arguments in a form nobody has documented: say so once, answer not supported.
/// A slot whose callers are known to do without it: not supported, said only in a trace.
extern "C" fn refused<const TABLE: u32, const SLOT: usize>(a: usize, b: usize) -> R {
    client::trace_note(|| format!("export table: {TABLE:08X}[{SLOT}] ({a:#x}, {b:#x}): not supported"));
    CUresult::CUDA_ERROR_NOT_SUPPORTED
}

fn unseen(what: &str) -> R {
    client::trace_note(|| format!("export table: {what}: not supported"));
    shim_support::log_once!(what, "vgpu: export table entry {what} called with arguments vgpu does not know");
    CUresult::CUDA_ERROR_NOT_SUPPORTED
}

// ---------- tools' callback hooks: buffers the runtime writes into

struct Buffer<const N: usize>(std::cell::UnsafeCell<[u8; N]>);
// SAFETY: only the runtime writes these, as it writes the real driver's.
unsafe impl<const N: usize> Sync for Buffer<N> {}
static HOOKS_1: Buffer<1024> = Buffer(std::cell::UnsafeCell::new([0; 1024]));
static HOOKS_2: Buffer<14> = Buffer(std::cell::UnsafeCell::new([0; 14]));

unsafe extern "C" fn hooks_buffer_1(p: *mut *mut c_void, len: *mut usize) {
    unsafe { give(&HOOKS_1, p, len) }
}
unsafe extern "C" fn hooks_buffer_2(p: *mut *mut c_void, len: *mut usize) {
    unsafe { give(&HOOKS_2, p, len) }
}
/// A tools entry nobody documented: nothing to do, and success (its caller ignores what it
/// returns at exit). Traced with its slot (tools-TLS slots count from 101).
extern "C" fn hooks_quiet<const SLOT: usize>(a: usize, b: usize) -> R {
    client::trace_note(|| format!("export table: tools hook {SLOT} ({a:#x}, {b:#x})"));
    CUresult::CUDA_SUCCESS
}

/// The calling thread's context as tools see it: its current one.
unsafe extern "C" fn thread_context(out: *mut *mut c_void) -> R {
    if out.is_null() {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    let mut cur: CUcontext = std::ptr::null_mut();
    let r = unsafe { crate::context::cuCtxGetCurrent(&mut cur) };
    client::trace_note(|| format!("export table: thread's context {cur:?}"));
    unsafe { *out = cur.cast() };
    r
}

unsafe fn give<const N: usize>(b: &'static Buffer<N>, p: *mut *mut c_void, len: *mut usize) {
    if !p.is_null() {
        unsafe { *p = b.0.get().cast() };
    }
    if !len.is_null() {
        unsafe { *len = N };
    }
}

// ---------- context-local storage: the runtime's state per context, kept in this process

type Dtor = Option<unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void)>;

/// (context, key) -> (value, destructor). Addresses as integers: the map only keeps them.
type Storage = Mutex<HashMap<(usize, usize), (usize, Dtor)>>;

fn storage() -> &'static Storage {
    static S: std::sync::OnceLock<Storage> = std::sync::OnceLock::new();
    S.get_or_init(Default::default)
}

/// The context named, or the current one for NULL.
fn context_or_current(ctx: CUcontext) -> Result<usize, R> {
    if !ctx.is_null() {
        return Ok(ctx as usize);
    }
    let mut cur: CUcontext = std::ptr::null_mut();
    let r = unsafe { crate::context::cuCtxGetCurrent(&mut cur) };
    if r != CUresult::CUDA_SUCCESS {
        return Err(r);
    }
    if cur.is_null() { Err(CUresult::CUDA_ERROR_INVALID_CONTEXT) } else { Ok(cur as usize) }
}

unsafe extern "C" fn storage_put(ctx: CUcontext, key: *mut c_void, value: *mut c_void, dtor: Dtor) -> R {
    entry(|| {
        let ctx = context_or_current(ctx)?;
        storage().lock().insert((ctx, key as usize), (value as usize, dtor));
        Ok(())
    })
}

unsafe extern "C" fn storage_delete(ctx: CUcontext, key: *mut c_void) -> R {
    entry(|| {
        let ctx = context_or_current(ctx)?;
        storage().lock().remove(&(ctx, key as usize));
        Ok(())
    })
}

unsafe extern "C" fn storage_get(value: *mut *mut c_void, ctx: CUcontext, key: *mut c_void) -> R {
    entry(|| {
        let ctx = context_or_current(ctx)?;
        let v = storage().lock().get(&(ctx, key as usize)).map(|e| e.0);
        match v {
            Some(v) => unsafe { put(value, v as *mut c_void) },
            None => Err(CUresult::CUDA_ERROR_INVALID_HANDLE),
        }
    })
}

/// A context is going away (destroyed, or a primary context reset): the runtime's
/// destructors for what it stored there run, as the driver runs them.
pub fn context_gone(ctx: CUcontext) {
    let gone: Vec<_> = {
        let mut s = storage().lock();
        let keys: Vec<_> = s.keys().filter(|k| k.0 == ctx as usize).copied().collect();
        keys.into_iter().filter_map(|k| s.remove(&k).map(|v| (k.1, v))).collect()
    };
    for (key, (value, dtor)) in gone {
        if let Some(f) = dtor {
            unsafe { f(ctx, key as *mut c_void, value as *mut c_void) };
        }
    }
}

// ---------- what vgpu does not offer: not supported, as a driver without the feature says

extern "C" fn not_supported_2(_: usize, _: usize) -> R {
    unseen("a heap or device-extended entry")
}
extern "C" fn not_supported_3(_: usize, _: usize, _: usize) -> R {
    unseen("a context-bypass or heap entry")
}
extern "C" fn not_supported_4(_: usize, _: usize, _: usize, _: usize) -> R {
    unseen("a device-extended entry")
}

/// Fill a table's empty slots with [`unseen_slot`], each knowing its number.
const fn unseen_slots<const N: usize, const TABLE: u32>(mut t: Table<N>) -> Table<N> {
    macro_rules! each {
        ($($i:literal)*) => {
            $(if $i < N && t.0[$i].is_null() {
                t.0[$i] = unseen_slot::<TABLE, $i> as Slot;
            })*
        };
    }
    each!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
          33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
          62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90
          91 92 93 94 95 96 97 98 99);
    t
}

/// A slot of a table whose meaning is not known, called: its table, number and first arguments
/// said once, not supported.
extern "C" fn unseen_slot<const TABLE: u32, const SLOT: usize>(a: usize, b: usize, c: usize, d: usize) -> R {
    let name = format!("{TABLE:08X}[{SLOT}]");
    client::trace_note(|| format!("export table: {name} ({a:#x}, {b:#x}, {c:#x}, {d:#x})"));
    shim_support::log_once!(
        &name,
        "vgpu: export table slot {name}, which vgpu does not know, was called: not supported"
    );
    CUresult::CUDA_ERROR_NOT_SUPPORTED
}

// ---------- the module walk: how cuFFT finds the kernel it loaded

/// What slot 7 calls for each function: the caller's data, the driver's function object,
/// the function's name, two zeros, the module (as NVIDIA's driver was seen to call it).
type EachFunction =
    unsafe extern "C" fn(*mut c_void, *const c_void, *const std::ffi::c_char, usize, usize, CUmodule) -> c_int;

/// Slot 7: calls `each` for every function of `module`, stopping at the first that answers
/// non-zero, and answers how many it called. Natively cuFFT's modules hold one kernel, whose
/// callback answered 0, and the slot 1: what the driver does with more, or with a non-zero
/// answer, was not seen. The callback keeps the function object it is handed and cuFFT
/// later launches it, so it gets a stand-in that `module::function_of` knows.
unsafe extern "C" fn each_function(
    _ctx: CUcontext,
    module: CUmodule,
    each: Option<EachFunction>,
    data: *mut c_void,
) -> R {
    client::trace_note(|| format!("export table: each function of module {module:?}"));
    let mut called = 0;
    let r = entry(|| {
        let each = each.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        for (name, h) in crate::module::functions_of(module as u64)? {
            // The name the stand-in holds, which lives as long as it.
            let (object, name) = crate::module::stand_in(h, &name, module as u64);
            called += 1;
            if unsafe { each(data, object, name, 0, 0, module) } != 0 {
                break;
            }
        }
        Ok(())
    });
    if r == CUresult::CUDA_SUCCESS { CUresult(called) } else { r }
}

// ---------- the tools-context table: what NVIDIA's cuBLAS asks of a context

/// A context's number: the id `cuCtxGetId` gives (both count from 1 in the order contexts
/// were made; natively the first context's number here was 1); 0 for none.
unsafe extern "C" fn context_number(ctx: CUcontext, out: *mut u64) -> R {
    client::trace_note(|| format!("export table: number of context {ctx:?}"));
    entry(|| {
        let n = if ctx.is_null() { 0 } else { crate::context::id_of(ctx)? };
        unsafe { put(out, n) }
    })
}

/// What slot 51 hands out: a token naming the context and the selector it was asked with,
/// one per pair, kept for the process's life (the driver's object lives as long as its
/// context). Slot 39 asks the server's driver through it.
struct ToolsObject {
    ctx: u64,
    selector: u64,
}

fn tools_objects() -> &'static Mutex<Vec<&'static ToolsObject>> {
    static O: Mutex<Vec<&'static ToolsObject>> = Mutex::new(Vec::new());
    &O
}

unsafe extern "C" fn tools_object(ctx: CUcontext, selector: u64, out: *mut *const c_void) -> R {
    client::trace_note(|| format!("export table: tools object of context {ctx:?}, selector {selector}"));
    entry(|| {
        let ctx = context_or_current(ctx)? as u64;
        let mut all = tools_objects().lock();
        let found = all.iter().find(|o| o.ctx == ctx && o.selector == selector).copied();
        let o = found.unwrap_or_else(|| {
            let o: &'static ToolsObject = Box::leak(Box::new(ToolsObject { ctx, selector }));
            all.push(o);
            o
        });
        unsafe { put(out, (o as *const ToolsObject).cast()) }
    })
}

unsafe extern "C" fn tools_value(_ctx: CUcontext, object: *const c_void, out: *mut [u8; 8]) -> R {
    entry(|| {
        let o = tools_objects().lock().iter().find(|o| std::ptr::eq(**o as *const ToolsObject, object.cast())).copied();
        let o = o.ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        if out.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let t = crate::route::Target { server: crate::route::server_of(o.ctx)?, ctx: o.ctx };
        let had = unsafe { std::ptr::read_unaligned(out) };
        let v = crate::route::call(t, &protocol::ops::tools_context_query { selector: o.selector, out: had })?;
        client::trace_note(|| format!("export table: tools value of context {:#x}: {v:02x?}", o.ctx));
        unsafe { std::ptr::write_unaligned(out, v) };
        Ok(())
    })
}

// ---------- checks the runtime makes of the driver

/// The context check: no flag set (what the real driver answers for an ordinary context).
unsafe extern "C" fn context_check(ctx: CUcontext, flags: *mut u32, _out: *mut *const c_void) -> R {
    client::trace_note(|| format!("export table: context check of {ctx:?}"));
    if !flags.is_null() {
        unsafe { *flags = 0 };
    }
    CUresult::CUDA_SUCCESS
}
extern "C" fn check_3() -> u32 {
    client::trace_note(|| "export table: check 3".into());
    0
}

/// The runtime checks that it talks to NVIDIA's driver: it sends its version and the time and
/// compares the answer with what it computes itself, an HMAC-MD2 over this process, the
/// tables' addresses and the devices (the `integrity` module).
unsafe extern "C" fn integrity_check(version: u32, unix_seconds: u64, out: *mut [u64; 2]) -> R {
    client::trace_note(|| format!("export table: integrity check, runtime version {version}"));
    entry(|| {
        if out.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut driver = 0;
        check(unsafe { crate::device::cuDriverGetVersion(&mut driver) })?;
        let mut n = 0;
        check(unsafe { crate::device::cuDeviceGetCount(&mut n) })?;
        let mut devices = Vec::with_capacity(n.max(0) as usize);
        for d in 0..n {
            let mut id: CUuuid = unsafe { std::mem::zeroed() };
            check(unsafe { crate::device::cuDeviceGetUuid_v2(&mut id, d) })?;
            let attr = |a| {
                let mut v = 0;
                check(unsafe { crate::device::cuDeviceGetAttribute(&mut v, a, d) }).map(|_| v)
            };
            devices.push(crate::integrity::Device {
                uuid: unsafe { std::mem::transmute::<[std::os::raw::c_char; 16], [u8; 16]>(id.bytes) },
                pci_domain: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
                pci_bus: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
                pci_device: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?,
            });
        }
        let caller = crate::integrity::Caller {
            driver_version: driver as u32,
            version,
            pid: std::process::id(),
            // The runtime hashes the low half of its pthread_t.
            thread: unsafe { libc::pthread_self() } as u32,
            cudart_table: CUDART.start() as u64,
            integrity_table: INTEGRITY.start() as u64,
            function: INTEGRITY.0[1] as u64,
            unix_seconds,
        };
        let h = crate::integrity::answer(&caller, &devices);
        unsafe { put(out, h) }
    })
}

/// The third slot takes a flag, and the driver's always succeeds.
extern "C" fn integrity_enable(_: c_uint) -> R {
    CUresult::CUDA_SUCCESS
}

fn check(r: R) -> Result<(), R> {
    if r == CUresult::CUDA_SUCCESS { Ok(()) } else { Err(r) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_found_by_uuid_with_their_sizes() {
        let mut t: *const c_void = std::ptr::null();
        let id =
            CUuuid { bytes: unsafe { std::mem::transmute::<[u8; 16], [std::os::raw::c_char; 16]>(CUDART_INTERFACE) } };
        assert_eq!(unsafe { cuGetExportTable(&mut t, &id) }, CUresult::CUDA_SUCCESS);
        assert_eq!(unsafe { *t.cast::<usize>() }, 13 * 8, "slot 0 is the table's size in bytes");
        assert_eq!(CUDART_INTERFACE[..4], [0x6B, 0xD5, 0xFB, 0x6C], "bytes in written order");
        let unknown = CUuuid { bytes: [1; 16] };
        assert_eq!(unsafe { cuGetExportTable(&mut t, &unknown) }, CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(unsafe { cuGetExportTable(std::ptr::null_mut(), &id) }, CUresult::CUDA_ERROR_INVALID_VALUE);
        assert!(STORAGE.0[0] == storage_put as Slot, "the storage table has no size slot");
    }

    #[test]
    fn context_storage_keeps_values_per_context_and_runs_destructors() {
        static DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        unsafe extern "C" fn dtor(_: CUcontext, _: *mut c_void, v: *mut c_void) {
            DROPPED.store(v as usize, std::sync::atomic::Ordering::SeqCst);
        }
        let (a, b) = (0x1000 as CUcontext, 0x2000 as CUcontext);
        let key = 0x77 as *mut c_void;
        unsafe {
            assert_eq!(storage_put(a, key, 0x5 as *mut c_void, Some(dtor)), CUresult::CUDA_SUCCESS);
            let mut v = std::ptr::null_mut();
            assert_eq!(storage_get(&mut v, a, key), CUresult::CUDA_SUCCESS);
            assert_eq!(v as usize, 5);
            assert_eq!(storage_get(&mut v, b, key), CUresult::CUDA_ERROR_INVALID_HANDLE, "another context's");
            context_gone(a);
            assert_eq!(DROPPED.load(std::sync::atomic::Ordering::SeqCst), 5);
            assert_eq!(storage_get(&mut v, a, key), CUresult::CUDA_ERROR_INVALID_HANDLE, "gone with its context");
            assert_eq!(storage_put(b, key, 0x6 as *mut c_void, None), CUresult::CUDA_SUCCESS);
            assert_eq!(storage_delete(b, key), CUresult::CUDA_SUCCESS);
            assert_eq!(storage_get(&mut v, b, key), CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
    }
}
