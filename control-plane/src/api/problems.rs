//! The catalogue of problem `code`s: every error the REST API answers is
//! `application/problem+json` whose `type` is `/api/v1/problems/{code}`, a page
//! this module serves (no token needed: it is documentation). The OpenAPI
//! document lists the codes in the `Problem` schema and, per operation, the codes
//! of each error status it can answer (`api::contract`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;

/// One problem type.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ProblemType {
    pub code: &'static str,
    pub status: u16,
    pub description: &'static str,
}

const fn p(code: &'static str, status: u16, description: &'static str) -> ProblemType {
    ProblemType {
        code,
        status,
        description,
    }
}

/// Every code the API answers with (a unit test checks the sources use no other).
pub const PROBLEMS: &[ProblemType] = &[
    // Requests the server cannot read.
    p("invalid_id", 400, "A path parameter is not an id of the right form (a UUID)."),
    p("invalid_query", 400, "A query parameter is malformed, unknown in value, or contains a NUL character."),
    p("invalid_cursor", 400, "The `cursor` is not one this list (in this order) returned."),
    p("out_of_range", 400, "A number is outside its documented range (also 422 for a body field)."),
    p("invalid_json", 400, "The body is not JSON."),
    p("invalid_body", 422, "The body is JSON but not of the operation's schema (a missing or unknown field, a wrong type, a NUL character in a string)."),
    p("invalid_address", 400, "An address is not of the form host:port."),
    p("invalid_csr", 400, "A certificate signing request could not be read."),
    p("https_required", 400, "A plain-HTTP request reached the HTTPS listener: use an `https://` address."),
    p("unsupported_media_type", 415, "The body is not `application/json`."),
    p("payload_too_large", 413, "The body is larger than 1 MiB."),
    // Who may do what.
    p("unauthorized", 401, "No token, or one that is unknown, revoked or expired."),
    p("forbidden", 403, "The token's role does not allow this operation."),
    // What is not there.
    p("not_found", 404, "No object with this id (or no such path)."),
    p("method_not_allowed", 405, "The path does not accept this method; `Allow` lists those it does."),
    // Values the server understood and refuses.
    p("invalid_name", 422, "A name must be 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit."),
    p("invalid_boot", 422, "The boot source is not usable (no kernel, a disk index that does not exist)."),
    p("invalid_rule", 422, "The placement rule is not consistent (too few members, a member twice, a host rule without hosts)."),
    p("invalid_schedule", 422, "The schedule's time, recurrence or action is not valid."),
    p("invalid_time_zone", 422, "The time zone is not an IANA name."),
    p("unknown_cluster", 422, "The body names a cluster that does not exist."),
    p("unknown_host", 422, "The body names a host that does not exist (or is not in the cluster)."),
    p("unknown_datastore", 422, "The body names a datastore that does not exist (or is not where it must be)."),
    p("unknown_vm", 422, "The body names a VM that does not exist (or is not in the cluster)."),
    p("unknown_network", 422, "The body names a network that does not exist (or is not on the host)."),
    p("host_not_in_cluster", 422, "The host is not in the VM's cluster."),
    // The state of things does not allow it (now).
    p("duplicate_name", 409, "Another object of this kind has this name."),
    p("name_taken", 409, "Another object of this kind has this name."),
    p("duplicate_disk", 409, "Two disks would have the same image."),
    p("vm_busy", 409, "The VM has an operation in flight (`operation` names it); one at a time."),
    p("vm_not_stopped", 409, "The VM must be powered off for this."),
    p("vm_not_placed", 409, "The VM has no host."),
    p("no_boot", 409, "The VM has nothing to boot."),
    p("no_console", 409, "The VM has no console log (yet)."),
    p("no_suitable_host", 409, "No host can take the VM (`reasons` says why, per host)."),
    p("incompatible_destination", 409, "The destination fails a compatibility check (`reasons` lists the failed checks)."),
    p("migration_in_progress", 409, "The VM is migrating already."),
    p("migration_not_cancellable", 409, "The migration is past its switchover or over."),
    p("postcopy_with_storage", 409, "A move that copies disks cannot switch over by post-copy."),
    p("host_refused", 409, "The host's agent refused the operation."),
    p("host_unavailable", 409, "The host is disconnected (or its agent unreachable)."),
    p("maintenance_in_progress", 409, "The host is entering maintenance already."),
    p("maintenance_infeasible", 409, "The evacuation plan leaves VMs that cannot move (`reasons`); see the dry run."),
    p("maintenance_not_running", 409, "The host is not being evacuated."),
    p("not_in_maintenance", 409, "The host is not in maintenance."),
    p("recommendation_not_pending", 409, "The recommendation was applied, dismissed or has expired."),
    p("schedule_not_active", 409, "The schedule has run, failed or been cancelled."),
    p("token_in_use", 409, "The token authenticates this very request (revoke it with another)."),
    // The server.
    p("internal", 500, "The control plane failed; its log has the cause."),
    p("unavailable", 503, "The database is unavailable; retry shortly (`Retry-After`)."),
];

/// The catalogue entry of `code`.
pub fn lookup(code: &str) -> Option<&'static ProblemType> {
    PROBLEMS.iter().find(|p| p.code == code)
}

/// The `type` URI of `code`'s problems (relative: on this control plane).
pub fn type_uri(code: &str) -> String {
    format!("/api/v1/problems/{code}")
}

#[utoipa::path(operation_id = "problems_list", get, path = "/api/v1/problems", tag = "problems",
    security(()),
    responses((status = 200, body = Vec<ProblemType>, description = "Every problem code the API answers with")))]
pub async fn list() -> Json<&'static [ProblemType]> {
    Json(PROBLEMS)
}

#[utoipa::path(operation_id = "problems_get", get, path = "/api/v1/problems/{code}", tag = "problems",
    security(()),
    params(("code" = String, Path, pattern = "^[a-z_]{1,40}$")),
    responses((status = 200, body = ProblemType), (status = 404, body = ferry_api::Problem)))]
pub async fn get(Path(code): Path<String>) -> Result<Json<&'static ProblemType>, ApiError> {
    lookup(&code).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no problem type {code:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code literal the sources give an `ApiError` is in the catalogue, with
    /// the status the source gives it.
    #[test]
    fn every_code_in_the_sources_is_catalogued() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root];
        let mut seen = 0;
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") || p.ends_with("problems.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (ctor, status) in [
                ("ApiError::bad_request(", 400),
                ("ApiError::unprocessable(", 422),
                ("ApiError::conflict(", 409),
            ] {
                for (i, _) in text.match_indices(ctor) {
                    let rest = text[i + ctor.len()..].trim_start();
                    let Some(lit) = rest.strip_prefix('"') else {
                        continue; // a code from a variable: checked where it is made
                    };
                    let code = &lit[..lit.find('"').unwrap()];
                    let entry = lookup(code).unwrap_or_else(|| {
                        panic!("{}: code {code} is not catalogued", p.display())
                    });
                    assert!(
                        entry.status == status || code == "out_of_range",
                        "{code}: catalogued {} but answered {status} in {}",
                        entry.status,
                        p.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 50, "only {seen} codes found: the scan is broken");
        for code in ["invalid_schedule", "invalid_time_zone"] {
            assert!(lookup(code).is_some());
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<&str> = PROBLEMS.iter().map(|p| p.code).collect();
        codes.sort();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }
}
