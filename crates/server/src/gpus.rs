//! `vgpu serve --gpus 0,2`: serve a subset of the host's GPUs.
//!
//! The list uses `CUDA_VISIBLE_DEVICES` syntax: indices as `nvidia-smi` numbers the GPUs
//! (PCI bus order) and/or UUIDs (`GPU-...`, a unique prefix will do). With the `cuda`
//! backend the server process (and so every worker it starts) runs with
//! `CUDA_VISIBLE_DEVICES` set to the list before the driver is initialised, and with
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID` unless the operator chose an order: the driver then
//! enumerates exactly those GPUs, so each device's `cuda_ordinal` is the server's own CUDA
//! ordinal, while its `nvml_index` stays NVML's (which ignores `CUDA_VISIBLE_DEVICES`).
//! The `sim` backend selects from its simulated devices the same way.

use device_model::Snapshot;

/// Run the driver of this process (and its workers) on the GPUs of `spec` only. Must be
/// called before anything initialises CUDA and while the process has a single thread.
pub fn restrict_driver(spec: &str) {
    if let Ok(old) = std::env::var("CUDA_VISIBLE_DEVICES") {
        tracing::warn!("--gpus {spec} replaces CUDA_VISIBLE_DEVICES={old}");
    }
    // SAFETY: `vgpu serve` calls this first thing, before it starts any thread.
    unsafe {
        std::env::set_var("CUDA_VISIBLE_DEVICES", spec);
        if std::env::var_os("CUDA_DEVICE_ORDER").is_none() {
            std::env::set_var("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
        }
    }
}

/// The devices of `snapshot` that `spec` names, in its order, renumbered as CUDA would
/// number them (`cuda_ordinal` 0, 1, ...); NVML indices are kept.
pub fn select(mut snapshot: Snapshot, spec: &str) -> Result<Snapshot, String> {
    let picked = device_model::visible_devices(&snapshot.devices, Some(spec));
    let wanted = spec.split(',').filter(|s| !s.trim().is_empty()).count();
    if picked.is_empty() || picked.len() != wanted {
        return Err(format!(
            "--gpus {spec}: not a list of distinct GPUs of this host (it has {}: indices 0..{} or GPU-UUIDs)",
            snapshot.devices.len(),
            snapshot.devices.len()
        ));
    }
    let all = std::mem::take(&mut snapshot.devices);
    snapshot.devices = picked
        .iter()
        .enumerate()
        .map(|(ordinal, &i)| {
            let mut d = all[i].clone();
            d.cuda_ordinal = ordinal as u32;
            d
        })
        .collect();
    Ok(snapshot)
}

/// After the driver was restricted: the spec must have named at least one GPU.
pub fn check_restricted(snapshot: &Snapshot, spec: &str) -> Result<(), String> {
    if snapshot.devices.is_empty() {
        return Err(format!(
            "--gpus {spec}: the driver reports no GPU (indices as nvidia-smi numbers them, or GPU-UUIDs)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_and_renumbers() {
        let s = crate::sim::snapshot(4, 3);
        let u3 = s.devices[3].uuid_string();
        let picked = select(s.clone(), &format!("2,{u3},0")).unwrap();
        let ids: Vec<_> = picked.devices.iter().map(|d| (d.cuda_ordinal, d.nvml_index)).collect();
        assert_eq!(ids, vec![(0, 2), (1, 3), (2, 0)]);
        assert_eq!(picked.devices[1].uuid, s.devices[3].uuid);
        for bad in ["", "7", "1,1", "0,9", "GPU-ffff"] {
            assert!(select(s.clone(), bad).is_err(), "{bad:?}");
        }
    }
}
