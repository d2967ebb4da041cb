//! The one table of error codes. Each code has a stable machine name (the
//! `code` of problem+json bodies and WebSocket error frames), a gRPC code and an
//! HTTP status, written once here so that no handler picks a status ad hoc.
//!
//! Across gRPC the stable name travels in the `x-sextant-error-code` trailer,
//! so the gateway can tell `conflict` from `failed_precondition` even though
//! both are not distinguishable by gRPC code alone.

use tonic::{Code, Status};

pub const ERROR_CODE_METADATA: &str = "x-sextant-error-code";

/// Where a refusal says how many seconds to wait before trying again; the
/// gateway answers it as `Retry-After`.
pub const RETRY_AFTER_METADATA: &str = "x-sextant-retry-after";

/// The IETF RateLimit fields a backend may answer in metadata; the gateway
/// passes each on as the header of the same name.
pub mod rate_limit {
    pub const LIMIT: &str = "ratelimit-limit";
    pub const REMAINING: &str = "ratelimit-remaining";
    pub const RESET: &str = "ratelimit-reset";
    pub const POLICY: &str = "ratelimit-policy";
    pub const FIELDS: [&str; 4] = [LIMIT, REMAINING, RESET, POLICY];
}

macro_rules! error_codes {
    ($($variant:ident => ($name:literal, $grpc:ident, $http:literal, $title:literal),)*) => {
        /// A stable, documented error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable machine name, e.g. `not_found`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            pub fn grpc(self) -> Code {
                match self { $(ErrorCode::$variant => Code::$grpc,)* }
            }

            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $http,)* }
            }

            /// A short human title, e.g. for problem+json `title`.
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }

            pub fn parse(name: &str) -> Option<ErrorCode> {
                match name { $($name => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    InvalidArgument => ("invalid_argument", InvalidArgument, 400, "Invalid argument"),
    MalformedRequest => ("malformed_request", InvalidArgument, 400, "Malformed request"),
    Unauthenticated => ("unauthenticated", Unauthenticated, 401, "Unauthenticated"),
    PermissionDenied => ("permission_denied", PermissionDenied, 403, "Permission denied"),
    NotFound => ("not_found", NotFound, 404, "Not found"),
    MethodNotAllowed => ("method_not_allowed", Unimplemented, 405, "Method not allowed"),
    AlreadyExists => ("already_exists", AlreadyExists, 409, "Already exists"),
    Conflict => ("conflict", Aborted, 409, "Conflict"),
    FailedPrecondition => ("failed_precondition", FailedPrecondition, 409, "Failed precondition"),
    PreconditionFailed => ("precondition_failed", FailedPrecondition, 412, "Precondition failed"),
    PayloadTooLarge => ("payload_too_large", InvalidArgument, 413, "Payload too large"),
    UnsupportedMediaType => ("unsupported_media_type", InvalidArgument, 415, "Unsupported media type"),
    RangeNotSatisfiable => ("range_not_satisfiable", OutOfRange, 416, "Range not satisfiable"),
    RateLimited => ("rate_limited", ResourceExhausted, 429, "Too many requests"),
    Internal => ("internal", Internal, 500, "Internal error"),
    Unimplemented => ("unimplemented", Unimplemented, 501, "Not implemented"),
    Unavailable => ("unavailable", Unavailable, 503, "Service unavailable"),
    DeadlineExceeded => ("deadline_exceeded", DeadlineExceeded, 504, "Upstream timed out"),
}

impl ErrorCode {
    /// A gRPC status carrying this code's stable name.
    pub fn status(self, message: impl Into<String>) -> Status {
        let mut status = Status::new(self.grpc(), message);
        status
            .metadata_mut()
            .insert(ERROR_CODE_METADATA, self.as_str().parse().expect("codes are ASCII"));
        status
    }

    /// The stable code of a status from a Sextant service (its trailer), or the
    /// closest match for a status from anywhere else.
    pub fn of_status(status: &Status) -> ErrorCode {
        status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse)
            .unwrap_or_else(|| ErrorCode::from_grpc(status.code()))
    }

    pub fn from_grpc(code: Code) -> ErrorCode {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists => ErrorCode::AlreadyExists,
            Code::Aborted => ErrorCode::Conflict,
            Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            Code::ResourceExhausted => ErrorCode::RateLimited,
            Code::Unimplemented => ErrorCode::Unimplemented,
            Code::Unavailable | Code::Cancelled => ErrorCode::Unavailable,
            Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
    }

    #[test]
    fn the_stable_code_survives_a_grpc_status() {
        let status = ErrorCode::Conflict.status("version moved");
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(ErrorCode::of_status(&status), ErrorCode::Conflict);
        assert_eq!(ErrorCode::of_status(&Status::not_found("x")), ErrorCode::NotFound);
    }

    #[test]
    fn http_statuses_are_client_or_server_errors() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code:?}");
        }
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
    }
}
