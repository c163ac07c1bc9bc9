//! The NVML functions forwarded to the server, by signature class.
//!
//! One table, `nvml_functions!`, names each function with its class and its C output
//! type. The protocol expands it into [`FUNCS`] (index ↔ name ↔ class, what travels on the
//! wire); the NVML shim expands the same table into its exported C functions. The server
//! resolves the name in the real NVML and calls it according to the class.

/// How a forwarded NVML function is called. `dev` is an `nvmlDevice_t`; `out` buffers
/// travel both ways (versioned structs carry their version in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// `f(dev, T *out)`
    DevOut,
    /// `f(dev, T *a, U *b[, V *c[, W *d]])`: two to four outputs, in one buffer in order.
    /// Any may be NULL (NVML's own pair functions take one alone): bit `i` of `args[0]` says
    /// output `i` is, and it then takes no bytes.
    DevOuts,
    /// `f(dev, unsigned arg0, T *out)`
    DevArgOut,
    /// `f(dev, unsigned arg0, unsigned arg1, T *out)`
    DevArg2Out,
    /// `f(dev, unsigned arg0, unsigned arg1, unsigned arg2, T *out)`
    DevArg3Out,
    /// `f(dev, char *buf, unsigned len)`
    DevBuf,
    /// `f(dev, unsigned arg0, char *buf, unsigned len)`
    DevArgBuf,
    /// `f(dev, unsigned *count, T *array)`: count in and out (returned as `aux`).
    DevArray,
    /// `f(dev, int count, T *array)`: `count` elements in and out.
    DevArgArray,
    /// `f(dev, unsigned arg0, unsigned *count, T *array)`: as `DevArray`, after an argument
    /// (`args[0]`; the count is `args[1]`).
    DevArgCountArray,
    /// `f(T *out)`
    SysOut,
}

