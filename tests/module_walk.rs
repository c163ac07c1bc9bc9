//! A module's functions, as cuFFT finds the kernel it compiled: through the driver's private
//! table `6E163FBE…`, slot 7, which calls back for each function with an object the driver
//! made for it, and through the public `cuModuleGetFunctionCount` and
//! `cuModuleEnumerateFunctions`. Our libcuda.so.1 in this test's process, against the sim
//! (which reads a PTX image's `.entry` names).

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::{CStr, c_char, c_int, c_void};

const MODULE_WALK: [u8; 16] = 0x6E163FBE_B958_444D_835C_E182AFF1991E_u128.to_be_bytes();
const PTX: &[u8] = b".version 8.0\n.target sm_90\n.address_size 64\n\
    .visible .entry first_kernel()\n{\n ret;\n}\n\
    .visible .entry _Z6secondPf(\n .param .u64 p\n)\n{\n ret;\n}\n\0";

/// What the callback saw: (object, name read through the object, name argument, module).
static SEEN: std::sync::Mutex<Vec<(usize, String, String, usize)>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" fn record(
    data: *mut c_void,
    object: *const c_void,
    name: *const c_char,
    _: usize,
    _: usize,
    module: CUmodule,
) -> c_int {
    // cuFFT's callback keeps the object it is handed in its data and reads the name at +8.
    let by_object = unsafe { CStr::from_ptr(*(object as *const *const c_char).add(1)) };
    let arg = unsafe { CStr::from_ptr(name) };
    SEEN.lock().unwrap().push((
        object as usize,
        by_object.to_string_lossy().into(),
        arg.to_string_lossy().into(),
        module as usize,
    ));
    unsafe { *(data as *mut *const c_void) = object };
    unsafe { *(data as *const c_int).add(2) }
}

#[test]
fn module_functions_are_walked_and_their_stand_ins_work_as_functions() {
    let p = InProcess::start();
    const OK: CUresult = CUresult::CUDA_SUCCESS;
    unsafe {
        let load: unsafe extern "C" fn(*mut CUmodule, *const c_void) -> CUresult = p.get(b"cuModuleLoadData");
        let count: unsafe extern "C" fn(*mut u32, CUmodule) -> CUresult = p.get(b"cuModuleGetFunctionCount");
        let list: unsafe extern "C" fn(*mut CUfunction, u32, CUmodule) -> CUresult =
            p.get(b"cuModuleEnumerateFunctions");
        let param: unsafe extern "C" fn(CUfunction, usize, *mut usize, *mut usize) -> CUresult =
            p.get(b"cuFuncGetParamInfo");
        let table: unsafe extern "C" fn(*mut *const c_void, *const CUuuid) -> CUresult = p.get(b"cuGetExportTable");

        let mut m = std::ptr::null_mut();
        assert_eq!(load(&mut m, PTX.as_ptr().cast()), OK);
        let mut n = 0;
        assert_eq!(count(&mut n, m), OK);
        assert_eq!(n, 2);
        let mut fs = [std::ptr::null_mut(); 3];
        assert_eq!(list(fs.as_mut_ptr(), 3, m), OK);
        assert!(!fs[0].is_null() && !fs[1].is_null() && fs[2].is_null(), "two functions: {fs:?}");
        let mut one = [std::ptr::null_mut(); 1];
        assert_eq!(list(one.as_mut_ptr(), 1, m), OK, "room for one takes the first");

        let id = CUuuid { bytes: MODULE_WALK.map(|b| b as c_char) };
        let mut t: *const usize = std::ptr::null();
        assert_eq!(table(&mut t as *mut _ as *mut *const c_void, &id), OK);
        assert_eq!(*t, 99 * 8, "a size and 98 slots, as driver 580's");
        type Walk = unsafe extern "C" fn(CUcontext, CUmodule, *const c_void, *mut c_void) -> CUresult;
        let walk: Walk = std::mem::transmute(*t.add(7));

        // cuFFT's data: where the callback puts the object, then (here) what it answers.
        let mut data: [usize; 2] = [0, 0];
        assert_eq!(walk(p.primary, m, record as *const c_void, data.as_mut_ptr().cast()), CUresult(2));
        let seen = std::mem::take(&mut *SEEN.lock().unwrap());
        let names: Vec<_> = seen.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(names, ["first_kernel", "_Z6secondPf"]);
        assert!(seen.iter().all(|s| s.1 == s.2 && s.3 == m as usize), "{seen:?}");
        assert_eq!(data[0], seen[1].0, "the callback kept the last object");

        // The object stands for the function: the driver knows it (no parameters: index 0 is
        // past the end), where a pointer it never gave out is no function at all.
        let object = data[0] as CUfunction;
        let (mut off, mut size) = (0, 0);
        assert_eq!(param(fs[0], 0, &mut off, &mut size), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(param(object, 0, &mut off, &mut size), CUresult::CUDA_ERROR_INVALID_VALUE);
        let bogus = data.as_mut_ptr() as CUfunction;
        assert_eq!(param(bogus, 0, &mut off, &mut size), CUresult::CUDA_ERROR_INVALID_HANDLE);

        // Its name, through the object and through the handle, as cuFFT asks for it.
        let get_name: unsafe extern "C" fn(*mut *const c_char, CUfunction) -> CUresult = p.get(b"cuFuncGetName");
        let mut n: *const c_char = std::ptr::null();
        assert_eq!(get_name(&mut n, object), OK);
        assert_eq!(CStr::from_ptr(n).to_str().unwrap(), "_Z6secondPf");
        assert_eq!(get_name(&mut n, fs[0]), OK);
        assert_eq!(CStr::from_ptr(n).to_str().unwrap(), "first_kernel");
        assert_eq!(get_name(&mut n, bogus), CUresult::CUDA_ERROR_INVALID_HANDLE);

        // The same function gets the same object; a non-zero answer stops the walk.
        data[1] = 1;
        assert_eq!(walk(p.primary, m, record as *const c_void, data.as_mut_ptr().cast()), CUresult(1));
        let again = std::mem::take(&mut *SEEN.lock().unwrap());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, seen[0].0);
        assert_eq!(walk(p.primary, m, std::ptr::null(), data.as_mut_ptr().cast()), CUresult::CUDA_ERROR_INVALID_VALUE);
    }
}
