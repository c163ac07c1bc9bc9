//! The driver's private tables NVIDIA's cuBLAS asks before its first GEMMs, through our
//! libcuda.so.1 loaded into this test's process, against the sim: the thread's context
//! (tools TLS, slot 2) is its current one; in the tools-context table (`21318C60…`) contexts
//! are numbered from 1 as `cuCtxGetId` numbers them, slot 51's object is the same for a context each time, and slot 39
//! reaches the server with the bytes it is to write into; the kernel-keys table
//! (`1734DC26…`) answers not supported in every slot.

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::c_void;

const TOOLS_CONTEXT: [u8; 16] = 0x21318C60_9714_3248_8CA6_41FF7324C8F2u128.to_be_bytes();
const TOOLS_TLS: [u8; 16] = 0x42D85A81_23F6_CB47_8298_F6E78A3AECDC_u128.to_be_bytes();
const KERNEL_KEYS: [u8; 16] = 0x1734DC26_800D_4745_8726_C0F1E7DD8BCA_u128.to_be_bytes();

/// The table `id` of the library's `cuGetExportTable`, as an array of addresses.
unsafe fn table_of(
    get: unsafe extern "C" fn(*mut *const c_void, *const CUuuid) -> CUresult,
    id: [u8; 16],
) -> *const usize {
    let id = CUuuid { bytes: id.map(|b| b as std::ffi::c_char) };
    let mut t: *const c_void = std::ptr::null();
    assert_eq!(unsafe { get(&mut t, &id) }, CUresult::CUDA_SUCCESS);
    t.cast()
}

#[test]
fn tools_context_table_answers_what_cublas_asks() {
    let p = InProcess::start();
    let primary = p.primary;
    unsafe {
        let create: unsafe extern "C" fn(*mut CUcontext, u32, CUdevice) -> CUresult = p.get(b"cuCtxCreate_v2");
        let set: unsafe extern "C" fn(CUcontext) -> CUresult = p.get(b"cuCtxSetCurrent");
        let table: unsafe extern "C" fn(*mut *const c_void, *const CUuuid) -> CUresult = p.get(b"cuGetExportTable");

        const OK: CUresult = CUresult::CUDA_SUCCESS;
        let mut other = std::ptr::null_mut();
        assert_eq!(create(&mut other, 0, 0), OK);
        assert_eq!(set(primary), OK);

        // What cuBLAS passes the tables below: the thread's context.
        let tls = table_of(table, TOOLS_TLS);
        type Thread = unsafe extern "C" fn(*mut CUcontext) -> CUresult;
        let thread: Thread = std::mem::transmute(*tls.add(2));
        let mut cur = std::ptr::null_mut();
        assert_eq!(thread(&mut cur), OK);
        assert_eq!(cur, primary);

        let t = table_of(table, TOOLS_CONTEXT);
        assert_eq!(*t, 93 * 8, "a size and 92 slots, as driver 580's");
        assert!((1..93).all(|i| *t.add(i) != 0), "every slot callable");

        type Number = unsafe extern "C" fn(CUcontext, *mut u64) -> CUresult;
        let number: Number = std::mem::transmute(*t.add(4));
        let mut n = u64::MAX;
        assert_eq!(number(primary, &mut n), OK);
        assert_eq!(n, 1);
        assert_eq!(number(other, &mut n), OK);
        assert_eq!(n, 2);
        assert_eq!(number(primary, &mut n), OK);
        assert_eq!(n, 1, "the same number each time");
        assert_eq!(number(std::ptr::null_mut(), &mut n), OK);
        assert_eq!(n, 0);

        // cuCtxGetId gives the same numbers; NULL asks for the current context's, and a
        // context made after one was destroyed gets a new number, even where the server
        // hands out the same handle again.
        let get_id: unsafe extern "C" fn(CUcontext, *mut u64) -> CUresult = p.get(b"cuCtxGetId");
        let destroy: unsafe extern "C" fn(CUcontext) -> CUresult = p.get(b"cuCtxDestroy_v2");
        assert_eq!(get_id(other, &mut n), OK);
        assert_eq!(n, 2);
        assert_eq!(get_id(std::ptr::null_mut(), &mut n), OK);
        assert_eq!(n, 1, "the current context is the primary one");
        let mut third = std::ptr::null_mut();
        assert_eq!(create(&mut third, 0, 0), OK);
        assert_eq!(destroy(third), OK);
        assert_eq!(get_id(third, &mut n), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(create(&mut third, 0, 0), OK);
        assert_eq!(get_id(third, &mut n), OK);
        assert_eq!(n, 4, "ids are not reused");
        assert_eq!(set(primary), OK);

        type Object = unsafe extern "C" fn(CUcontext, u64, *mut *const c_void) -> CUresult;
        type Value = unsafe extern "C" fn(CUcontext, *const c_void, *mut u64) -> CUresult;
        let object: Object = std::mem::transmute(*t.add(51));
        let value: Value = std::mem::transmute(*t.add(39));
        let (mut a, mut b, mut c) = (std::ptr::null(), std::ptr::null(), std::ptr::null());
        assert_eq!(object(primary, 0, &mut a), OK);
        assert_eq!(object(primary, 0, &mut b), OK);
        assert_eq!(object(other, 0, &mut c), OK);
        assert!(!a.is_null() && a == b && a != c, "one object a context");
        // The sim answers as the H100 did: 7 in the low four bytes, the rest as they were.
        let mut v = 0xAAAA_AAAA_0000_0000u64;
        assert_eq!(value(primary, a, &mut v), OK);
        assert_eq!(v, 0xAAAA_AAAA_0000_0007);
        assert_eq!(value(primary, 0x1234 as *const c_void, &mut v), CUresult::CUDA_ERROR_INVALID_HANDLE);
        // A selector the server would not vouch for.
        assert_eq!(object(primary, 1, &mut a), OK);
        assert_eq!(value(primary, a, &mut v), CUresult::CUDA_ERROR_NOT_SUPPORTED);

        // A slot nobody has seen called: not supported, not a crash.
        type Unseen = unsafe extern "C" fn(usize, usize, usize, usize) -> CUresult;
        let unseen: Unseen = std::mem::transmute(*t.add(10));
        assert_eq!(unseen(0, 0, 0, 0), CUresult::CUDA_ERROR_NOT_SUPPORTED);

        // Served (cuBLASLt crashes without it), every slot not supported.
        let k = table_of(table, KERNEL_KEYS);
        assert_eq!(*k, 17 * 8);
        for i in 1..17 {
            let f: Unseen = std::mem::transmute(*k.add(i));
            let (mut a, mut b) = (0usize, 0usize);
            assert_eq!(
                f(&mut a as *mut usize as usize, &mut b as *mut usize as usize, 0, 0),
                CUresult::CUDA_ERROR_NOT_SUPPORTED
            );
            assert_eq!((a, b), (0, 0), "slot {i} writes nothing");
        }
    }
}
