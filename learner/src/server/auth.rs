//! Shared-token authentication: every call must carry `authorization: Bearer <token>` when a token is set.

use crate::error::Error;
use tonic::{Request, Status};

/// A gRPC interceptor that checks the bearer token (in constant time) and counts rejections.
#[derive(Clone)]
pub struct TokenAuth {
    expected: Option<std::sync::Arc<str>>,
}

impl TokenAuth {
    /// Checks against `token`; `None` lets every call through.
    pub fn new(token: Option<String>) -> Self {
        Self { expected: token.filter(|t| !t.is_empty()).map(Into::into) }
    }

    fn check(&self, presented: Option<&[u8]>) -> Result<(), Error> {
        let Some(expected) = &self.expected else { return Ok(()) };
        let Some(value) = presented else {
            return Err(Error::Unauthenticated("missing authorization metadata (expected `Bearer <token>`)".into()));
        };
        let token = value.strip_prefix(b"Bearer ").unwrap_or(value);
        if constant_time_eq(token, expected.as_bytes()) {
            Ok(())
        } else {
            Err(Error::Unauthenticated("invalid token".into()))
        }
    }
}

impl tonic::service::Interceptor for TokenAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self.check(request.metadata().get("authorization").map(|v| v.as_bytes())) {
            Ok(()) => Ok(request),
            Err(e) => {
                crate::server::handlers::count_rejection(&e);
                Err(e.into())
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rules() {
        let auth = TokenAuth::new(Some("s3cret".into()));
        assert!(auth.check(Some(b"Bearer s3cret")).is_ok());
        assert!(auth.check(Some(b"Bearer wrong")).is_err());
        assert!(auth.check(Some(b"Bearer s3cre")).is_err());
        assert!(auth.check(None).is_err());
        assert!(TokenAuth::new(None).check(None).is_ok());
    }
}
