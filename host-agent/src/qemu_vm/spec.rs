//! A VM's spec as the agent keeps it on disk (`vms/<id>/spec.json`), so that a
//! restarted agent knows what each running QEMU is.

use ferry_proto::v1::VmSpec;
use serde_json::json;

pub fn spec_to_json(s: &VmSpec) -> serde_json::Value {
    json!({
        "vm_id": s.vm_id, "name": s.name, "vcpus": s.vcpus, "memory_mib": s.memory_mib,
        "cpu_model": s.cpu_model, "machine_type": s.machine_type,
        "disks": s.disks.iter().map(|d| json!({"datastore_id": d.datastore_id, "path": d.path, "size_bytes": d.size_bytes})).collect::<Vec<_>>(),
        "nics": s.nics.iter().map(|n| json!({"network": n.network, "mac": n.mac})).collect::<Vec<_>>(),
        "kernel": s.kernel, "initrd": s.initrd, "cmdline": s.cmdline, "boot_disk": s.boot_disk,
    })
}

pub fn spec_from_json(v: serde_json::Value) -> VmSpec {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    VmSpec {
        vm_id: s("vm_id"),
        name: s("name"),
        vcpus: v["vcpus"].as_u64().unwrap_or(1) as u32,
        memory_mib: v["memory_mib"].as_u64().unwrap_or(256),
        cpu_model: s("cpu_model"),
        machine_type: s("machine_type"),
        disks: v["disks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| ferry_proto::v1::VmDiskSpec {
                        datastore_id: d["datastore_id"].as_str().unwrap_or_default().into(),
                        path: d["path"].as_str().unwrap_or_default().into(),
                        size_bytes: d["size_bytes"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        nics: v["nics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| ferry_proto::v1::VmNicSpec {
                        network: n["network"].as_str().unwrap_or_default().into(),
                        mac: n["mac"].as_str().unwrap_or_default().into(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        kernel: s("kernel"),
        initrd: s("initrd"),
        cmdline: s("cmdline"),
        boot_disk: v["boot_disk"].as_i64().unwrap_or(-1) as i32,
    }
}
