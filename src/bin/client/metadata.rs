//! The interceptor that stamps every call with the user's `-H` metadata and the deadline.
//!
//! Doing it in one interceptor, rather than per request, means a new subcommand cannot forget
//! the headers a gateway needs (NVCF rejects calls without `function-id`/`authorization`).

use std::sync::Arc;
use std::time::Duration;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::args::Header;

#[derive(Clone)]
pub struct CallMetadata {
    headers: Arc<[Header]>,
    timeout: Duration,
}

impl CallMetadata {
    pub fn new(headers: Vec<Header>, timeout: Duration) -> Self {
        Self {
            headers: headers.into(),
            timeout,
        }
    }
}

impl Interceptor for CallMetadata {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        // `append`, not `insert`: repeating `-H key:...` sends every value, as curl does.
        for header in self.headers.iter() {
            metadata.append(header.key.clone(), header.value.clone());
        }
        // Sent as `grpc-timeout` so the server (and any gateway in between) stops working on a
        // call nobody waits for any more.
        request.set_timeout(self.timeout);
        Ok(request)
    }
}
