//! The services this bootstrap serves, and the one place they are registered.
//!
//! To add a service: put its `.proto` under `proto/` (code is generated on the next build),
//! implement the generated trait in a file here, and add one line to [`register`].

pub mod greeter;
pub mod route_guide;

use crate::Bootstrap;
use crate::proto::helloworld::greeter_server::GreeterServer;
use crate::proto::routeguide::route_guide_server::RouteGuideServer;

/// Registers every service this binary serves.
pub fn register(bootstrap: Bootstrap) -> Bootstrap {
    bootstrap
        .add_service(GreeterServer::new(greeter::Greeter))
        .add_service(RouteGuideServer::new(route_guide::RouteGuide::new()))
}
