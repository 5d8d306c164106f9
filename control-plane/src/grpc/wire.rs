//! Conversions between the REST vocabulary (`ferry_api`) and the agent contract's
//! enums (`ferry_proto`), at the edge, so nothing inside compares strings.

use ferry_api::vm::{PowerAction, PowerState};
use ferry_proto::v1::{self as proto, VmState};

pub fn power_action(a: PowerAction) -> proto::PowerAction {
    use proto::PowerAction as P;
    match a {
        PowerAction::On => P::PowerOn,
        PowerAction::Off => P::PowerOff,
        PowerAction::Shutdown => P::PowerShutdown,
        PowerAction::Reset => P::PowerReset,
        PowerAction::Pause => P::PowerPause,
        PowerAction::Resume => P::PowerResume,
    }
}

/// The inventory's power state for an agent's report (`None`: not a VM state the
/// inventory records, e.g. an unmanaged QEMU).
pub fn power_state(s: VmState) -> Option<PowerState> {
    match s {
        VmState::VmRunning => Some(PowerState::Running),
        VmState::VmPaused => Some(PowerState::Paused),
        VmState::VmStopped => Some(PowerState::Stopped),
        VmState::VmUnmanaged | VmState::Unspecified => None,
    }
}
