//! The `jwt` block of a security policy, and the `jwt` conditions of its authorization
//! rules.

use crate::duration::Duration;
use crate::model::{ClaimValueType, Jwt, JwtPrincipal, JwtProvider, SecurityPolicy};
use crate::snapshot::{
    JwtClaimSpec, JwtPrincipalSpec, JwtProviderSpec, JwtSpec, PemSourceSpec, RemoteJwksSpec, TokenSourceSpec,
};
use crate::yaml::{at, Seg};

use super::ctx::Ctx;
use super::names::valid_name;

const MAX_PROVIDERS: usize = 16;

impl Ctx<'_, SecurityPolicy> {
    pub(super) fn jwt(&mut self, j: &Jwt) -> JwtSpec {
        if j.providers.is_empty() {
            self.err(at!["jwt", "providers"], "no providers: no token could ever pass", None);
        }
        if j.providers.len() > MAX_PROVIDERS {
            self.err(at!["jwt", "providers"], format!("more than {MAX_PROVIDERS} providers"), None);
        }
        let mut providers: Vec<JwtProviderSpec> = Vec::new();
        for (i, p) in j.providers.iter().enumerate() {
            let spec = self.jwt_provider(i, p);
            if providers.iter().any(|x| x.name == spec.name) {
                self.err(at!["jwt", "providers", i, "name"], format!("provider `{}` is listed twice", spec.name), None);
            }
            providers.push(spec);
        }
        JwtSpec { providers }
    }

    pub(super) fn jwt_principal(
        &mut self,
        path: &[Seg<'_>],
        j: &JwtPrincipal,
        jwt: Option<&JwtSpec>,
    ) -> JwtPrincipalSpec {
        let Some(jwt) = jwt else {
            self.err(path, "a `jwt` condition needs `jwt` in the same policy", None);
            return JwtPrincipalSpec { provider: None, claims: Vec::new(), scopes: Vec::new() };
        };
        if let Some(p) = &j.provider {
            if !jwt.providers.iter().any(|x| x.name == *p) {
                let names: Vec<&str> = jwt.providers.iter().map(|x| x.name.as_str()).collect();
                self.err(
                    &[path, at!["provider"]].concat(),
                    format!("unknown JWT provider `{p}`"),
                    Some(format!("the policy's providers are {}", names.join(", "))),
                );
            }
        }
        let mut claims = Vec::new();
        for (i, c) in j.claims.iter().enumerate() {
            let here = [path, at!["claims", i]].concat();
            if !valid_claim(&c.name) {
                self.err(&[&here[..], at!["name"]].concat(), format!("`{}` is not a claim name", c.name), None);
            }
            if c.values.is_empty() {
                self.err(&[&here[..], at!["values"]].concat(), "no values: the claim could never match", None);
            }
            let mut values = c.values.clone();
            values.sort();
            values.dedup();
            let value_type = c.value_type.unwrap_or(ClaimValueType::String);
            claims.push(JwtClaimSpec { name: c.name.clone(), value_type, values });
        }
        for (i, s) in j.scopes.iter().enumerate() {
            if s.is_empty() || s.contains(' ') {
                self.err(&[path, at!["scopes", i]].concat(), format!("`{s}` is not a scope"), None);
            }
        }
        let mut scopes = j.scopes.clone();
        scopes.sort();
        scopes.dedup();
        JwtPrincipalSpec { provider: j.provider.clone(), claims, scopes }
    }

    fn jwt_provider(&mut self, i: usize, p: &JwtProvider) -> JwtProviderSpec {
        let base = [Seg::Key("jwt"), Seg::Key("providers"), Seg::Index(i)];
        let here = |f: &'static str| [Seg::Key("jwt"), Seg::Key("providers"), Seg::Index(i), Seg::Key(f)];
        if valid_name(&p.name).is_err() {
            self.err(&here("name"), format!("invalid provider name `{}`", p.name), None);
        }
        if p.remote_jwks.is_none() && p.local_jwks.is_none() && p.hmac_secret.is_none() {
            self.err(
                &base,
                format!("provider `{}` has no keys", p.name),
                Some("give it `remoteJWKS: { uri }`, `localJWKS: { file }` or `hmacSecret: { file | env }`".into()),
            );
        }
        let remote_jwks = p.remote_jwks.as_ref().map(|r| {
            if let Err(why) = jwks_uri(&r.uri) {
                self.err(
                    &[&here("remoteJWKS")[..], at!["uri"]].concat(),
                    why,
                    Some("fetch keys over https; plain http only from a JWKS server on this node (loopback)".into()),
                );
            }
            let cache_duration = r.cache_duration.unwrap_or(Duration::from_millis(300_000));
            if !(10_000..=86_400_000).contains(&cache_duration.as_millis()) {
                self.err(
                    &[&here("remoteJWKS")[..], at!["cacheDuration"]].concat(),
                    format!("cacheDuration `{cache_duration}` is outside 10s..24h"),
                    None,
                );
            }
            RemoteJwksSpec { uri: r.uri.clone(), cache_duration }
        });
        let local_jwks =
            p.local_jwks.as_ref().map(|l| self.absolute_path(&[&here("localJWKS")[..], at!["file"]].concat(), &l.file));
        let hmac_secret = p.hmac_secret.as_ref().map(|s| match (&s.file, &s.env) {
            (Some(f), None) => {
                PemSourceSpec::File(self.absolute_path(&[&here("hmacSecret")[..], at!["file"]].concat(), f))
            }
            (None, Some(e)) if valid_env(e) => PemSourceSpec::Env(e.clone()),
            _ => {
                self.err(
                    &here("hmacSecret"),
                    "a secret is exactly one of `file: /abs/path` or `env: VARIABLE`",
                    Some("the secret itself never goes into the config".into()),
                );
                PemSourceSpec::Env(String::new())
            }
        });
        let extract_from = self.token_sources(i, p);
        let mut claim_to_headers = Vec::new();
        for (ci, c) in p.claim_to_headers.iter().enumerate() {
            let header =
                self.forward_header(&[&here("claimToHeaders")[..], at![ci, "header"]].concat(), Some(&c.header));
            if !valid_claim(&c.claim) {
                let path = [&here("claimToHeaders")[..], at![ci, "claim"]].concat();
                self.err(&path, format!("`{}` is not a claim name", c.claim), None);
            }
            claim_to_headers.push((header, c.claim.clone()));
        }
        let clock_skew = p.clock_skew.unwrap_or(Duration::from_millis(30_000));
        if clock_skew.as_millis() > 300_000 {
            self.err(&here("clockSkew"), format!("clockSkew `{clock_skew}` is over 5m"), None);
        }
        let mut audiences = p.audiences.clone();
        audiences.sort();
        audiences.dedup();
        JwtProviderSpec {
            name: p.name.clone(),
            issuer: p.issuer.clone(),
            audiences,
            remote_jwks,
            local_jwks,
            hmac_secret,
            extract_from,
            claim_to_headers,
            clock_skew,
        }
    }

    fn token_sources(&mut self, i: usize, p: &JwtProvider) -> Vec<TokenSourceSpec> {
        let here = [Seg::Key("jwt"), Seg::Key("providers"), Seg::Index(i), Seg::Key("extractFrom")];
        let Some(src) = &p.extract_from else {
            return vec![TokenSourceSpec::Header("authorization".into(), "Bearer ".into())];
        };
        let mut out = Vec::new();
        for (hi, h) in src.headers.iter().enumerate() {
            let name = self.header_name(&[&here[..], at!["headers", hi, "name"]].concat(), &h.name);
            out.push(TokenSourceSpec::Header(name, h.value_prefix.clone().unwrap_or_default()));
        }
        for (ci, c) in src.cookies.iter().enumerate() {
            let token =
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !token {
                self.err(&[&here[..], at!["cookies", ci]].concat(), format!("`{c}` is not a cookie name"), None);
            }
            out.push(TokenSourceSpec::Cookie(c.clone()));
        }
        for (pi, q) in src.params.iter().enumerate() {
            if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
                self.err(
                    &[&here[..], at!["params", pi]].concat(),
                    format!("`{q}` is not a query parameter name"),
                    None,
                );
            }
            out.push(TokenSourceSpec::Param(q.clone()));
        }
        if out.is_empty() {
            self.err(&here, "no place to read the token from", None);
        }
        out
    }
}

fn valid_claim(name: &str) -> bool {
    !name.is_empty() && !name.split('.').any(str::is_empty)
}

fn valid_env(e: &str) -> bool {
    !e.is_empty()
        && !e.starts_with(|c: char| c.is_ascii_digit())
        && e.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `https://…`, or `http://` to a loopback host.
fn jwks_uri(uri: &str) -> Result<(), String> {
    let u: http::Uri = uri.parse().map_err(|_| format!("`{uri}` is not a URI"))?;
    let host = u.host().ok_or_else(|| format!("`{uri}` names no host"))?;
    match u.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!("`{uri}` fetches keys over plain http from another host"))
            }
        }
        _ => Err(format!("`{uri}` is not an https URI")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_uris_are_https_or_loopback() {
        assert!(jwks_uri("https://auth.example.com/.well-known/jwks.json").is_ok());
        assert!(jwks_uri("http://127.0.0.1:8080/jwks").is_ok());
        assert!(jwks_uri("http://[::1]/jwks").is_ok());
        assert!(jwks_uri("http://auth.example.com/jwks").unwrap_err().contains("plain http"));
        assert!(jwks_uri("ftp://auth.example.com/jwks").is_err());
        assert!(jwks_uri("/jwks").is_err());
    }
}
