//! `cudaLaunchConfig_t` → `CUlaunchConfig`, member by member through the generated types.
//! The attribute ids and the enums inside the values share their numbering between runtime
//! and driver (checked in the tests); the union member that is live follows from the id.

use abi::cuda::{
    self as cu, CUlaunchAttribute, CUlaunchAttributeID as Id, CUlaunchAttributeValue as V, CUlaunchConfig,
};

use super::error::Res;
use crate::rt::{self, cudaError_t as E, cudaLaunchAttributeID as RId};

/// One attribute; an id the driver API does not know is `cudaErrorInvalidValue`.
pub(crate) fn attribute(a: &rt::cudaLaunchAttribute) -> Res<CUlaunchAttribute> {
    let v = &a.val;
    // SAFETY: the id names the live member of the value union (the API's contract).
    let value = unsafe {
        match a.id {
            RId::cudaLaunchAttributeIgnore => V::default(),
            RId::cudaLaunchAttributeAccessPolicyWindow => {
                let w = v.accessPolicyWindow;
                V {
                    accessPolicyWindow: cu::CUaccessPolicyWindow {
                        base_ptr: w.base_ptr,
                        num_bytes: w.num_bytes,
                        hitRatio: w.hitRatio,
                        hitProp: cu::CUaccessProperty(w.hitProp.0),
                        missProp: cu::CUaccessProperty(w.missProp.0),
                    },
                }
            }
            RId::cudaLaunchAttributeCooperative => V { cooperative: v.cooperative },
            RId::cudaLaunchAttributeSynchronizationPolicy => {
                V { syncPolicy: cu::CUsynchronizationPolicy(v.syncPolicy.0) }
            }
            RId::cudaLaunchAttributeClusterDimension => {
                let d = v.clusterDim;
                V { clusterDim: cu::CUlaunchAttributeValue_union__bindgen_ty_1 { x: d.x, y: d.y, z: d.z } }
            }
            RId::cudaLaunchAttributeClusterSchedulingPolicyPreference => V {
                clusterSchedulingPolicyPreference: cu::CUclusterSchedulingPolicy(v.clusterSchedulingPolicyPreference.0),
            },
            RId::cudaLaunchAttributeProgrammaticStreamSerialization => {
                V { programmaticStreamSerializationAllowed: v.programmaticStreamSerializationAllowed }
            }
            RId::cudaLaunchAttributeProgrammaticEvent => {
                let e = v.programmaticEvent;
                V {
                    programmaticEvent: cu::CUlaunchAttributeValue_union__bindgen_ty_2 {
                        event: e.event.cast(),
                        flags: e.flags,
                        triggerAtBlockStart: e.triggerAtBlockStart,
                    },
                }
            }
            RId::cudaLaunchAttributePriority => V { priority: v.priority },
            RId::cudaLaunchAttributeMemSyncDomainMap => {
                let m = v.memSyncDomainMap;
                V { memSyncDomainMap: cu::CUlaunchMemSyncDomainMap { default_: m.default_, remote: m.remote } }
            }
            RId::cudaLaunchAttributeMemSyncDomain => V { memSyncDomain: cu::CUlaunchMemSyncDomain(v.memSyncDomain.0) },
            RId::cudaLaunchAttributePreferredClusterDimension => {
                let d = v.preferredClusterDim;
                V { preferredClusterDim: cu::CUlaunchAttributeValue_union__bindgen_ty_4 { x: d.x, y: d.y, z: d.z } }
            }
            RId::cudaLaunchAttributeLaunchCompletionEvent => {
                let e = v.launchCompletionEvent;
                V {
                    launchCompletionEvent: cu::CUlaunchAttributeValue_union__bindgen_ty_3 {
                        event: e.event.cast(),
                        flags: e.flags,
                    },
                }
            }
            RId::cudaLaunchAttributeDeviceUpdatableKernelNode => {
                let n = v.deviceUpdatableKernelNode;
                V {
                    deviceUpdatableKernelNode: cu::CUlaunchAttributeValue_union__bindgen_ty_5 {
                        deviceUpdatable: n.deviceUpdatable,
                        devNode: n.devNode.cast(),
                    },
                }
            }
            RId::cudaLaunchAttributePreferredSharedMemoryCarveout => V { sharedMemCarveout: v.sharedMemCarveout },
            #[cfg(vgpu_major = "13")]
            RId::cudaLaunchAttributeNvlinkUtilCentricScheduling => {
                V { nvlinkUtilCentricScheduling: v.nvlinkUtilCentricScheduling }
            }
            _ => return Err(E::cudaErrorInvalidValue),
        }
    };
    Ok(CUlaunchAttribute { id: Id(a.id.0), pad: [0; 4], value })
}

