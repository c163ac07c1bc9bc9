//! The NVML functions forwarded to the server, by signature class.
//!
//! One table, [`nvml_functions!`], names each function with its class and its C output
//! type. The protocol expands it into [`FUNCS`] (index ↔ name ↔ class, what travels on the
//! wire); the NVML shim expands the same table into its exported C functions. The server
//! resolves the name in the real NVML and calls it according to the class.

/// How a forwarded NVML function is called. `dev` is an `nvmlDevice_t`; `out` buffers
/// travel both ways (versioned structs carry their version in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// `f(dev, T *out)`
    DevOut,
    /// `f(dev, T *a, U *b)`; both travel in one buffer, `a` first.
    DevOut2,
    /// `f(dev, unsigned arg0, T *out)`
    DevArgOut,
    /// `f(dev, unsigned arg0, unsigned arg1, T *out)`
    DevArg2Out,
    /// `f(dev, char *buf, unsigned len)`
    DevBuf,
    /// `f(dev, unsigned arg0, char *buf, unsigned len)`
    DevArgBuf,
    /// `f(dev, unsigned *count, T *array)`: count in and out (returned as `aux`).
    DevArray,
    /// `f(dev, int count, T *array)`: `count` elements in and out.
    DevArgArray,
    /// `f(T *out)`
    SysOut,
}

