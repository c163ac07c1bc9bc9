//! JIT linking (`cuLink*`) and JIT options (`cuModuleLoadDataEx`) through our libcuda.so.1
//! in this test's process, against the sim. (A test process holds one `InProcess` library:
//! hence one test in a file of its own.)

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::{c_char, c_void};

const PTX: &[u8] = b".version 8.0\n.target sm_90\n.address_size 64\n\
    .visible .entry first_kernel()\n{\n ret;\n}\n\
    .visible .entry _Z6secondPf(\n .param .u64 p\n)\n{\n ret;\n}\n\0";

/// JIT linking as numba does it: inputs from memory and from a file, the linked image loaded
/// as any image (the sim links PTX by putting the inputs one after another).
#[test]
fn linked_images_come_back_and_load() {
    let p = InProcess::start();
    const OK: CUresult = CUresult::CUDA_SUCCESS;
    type Create = unsafe extern "C" fn(u32, *mut CUjit_option, *mut *mut c_void, *mut CUlinkState) -> CUresult;
    type AddData = unsafe extern "C" fn(
        CUlinkState,
        CUjitInputType,
        *mut c_void,
        usize,
        *const c_char,
        u32,
        *mut CUjit_option,
        *mut *mut c_void,
    ) -> CUresult;
    type AddFile = unsafe extern "C" fn(
        CUlinkState,
        CUjitInputType,
        *const c_char,
        u32,
        *mut CUjit_option,
        *mut *mut c_void,
    ) -> CUresult;
    unsafe {
        let create: Create = p.get(b"cuLinkCreate_v2");
        let add: AddData = p.get(b"cuLinkAddData_v2");
        let add_file: AddFile = p.get(b"cuLinkAddFile_v2");
        let complete: unsafe extern "C" fn(CUlinkState, *mut *mut c_void, *mut usize) -> CUresult =
            p.get(b"cuLinkComplete");
        let destroy: unsafe extern "C" fn(CUlinkState) -> CUresult = p.get(b"cuLinkDestroy");
        let load: unsafe extern "C" fn(*mut CUmodule, *const c_void) -> CUresult = p.get(b"cuModuleLoadData");
        let count: unsafe extern "C" fn(*mut u32, CUmodule) -> CUresult = p.get(b"cuModuleGetFunctionCount");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("more.ptx");
        std::fs::write(&file, b".version 8.0\n.target sm_90\n.visible .entry third()\n{\n ret;\n}\n").unwrap();
        let file = std::ffi::CString::new(file.to_str().unwrap()).unwrap();

        let mut link = std::ptr::null_mut();
        assert_eq!(create(0, std::ptr::null_mut(), std::ptr::null_mut(), &mut link), OK);
        let ptx = PTX.to_vec();
        let (none, nothing) = (std::ptr::null_mut(), std::ptr::null_mut());
        let kind = CUjitInputType::CU_JIT_INPUT_PTX;
        assert_eq!(add(link, kind, ptx.as_ptr() as *mut c_void, ptx.len(), c"a.ptx".as_ptr(), 0, none, nothing), OK);
        assert_eq!(add_file(link, kind, file.as_ptr(), 0, none, nothing), OK);
        let missing = c"/nonexistent/x.ptx";
        assert_eq!(add_file(link, kind, missing.as_ptr(), 0, none, nothing), CUresult::CUDA_ERROR_FILE_NOT_FOUND);
        let (mut image, mut size) = (std::ptr::null_mut(), 0usize);
        assert_eq!(complete(link, &mut image, &mut size), OK);
        assert!(size > PTX.len() && !image.is_null());
        let mut m = std::ptr::null_mut();
        assert_eq!(load(&mut m, image), OK);
        let mut n = 0;
        assert_eq!(count(&mut n, m), OK);
        assert_eq!(n, 3, "the first input's two kernels and the file's one");
        assert_eq!(destroy(link), OK);
        assert_eq!(destroy(link), CUresult::CUDA_ERROR_INVALID_HANDLE, "destroyed once");

        // numba's options: both logs and verbose output. The link's logs are written during
        // the calls on it; an input's compile error lands in its error log.
        let mut info = [0xffu8; 256];
        let mut error = [0xffu8; 256];
        let mut opts = [
            CUjit_option::CU_JIT_INFO_LOG_BUFFER,
            CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            CUjit_option::CU_JIT_LOG_VERBOSE,
        ];
        let logs = |info: &mut [u8; 256], error: &mut [u8; 256]| -> [*mut c_void; 5] {
            [
                info.as_mut_ptr().cast(),
                std::ptr::without_provenance_mut(256),
                error.as_mut_ptr().cast(),
                std::ptr::without_provenance_mut(256),
                std::ptr::without_provenance_mut(1),
            ]
        };
        let text = |b: &[u8]| std::ffi::CStr::from_bytes_until_nul(b).unwrap().to_str().unwrap().to_owned();
        let mut vals = logs(&mut info, &mut error);
        let mut link = std::ptr::null_mut();
        assert_eq!(create(5, opts.as_mut_ptr(), vals.as_mut_ptr(), &mut link), OK);
        let bad = b".target sm_90\n.visible .entry broken()\n{\n ret;\n}\n\0".to_vec();
        let r = add(link, kind, bad.as_ptr() as *mut c_void, bad.len(), c"bad.ptx".as_ptr(), 0, none, nothing);
        assert_eq!(r, CUresult::CUDA_ERROR_INVALID_PTX);
        assert!(text(&error).starts_with("bad.ptx: ptxas fatal"), "{}", text(&error));
        assert_eq!(vals[3] as usize, text(&error).len(), "the error log's length written back");
        assert_eq!(vals[2], error.as_mut_ptr().cast(), "the buffer's pointer left alone");
        assert_eq!(add(link, kind, ptx.as_ptr() as *mut c_void, ptx.len(), c"a.ptx".as_ptr(), 0, none, nothing), OK);
        assert_eq!(complete(link, &mut image, &mut size), OK);
        assert_eq!(text(&info), "sim: linked 1 inputs");
        assert_eq!(destroy(link), OK);

        // A load's logs, when it fails (where numba reads them) and when it loads.
        type LoadEx =
            unsafe extern "C" fn(*mut CUmodule, *const c_void, u32, *mut CUjit_option, *mut *mut c_void) -> CUresult;
        let load_ex: LoadEx = p.get(b"cuModuleLoadDataEx");
        let (mut info, mut error) = ([0xffu8; 256], [0xffu8; 256]);
        let mut vals = logs(&mut info, &mut error);
        let r = load_ex(&mut m, bad.as_ptr().cast(), 5, opts.as_mut_ptr(), vals.as_mut_ptr());
        assert_eq!(r, CUresult::CUDA_ERROR_INVALID_PTX);
        assert_eq!(text(&error), "ptxas fatal: PTX without a .version directive");
        assert_eq!(text(&info), "");
        let mut vals = logs(&mut info, &mut error);
        assert_eq!(load_ex(&mut m, PTX.as_ptr().cast(), 5, opts.as_mut_ptr(), vals.as_mut_ptr()), OK);
        assert_eq!(text(&info), "sim: loaded a module of 2 functions");
        assert_eq!(text(&error), "");
        // A log larger than its buffer is cut, with its NUL.
        let mut small = [0xffu8; 8];
        let mut vals = logs(&mut info, &mut error);
        vals[0] = small.as_mut_ptr().cast();
        vals[1] = std::ptr::without_provenance_mut(8);
        assert_eq!(load_ex(&mut m, PTX.as_ptr().cast(), 5, opts.as_mut_ptr(), vals.as_mut_ptr()), OK);
        assert_eq!(&small, b"sim: lo\0");
        // Addresses of the application's symbols cannot be forwarded.
        let mut sym = [CUjit_option::CU_JIT_GLOBAL_SYMBOL_ADDRESSES];
        let mut v = [std::ptr::null_mut()];
        let r = load_ex(&mut m, PTX.as_ptr().cast(), 1, sym.as_mut_ptr(), v.as_mut_ptr());
        assert_eq!(r, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
}