/// A stream attribute's value as the driver gave it (`cuStreamGetAttribute`), in the
/// runtime's union; ids that are no stream attribute are `cudaErrorInvalidValue`.
pub(crate) fn stream_value(id: RId, v: &V) -> Res<rt::cudaLaunchAttributeValue> {
    let mut out = rt::cudaLaunchAttributeValue::default();
    // SAFETY: the id names the live member of the driver's union.
    unsafe {
        match id {
            RId::cudaLaunchAttributeAccessPolicyWindow => {
                let w = v.accessPolicyWindow;
                out.accessPolicyWindow = rt::cudaAccessPolicyWindow {
                    base_ptr: w.base_ptr,
                    num_bytes: w.num_bytes,
                    hitRatio: w.hitRatio,
                    hitProp: rt::cudaAccessProperty(w.hitProp.0),
                    missProp: rt::cudaAccessProperty(w.missProp.0),
                };
            }
            RId::cudaLaunchAttributeSynchronizationPolicy => {
                out.syncPolicy = rt::cudaSynchronizationPolicy(v.syncPolicy.0);
            }
            RId::cudaLaunchAttributePriority => out.priority = v.priority,
            RId::cudaLaunchAttributeMemSyncDomainMap => {
                let m = v.memSyncDomainMap;
                out.memSyncDomainMap = rt::cudaLaunchMemSyncDomainMap { default_: m.default_, remote: m.remote };
            }
            RId::cudaLaunchAttributeMemSyncDomain => {
                out.memSyncDomain = rt::cudaLaunchMemSyncDomain(v.memSyncDomain.0);
            }
            _ => return Err(E::cudaErrorInvalidValue),
        }
    }
    Ok(out)
}

