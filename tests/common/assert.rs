//! Assertions on what the server refuses: status code, `ErrorInfo` reason and metadata.

use std::{collections::HashMap, fmt::Debug};

use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

/// Asserts the status has `code` and an ErrorInfo with `reason` in domain `allot`; returns
/// the ErrorInfo metadata.
#[track_caller]
pub fn assert_error(status: &Status, code: Code, reason: &str) -> HashMap<String, String> {
    assert_eq!(status.code(), code, "unexpected code: {status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "unexpected reason: {status:?}");
    assert_eq!(info.domain, "allot");
    info.metadata.clone()
}

/// The error of a call that must fail.
#[track_caller]
pub fn rejected<T: Debug>(result: Result<Response<T>, Status>) -> Status {
    match result {
        Ok(response) => panic!("expected an error, got {:?}", response.into_inner()),
        Err(status) => status,
    }
}

/// INVALID_ARGUMENT with `reason`, naming `field` in the ErrorInfo metadata.
#[track_caller]
pub fn assert_invalid(status: &Status, reason: &str, field: &str) {
    let metadata = assert_error(status, Code::InvalidArgument, reason);
    assert_eq!(
        metadata.get("field").map(String::as_str),
        Some(field),
        "field of {status:?}"
    );
}

/// FAILED_PRECONDITION `INSUFFICIENT_CREDITS` naming what was `required` and `available`.
#[track_caller]
pub fn assert_insufficient(status: &Status, required: &str, available: &str) {
    let meta = assert_error(status, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    assert_eq!(meta.get("required").map(String::as_str), Some(required));
    assert_eq!(meta.get("available").map(String::as_str), Some(available));
}
