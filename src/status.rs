//! The one place where the bootstrap's own outcomes become gRPC statuses on the wire.
//!
//! Layers that end an RPC themselves (deadline, admission, drain, panic) call these helpers, so
//! every such answer has the same shape: a trailers-only response when no response has started,
//! or a trailers frame after the messages already sent. Either way the client gets a status and
//! trailers, never a reset stream or "closed without trailers".

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::Frame;
use tonic::{Code, Status};

/// A trailers-only gRPC response carrying `status` (HTTP 200, `grpc-status` in the headers).
pub fn response(status: Status) -> Response<tonic::body::Body> {
    status.into_http()
}

/// A trailers frame carrying `status`, to end a response whose messages have started.
pub fn trailers(status: &Status) -> Frame<Bytes> {
    let mut map = HeaderMap::with_capacity(2);
    if status.add_header(&mut map).is_err() {
        // Only custom metadata can fail to encode, and these statuses carry none; keep the code.
        map.insert(
            Status::GRPC_STATUS,
            http::HeaderValue::from(status.code() as i32),
        );
    }
    Frame::trailers(map)
}

/// The gRPC status code in a header map (a trailers-only response's headers, or trailers).
pub fn code_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(Status::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// A code's name as the logs show it (`Ok`, `DeadlineExceeded`: its `Debug` text), without
/// formatting anything: every RPC's finish line carries one.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Whether a request is gRPC (as opposed to an HTTP/1.1 probe or hook), by its content type.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_debug_names() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }

    #[test]
    fn trailers_carry_code_and_message() {
        let frame = trailers(&Status::unavailable("draining"));
        let map = frame.into_trailers().unwrap();
        assert_eq!(code_in(&map), Some(Code::Unavailable));
        assert_eq!(map.get("grpc-message").unwrap(), "draining");
    }

    #[test]
    fn trailers_only_response() {
        let r = response(Status::resource_exhausted("full"));
        assert_eq!(code_in(r.headers()), Some(Code::ResourceExhausted));
        assert!(is_grpc(r.headers()));
    }
}
