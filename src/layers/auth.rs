//! `Auth`: with `--auth-token` set, every RPC except health must carry
//! `authorization: Bearer <token>`; anything else is refused with UNAUTHENTICATED.
//!
//! An anonymous FC HTTP trigger lets anyone on the internet reach the instance, and NVCF's
//! clients already send a bearer token in exactly this shape. Health stays open because the
//! platforms' probes carry no credentials (the HTTP/1.1 probes never reach this layer); reflection
//! is a service like the user's and follows the same rule, since it describes the whole API.
//!
//! The token is compared in constant time (`subtle`), so response timing does not tell an
//! attacker how much of a guess was right, and it is never logged.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::status;

/// The health service's path prefix; its RPCs need no token.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// A secret string: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call only where it is compared or sent, never where it is logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Requires the bearer token, when one is configured.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    token: Option<Arc<Secret>>,
}

impl AuthLayer {
    /// `None` lets every RPC through.
    pub fn new(token: Option<Secret>) -> Self {
        AuthLayer {
            token: token.map(Arc::new),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    token: Option<Arc<Secret>>,
}

/// Whether `request` may pass: no token configured, a health RPC, or the right bearer token.
fn allowed(token: Option<&Secret>, request: &Request<Body>) -> bool {
    let Some(token) = token else {
        return true;
    };
    if request.uri().path().starts_with(HEALTH_PREFIX) {
        return true;
    }
    let Some(value) = request.headers().get(http::header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    // The scheme is case-insensitive (RFC 9110); the token is compared exactly.
    let Some((scheme, presented)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ")
        && bool::from(presented.ct_eq(token.expose().as_bytes()))
}

// === impl Auth ===

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    /// The RPC itself, or an immediate UNAUTHENTICATED.
    type Future = Either<S::Future, Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if allowed(self.token.as_deref(), &request) {
            Either::Left(self.inner.call(request))
        } else {
            Either::Right(ready(Ok(status::response(Status::unauthenticated(
                "this RPC needs `authorization: Bearer <token>`",
            )))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, authorization: Option<&str>) -> Request<Body> {
        let mut b = Request::builder().uri(path);
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn bearer_token_rules() {
        let token = Secret::new("s3cret-token");
        let t = Some(&token);
        assert!(allowed(None, &request("/a.B/C", None)));
        assert!(allowed(t, &request("/a.B/C", Some("Bearer s3cret-token"))));
        assert!(allowed(t, &request("/a.B/C", Some("bearer s3cret-token"))));
        assert!(!allowed(t, &request("/a.B/C", None)));
        assert!(!allowed(t, &request("/a.B/C", Some("Bearer s3cret-tokeN"))));
        assert!(!allowed(
            t,
            &request("/a.B/C", Some("Bearer s3cret-token "))
        ));
        assert!(!allowed(t, &request("/a.B/C", Some("Basic s3cret-token"))));
        assert!(!allowed(t, &request("/a.B/C", Some("s3cret-token"))));
        assert!(!allowed(t, &request("/a.B/C", Some("Bearer"))));
        assert!(allowed(t, &request("/grpc.health.v1.Health/Check", None)));
        assert!(!allowed(
            t,
            &request(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            )
        ));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }
}
