//! The sample `helloworld.Greeter` service.
//!
//! It answers exactly as gRPC's canonical Go example server does (`"Hello " + name`), so stock
//! helloworld clients (grpcurl scripts, the function-compute sample's `greeter_client`, grpcio)
//! see the reply they expect. It keeps no state, which makes it the cheapest smoke test of a
//! deployed bootstrap: serve it with `GreeterServer::new(Greeter)`.

use tonic::{Request, Response, Status};

use crate::proto::helloworld::greeter_server::Greeter as GreeterService;
use crate::proto::helloworld::{HelloReply, HelloRequest};

/// The stateless greeter: every `SayHello` answers `Hello <name>`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Greeter;

#[tonic::async_trait]
impl GreeterService for Greeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        // No "!" and no special case for an empty name: the canonical server has neither, and
        // clients compare the string verbatim.
        Ok(Response::new(HelloReply {
            message: format!("Hello {name}"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn greet(name: &str) -> String {
        let request = Request::new(HelloRequest {
            name: name.to_owned(),
        });
        Greeter
            .say_hello(request)
            .await
            .expect("say_hello never fails")
            .into_inner()
            .message
    }

    #[tokio::test]
    async fn greets_by_name_like_the_canonical_server() {
        assert_eq!(greet("world").await, "Hello world");
    }

    #[tokio::test]
    async fn empty_name_is_accepted() {
        assert_eq!(greet("").await, "Hello ");
    }

    #[tokio::test]
    async fn name_is_not_trimmed_or_escaped() {
        assert_eq!(greet(" Zoë <b> ").await, "Hello  Zoë <b> ");
    }
}