/// The table. Callers pass a macro that receives `Class fn name(T[, U]);` entries (the
/// `fn` lets the shims' stub generator see the names as defined).
#[macro_export]
macro_rules! nvml_functions {
    ($cb:ident) => {
        $cb! {
            DevOut fn nvmlDeviceGetMemoryInfo(nvmlMemory_t);
            DevOut fn nvmlDeviceGetMemoryInfo_v2(nvmlMemory_v2_t);
            DevOut fn nvmlDeviceGetBAR1MemoryInfo(nvmlBAR1Memory_t);
            DevOut fn nvmlDeviceGetUtilizationRates(nvmlUtilization_t);
            DevArgOut fn nvmlDeviceGetTemperature(u32);
            DevOut fn nvmlDeviceGetTemperatureV(nvmlTemperature_t);
            DevArgOut fn nvmlDeviceGetTemperatureThreshold(u32);
            DevOut fn nvmlDeviceGetFanSpeed(u32);
            DevArgOut fn nvmlDeviceGetFanSpeed_v2(u32);
            DevOut fn nvmlDeviceGetNumFans(u32);
            DevOut fn nvmlDeviceGetPowerUsage(u32);
            DevOut fn nvmlDeviceGetPowerState(u32);
            DevOut fn nvmlDeviceGetPerformanceState(u32);
            DevOut fn nvmlDeviceGetPowerManagementMode(u32);
            DevOut fn nvmlDeviceGetPowerManagementLimit(u32);
            DevOut fn nvmlDeviceGetPowerManagementDefaultLimit(u32);
            DevOuts fn nvmlDeviceGetPowerManagementLimitConstraints(u32, u32);
            DevOut fn nvmlDeviceGetEnforcedPowerLimit(u32);
            DevOut fn nvmlDeviceGetTotalEnergyConsumption(u64);
            DevArgOut fn nvmlDeviceGetClockInfo(u32);
            DevArgOut fn nvmlDeviceGetMaxClockInfo(u32);
            DevArgOut fn nvmlDeviceGetApplicationsClock(u32);
            DevArgOut fn nvmlDeviceGetDefaultApplicationsClock(u32);
            DevArgOut fn nvmlDeviceGetMaxCustomerBoostClock(u32);
            DevArg2Out fn nvmlDeviceGetClock(u32);
            DevOut fn nvmlDeviceGetCurrentClocksEventReasons(u64);
            DevOut fn nvmlDeviceGetCurrentClocksThrottleReasons(u64);
            DevOut fn nvmlDeviceGetSupportedClocksEventReasons(u64);
            DevOut fn nvmlDeviceGetSupportedClocksThrottleReasons(u64);
            DevOut fn nvmlDeviceGetPersistenceMode(u32);
            DevOut fn nvmlDeviceGetDisplayMode(u32);
            DevOut fn nvmlDeviceGetDisplayActive(u32);
            DevOut fn nvmlDeviceGetComputeMode(u32);
            DevOuts fn nvmlDeviceGetEccMode(u32, u32);
            DevOuts fn nvmlDeviceGetMigMode(u32, u32);
            DevOuts fn nvmlDeviceGetGpuOperationMode(u32, u32);
            DevOuts fn nvmlDeviceGetEncoderUtilization(u32, u32);
            DevOuts fn nvmlDeviceGetDecoderUtilization(u32, u32);
            DevOuts fn nvmlDeviceGetJpgUtilization(u32, u32);
            DevOuts fn nvmlDeviceGetOfaUtilization(u32, u32);
            DevOuts fn nvmlDeviceGetAutoBoostedClocksEnabled(u32, u32);
            DevOut fn nvmlDeviceGetBrand(u32);
            DevOut fn nvmlDeviceGetCurrPcieLinkGeneration(u32);
            DevOut fn nvmlDeviceGetCurrPcieLinkWidth(u32);
            DevOut fn nvmlDeviceGetMaxPcieLinkGeneration(u32);
            DevOut fn nvmlDeviceGetMaxPcieLinkWidth(u32);
            DevOut fn nvmlDeviceGetGpuMaxPcieLinkGeneration(u32);
            DevOut fn nvmlDeviceGetPcieSpeed(u32);
            DevOut fn nvmlDeviceGetPcieReplayCounter(u32);
            DevArgOut fn nvmlDeviceGetPcieThroughput(u32);
            DevArg2Out fn nvmlDeviceGetTotalEccErrors(u64);
            DevOut fn nvmlDeviceGetRetiredPagesPendingStatus(u32);
            DevOut fn nvmlDeviceGetInforomConfigurationChecksum(u32);
            DevBuf fn nvmlDeviceGetInforomImageVersion;
            DevArgBuf fn nvmlDeviceGetInforomVersion;
            DevOut fn nvmlDeviceGetVirtualizationMode(u32);
            DevOut fn nvmlDeviceGetHostVgpuMode(u32);
            DevOut fn nvmlDeviceGetIrqNum(u32);
            DevOut fn nvmlDeviceGetNumGpuCores(u32);
            DevOut fn nvmlDeviceGetMemoryBusWidth(u32);
            DevOut fn nvmlDeviceGetPcieLinkMaxSpeed(u32);
            DevOut fn nvmlDeviceGetAdaptiveClockInfoStatus(u32);
            DevOut fn nvmlDeviceGetBusType(u32);
            DevOuts fn nvmlDeviceGetGspFirmwareMode(u32, u32);
            DevOut fn nvmlDeviceIsMigDeviceHandle(u32);
            DevOut fn nvmlDeviceGetMaxMigDeviceCount(u32);
            DevOut fn nvmlDeviceGetAccountingMode(u32);
            DevOut fn nvmlDeviceGetAccountingBufferSize(u32);
            DevOut fn nvmlDeviceGetPowerSource(u32);
            DevOut fn nvmlDeviceGetModuleId(u32);
            DevOut fn nvmlDeviceGetPerformanceModes(nvmlDevicePerfModes_t);
            DevOut fn nvmlDeviceGetCurrentClockFreqs(nvmlDeviceCurrentClockFreqs_t);
            DevArray fn nvmlDeviceGetComputeRunningProcesses_v3(nvmlProcessInfo_t);
            DevArray fn nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlProcessInfo_t);
            DevArray fn nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlProcessInfo_t);
            DevArray fn nvmlDeviceGetComputeRunningProcesses_v2(nvmlProcessInfo_v2_t);
            DevArray fn nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlProcessInfo_v2_t);
            DevArray fn nvmlDeviceGetComputeRunningProcesses(nvmlProcessInfo_v1_t);
            DevArray fn nvmlDeviceGetGraphicsRunningProcesses(nvmlProcessInfo_v1_t);
            DevArray fn nvmlDeviceGetSupportedMemoryClocks(u32);
            DevArray fn nvmlDeviceGetAccountingPids(u32);
            DevArgArray fn nvmlDeviceGetFieldValues(nvmlFieldValue_t);
            DevOut fn nvmlDeviceGetBoardId(u32);
            DevOut fn nvmlDeviceGetMultiGpuBoard(u32);
            DevOut fn nvmlDeviceGetAddressingMode(nvmlDeviceAddressingMode_t);
            DevOut fn nvmlDeviceGetPdi(nvmlPdi_t);
            DevOut fn nvmlDeviceGetC2cModeInfoV(nvmlC2cModeInfo_v1_t);
            DevOuts fn nvmlDeviceGetDriverModel_v2(u32, u32);
            DevOut fn nvmlDeviceGetMarginTemperature(nvmlMarginTemperature_t);
            DevOut fn nvmlDeviceGetFBCStats(nvmlFBCStats_t);
            DevOut fn nvmlDeviceGetSramEccErrorStatus(nvmlEccSramErrorStatus_t);
            DevOut fn nvmlDeviceGetGpuFabricInfoV(nvmlGpuFabricInfoV_t);
            DevOut fn nvmlDeviceGetCapabilities(nvmlDeviceCapabilities_t);
            // What nvidia-smi -q and monitoring agents read beyond the above: ECC and
            // memory health, encoder use, firmware and board identity.
            DevOuts fn nvmlDeviceGetDriverModel(u32, u32);
            DevOuts fn nvmlDeviceGetLastBBXFlushTime(u64, core::ffi::c_ulong);
            DevOuts fn nvmlDeviceGetDramEncryptionMode(nvmlDramEncryptionInfo_t, nvmlDramEncryptionInfo_t);
            DevOuts fn nvmlDeviceGetEncoderStats(u32, u32, u32);
            DevOuts fn nvmlDeviceGetRemappedRows(u32, u32, u32, u32);
            DevArg3Out fn nvmlDeviceGetMemoryErrorCounter(u64);
            DevArgCountArray fn nvmlDeviceGetRetiredPages(u64);
            DevArgOut fn nvmlDeviceGetEncoderCapacity(u32);
            DevOut fn nvmlDeviceGetGspFirmwareVersion([u8; NVML_GSP_FIRMWARE_VERSION_BUF_SIZE as usize]);
            DevOut fn nvmlDeviceGetRowRemapperHistogram(nvmlRowRemapperHistogramValues_t);
            DevOut fn nvmlDeviceGetRepairStatus(nvmlRepairStatus_t);
            DevOut fn nvmlDeviceGetBridgeChipInfo(nvmlBridgeChipHierarchy_t);
            DevOut fn nvmlDeviceGetConfComputeProtectedMemoryUsage(nvmlMemory_t);
            DevOut fn nvmlDeviceGetVgpuHeterogeneousMode(nvmlVgpuHeterogeneousMode_t);
            DevOut fn nvmlDeviceGetGridLicensableFeatures_v4(nvmlGridLicensableFeatures_t);
            DevOut fn nvmlDeviceWorkloadPowerProfileGetCurrentProfiles(nvmlWorkloadPowerProfileCurrentProfiles_t);
            SysOut fn nvmlSystemGetConfComputeState(nvmlConfComputeSystemState_t);
        }
    };
}

macro_rules! __nvml_names {
    ( $( $class:ident fn $name:ident $( ( $($t:ty),* ) )? ; )* ) => {
        /// Every forwarded NVML function: its name and class, indexed by wire id.
        pub const FUNCS: &[(&str, Sig)] = &[ $( (stringify!($name), Sig::$class) ),* ];
        /// The table as text, hashed into the handshake's wire hash.
        pub const DEFINITION: &str = stringify!( $( $class $name ; )* );
    };
}
nvml_functions!(__nvml_names);

/// The wire id of a forwarded NVML function.
pub fn index_of(name: &str) -> Option<u16> {
    FUNCS.iter().position(|(n, _)| *n == name).map(|i| i as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn table_names_are_unique() {
        let mut names: Vec<_> = FUNCS.iter().map(|f| f.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FUNCS.len());
        assert_eq!(FUNCS[index_of("nvmlDeviceGetPowerUsage").unwrap() as usize].1, Sig::DevOut);
    }
}