/// The driver's launch configuration for `c`, whose attributes are translated into `attrs`
/// (which the result points into). `stream` replaces `c.stream` (per-thread default stream).
pub(crate) fn config(
    c: &rt::cudaLaunchConfig_t,
    stream: cu::CUstream,
    attrs: &mut Vec<CUlaunchAttribute>,
) -> Res<CUlaunchConfig> {
    attrs.clear();
    if c.numAttrs > 0 {
        if c.attrs.is_null() {
            return Err(E::cudaErrorInvalidValue);
        }
        // SAFETY: the caller's array of numAttrs attributes.
        let src = unsafe { std::slice::from_raw_parts(c.attrs, c.numAttrs as usize) };
        for a in src {
            attrs.push(attribute(a)?);
        }
    }
    super::launch::check_dims(c.gridDim, c.blockDim)?;
    Ok(CUlaunchConfig {
        gridDimX: c.gridDim.x,
        gridDimY: c.gridDim.y,
        gridDimZ: c.gridDim.z,
        blockDimX: c.blockDim.x,
        blockDimY: c.blockDim.y,
        blockDimZ: c.blockDim.z,
        sharedMemBytes: u32::try_from(c.dynamicSmemBytes).map_err(|_| E::cudaErrorInvalidValue)?,
        hStream: stream,
        attrs: if attrs.is_empty() { std::ptr::null_mut() } else { attrs.as_mut_ptr() },
        numAttrs: c.numAttrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_and_ids_agree() {
        assert_eq!(size_of::<rt::cudaLaunchAttribute>(), size_of::<CUlaunchAttribute>());
        assert_eq!(offset_of!(rt::cudaLaunchAttribute, val), offset_of!(CUlaunchAttribute, value));
        for (r, c) in [
            (RId::cudaLaunchAttributeAccessPolicyWindow, Id::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW),
            (RId::cudaLaunchAttributeCooperative, Id::CU_LAUNCH_ATTRIBUTE_COOPERATIVE),
            (RId::cudaLaunchAttributeClusterDimension, Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION),
            (
                RId::cudaLaunchAttributeProgrammaticStreamSerialization,
                Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            ),
            (RId::cudaLaunchAttributeProgrammaticEvent, Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT),
            (RId::cudaLaunchAttributePriority, Id::CU_LAUNCH_ATTRIBUTE_PRIORITY),
            (RId::cudaLaunchAttributeMemSyncDomain, Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN),
            (RId::cudaLaunchAttributeLaunchCompletionEvent, Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT),
            (
                RId::cudaLaunchAttributePreferredSharedMemoryCarveout,
                Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            ),
        ] {
            assert_eq!(r.0, c.0);
        }
    }

    fn attr(id: RId, val: rt::cudaLaunchAttributeValue) -> rt::cudaLaunchAttribute {
        rt::cudaLaunchAttribute { id, pad: [0; 4], val }
    }

    #[test]
    fn pdl_config_translates() {
        let mut a = vec![
            attr(
                RId::cudaLaunchAttributeProgrammaticStreamSerialization,
                rt::cudaLaunchAttributeValue { programmaticStreamSerializationAllowed: 1 },
            ),
            attr(
                RId::cudaLaunchAttributeClusterDimension,
                rt::cudaLaunchAttributeValue {
                    clusterDim: rt::cudaLaunchAttributeValue__bindgen_ty_1 { x: 2, y: 1, z: 1 },
                },
            ),
        ];
        let c = rt::cudaLaunchConfig_t {
            gridDim: rt::dim3 { x: 4, y: 2, z: 1 },
            blockDim: rt::dim3 { x: 128, y: 1, z: 1 },
            dynamicSmemBytes: 4096,
            stream: std::ptr::null_mut(),
            attrs: a.as_mut_ptr(),
            numAttrs: 2,
        };
        let mut store = Vec::new();
        let k = config(&c, 2usize as cu::CUstream, &mut store).unwrap();
        assert_eq!((k.gridDimX, k.gridDimY, k.gridDimZ, k.blockDimX), (4, 2, 1, 128));
        assert_eq!((k.sharedMemBytes, k.hStream as usize, k.numAttrs), (4096, 2, 2));
        assert_eq!(k.attrs, store.as_mut_ptr());
        assert_eq!(store[0].id, Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
        assert_eq!(unsafe { store[0].value.programmaticStreamSerializationAllowed }, 1);
        assert_eq!(store[1].id, Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION);
        assert_eq!(unsafe { store[1].value.clusterDim.x }, 2);

        a[1].id = RId(999);
        assert_eq!(config(&c, std::ptr::null_mut(), &mut store).err(), Some(E::cudaErrorInvalidValue));
        let zero = rt::cudaLaunchConfig_t { numAttrs: 0, gridDim: rt::dim3 { x: 0, y: 1, z: 1 }, ..c };
        assert_eq!(config(&zero, std::ptr::null_mut(), &mut store).err(), Some(E::cudaErrorInvalidValue));
        let no_attrs = rt::cudaLaunchConfig_t { numAttrs: 0, attrs: std::ptr::null_mut(), ..c };
        assert!(config(&no_attrs, std::ptr::null_mut(), &mut store).unwrap().attrs.is_null());
    }
}
