//! Phase `admit`: the request body limit (the rule's `maxRequestBodyBytes`, else the node's
//! `--max-body-bytes`). A declared length over the limit is refused here, before anything
//! is read or sent; a body without one is cut off as it streams (`body::ReqBody::limited`).

use http::{header, HeaderMap};

use super::error::ProxyError;

/// Refuses a request whose declared body is larger than `limit`.
pub fn admit(headers: &HeaderMap, limit: u64) -> Result<(), ProxyError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit => Err(ProxyError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_over_the_limit_is_refused() {
        let with = |len: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_LENGTH, len.parse().unwrap());
            h
        };
        assert!(admit(&HeaderMap::new(), 10).is_ok(), "no length: cut off while streaming instead");
        assert!(admit(&with("10"), 10).is_ok());
        let e = admit(&with("11"), 10).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (413, "body_too_large"));
        assert!(admit(&with("not a number"), 10).is_ok(), "hyper refuses a bad length before we see it");
    }
}
