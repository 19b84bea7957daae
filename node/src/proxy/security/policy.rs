//! A `SecurityPolicy` compiled for this node: its methods built, the files it names read.
//! Shared by every rule the policy guards; the phase that applies it is `security::admit`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use schemas::snapshot::SecurityPolicySpec;

use super::{apikey, authz, basic, cors, extauth, jwks, jwt};

/// One policy, ready to serve; shared by every rule it guards.
#[derive(Debug)]
pub struct Security {
    pub name: Arc<str>,
    pub cors: Option<cors::Cors>,
    pub api_keys: Option<apikey::ApiKeys>,
    pub basic: Option<basic::Basic>,
    pub jwt: Option<jwt::Jwt>,
    pub ext_auth: Option<extauth::ExtAuth>,
    pub authz: Option<authz::Authz>,
    /// Headers that carry a verified identity upstream: never taken from the client.
    pub identity_headers: Vec<HeaderName>,
    /// `WWW-Authenticate` of a request that presented no credentials.
    pub challenge: Option<HeaderValue>,
}

impl Security {
    /// Builds a policy, reading the files it names on this node (key and password files).
    pub fn build(spec: &SecurityPolicySpec, roots: &Arc<rustls::RootCertStore>) -> anyhow::Result<Self> {
        let api_keys = spec.api_key_auth.as_ref().map(|a| apikey::ApiKeys::build(a, &spec.name)).transpose()?;
        let basic = spec.basic_auth.as_ref().map(basic::Basic::build).transpose()?;
        let jwt = spec.jwt.as_ref().map(|j| jwt::Jwt::build(j, roots)).transpose()?;
        let ext_auth = spec.ext_auth.as_ref().map(|e| extauth::ExtAuth::build(e, jwks::client(roots))).transpose()?;
        let challenges: Vec<String> = jwt
            .iter()
            .map(|j| j.challenge())
            .chain(api_keys.iter().map(|a| a.challenge()))
            .chain(basic.iter().map(|b| b.challenge()))
            .collect();
        let challenge = (!challenges.is_empty())
            .then(|| HeaderValue::from_str(&challenges.join(", ")))
            .transpose()
            .map_err(|_| anyhow::anyhow!("security policy `{}`: unusable realm", spec.name))?;
        Ok(Security {
            name: Arc::from(spec.name.as_str()),
            cors: spec.cors.as_ref().map(cors::Cors::new),
            api_keys,
            basic,
            jwt,
            ext_auth,
            authz: spec.authorization.as_ref().map(authz::Authz::new),
            identity_headers: spec
                .identity_headers()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            challenge,
        })
    }
}