/// The table. Callers pass a macro that receives `Class name(T[, U]);` entries.
#[macro_export]
macro_rules! nvml_functions {
    ($cb:ident) => {
        $cb! {
            DevOut nvmlDeviceGetMemoryInfo(nvmlMemory_t);
            DevOut nvmlDeviceGetMemoryInfo_v2(nvmlMemory_v2_t);
            DevOut nvmlDeviceGetBAR1MemoryInfo(nvmlBAR1Memory_t);
            DevOut nvmlDeviceGetUtilizationRates(nvmlUtilization_t);
            DevArgOut nvmlDeviceGetTemperature(u32);
            DevOut nvmlDeviceGetTemperatureV(nvmlTemperature_t);
            DevArgOut nvmlDeviceGetTemperatureThreshold(u32);
            DevOut nvmlDeviceGetFanSpeed(u32);
            DevArgOut nvmlDeviceGetFanSpeed_v2(u32);
            DevOut nvmlDeviceGetNumFans(u32);
            DevOut nvmlDeviceGetPowerUsage(u32);
            DevOut nvmlDeviceGetPowerState(u32);
            DevOut nvmlDeviceGetPerformanceState(u32);
            DevOut nvmlDeviceGetPowerManagementMode(u32);
            DevOut nvmlDeviceGetPowerManagementLimit(u32);
            DevOut nvmlDeviceGetPowerManagementDefaultLimit(u32);
            DevOut2 nvmlDeviceGetPowerManagementLimitConstraints(u32, u32);
            DevOut nvmlDeviceGetEnforcedPowerLimit(u32);
            DevOut nvmlDeviceGetTotalEnergyConsumption(u64);
            DevArgOut nvmlDeviceGetClockInfo(u32);
            DevArgOut nvmlDeviceGetMaxClockInfo(u32);
            DevArgOut nvmlDeviceGetApplicationsClock(u32);
            DevArgOut nvmlDeviceGetDefaultApplicationsClock(u32);
            DevArgOut nvmlDeviceGetMaxCustomerBoostClock(u32);
            DevArg2Out nvmlDeviceGetClock(u32);
            DevOut nvmlDeviceGetCurrentClocksEventReasons(u64);
            DevOut nvmlDeviceGetCurrentClocksThrottleReasons(u64);
            DevOut nvmlDeviceGetSupportedClocksEventReasons(u64);
            DevOut nvmlDeviceGetSupportedClocksThrottleReasons(u64);
            DevOut nvmlDeviceGetPersistenceMode(u32);
            DevOut nvmlDeviceGetDisplayMode(u32);
            DevOut nvmlDeviceGetDisplayActive(u32);
            DevOut nvmlDeviceGetComputeMode(u32);
            DevOut2 nvmlDeviceGetEccMode(u32, u32);
            DevOut2 nvmlDeviceGetMigMode(u32, u32);
            DevOut2 nvmlDeviceGetGpuOperationMode(u32, u32);
            DevOut2 nvmlDeviceGetEncoderUtilization(u32, u32);
            DevOut2 nvmlDeviceGetDecoderUtilization(u32, u32);
            DevOut2 nvmlDeviceGetJpgUtilization(u32, u32);
            DevOut2 nvmlDeviceGetOfaUtilization(u32, u32);
            DevOut2 nvmlDeviceGetAutoBoostedClocksEnabled(u32, u32);
            DevOut nvmlDeviceGetBrand(u32);
            DevOut nvmlDeviceGetCurrPcieLinkGeneration(u32);
            DevOut nvmlDeviceGetCurrPcieLinkWidth(u32);
            DevOut nvmlDeviceGetMaxPcieLinkGeneration(u32);
            DevOut nvmlDeviceGetMaxPcieLinkWidth(u32);
            DevOut nvmlDeviceGetGpuMaxPcieLinkGeneration(u32);
            DevOut nvmlDeviceGetPcieSpeed(u32);
            DevOut nvmlDeviceGetPcieReplayCounter(u32);
            DevArgOut nvmlDeviceGetPcieThroughput(u32);
            DevArg2Out nvmlDeviceGetTotalEccErrors(u64);
            DevOut nvmlDeviceGetRetiredPagesPendingStatus(u32);
            DevOut2 nvmlDeviceGetRemappedRows(u32, u32);
            DevOut nvmlDeviceGetInforomConfigurationChecksum(u32);
            DevBuf nvmlDeviceGetInforomImageVersion;
            DevArgBuf nvmlDeviceGetInforomVersion;
            DevOut nvmlDeviceGetVirtualizationMode(u32);
            DevOut nvmlDeviceGetHostVgpuMode(u32);
            DevOut nvmlDeviceGetIrqNum(u32);
            DevOut nvmlDeviceGetNumGpuCores(u32);
            DevOut nvmlDeviceGetMemoryBusWidth(u32);
            DevOut nvmlDeviceGetPcieLinkMaxSpeed(u32);
            DevOut nvmlDeviceGetAdaptiveClockInfoStatus(u32);
            DevOut nvmlDeviceGetBusType(u32);
            DevOut nvmlDeviceGetGspFirmwareMode(u32);
            DevBuf nvmlDeviceGetGspFirmwareVersion;
            DevOut nvmlDeviceGetIsMigDeviceHandle(u32);
            DevOut nvmlDeviceGetMaxMigDeviceCount(u32);
            DevOut nvmlDeviceGetAccountingMode(u32);
            DevOut nvmlDeviceGetAccountingBufferSize(u32);
            DevOut nvmlDeviceGetPowerSource(u32);
            DevOut nvmlDeviceGetModuleId(u32);
            DevOut nvmlDeviceGetPerformanceModes(nvmlDevicePerfModes_t);
            DevOut nvmlDeviceGetCurrentClockFreqs(nvmlDeviceCurrentClockFreqs_t);
            DevArray nvmlDeviceGetComputeRunningProcesses_v3(nvmlProcessInfo_t);
            DevArray nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlProcessInfo_t);
            DevArray nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlProcessInfo_t);
            DevArray nvmlDeviceGetComputeRunningProcesses_v2(nvmlProcessInfo_v2_t);
            DevArray nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlProcessInfo_v2_t);
            DevArray nvmlDeviceGetComputeRunningProcesses(nvmlProcessInfo_v1_t);
            DevArray nvmlDeviceGetGraphicsRunningProcesses(nvmlProcessInfo_v1_t);
            DevArray nvmlDeviceGetSupportedMemoryClocks(u32);
            DevArray nvmlDeviceGetAccountingPids(u32);
            DevArgArray nvmlDeviceGetFieldValues(nvmlFieldValue_t);
            SysOut nvmlSystemGetConfComputeState(nvmlConfComputeSystemState_t);
        }
    };
}

macro_rules! __nvml_names {
    ( $( $class:ident $name:ident $( ( $($t:ty),* ) )? ; )* ) => {
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
