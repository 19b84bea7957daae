//! The PROXY protocol (v1 text and v2 binary, HAProxy's `send-proxy` / `send-proxy-v2` and
//! what cloud load balancers send) at the start of a proxy-listener connection, with
//! `--proxy-protocol`. The header names the client's address; it is believed only from a
//! `--trusted-proxies` peer, and a connection without a valid one is closed.
//!
//! The header is read with exact-length reads so not a byte of the HTTP or TLS stream
//! behind it is consumed: v2 is a 16-byte prefix that gives the rest's length; v1 is one
//! line of at most 107 bytes, read until its CRLF. Parsing is the `ppp` crate's.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest v1 header, CRLF included (the protocol's own bound).
const V1_MAX: usize = 107;
/// Largest v2 header accepted: addresses plus TLVs (cloud load balancers add a few hundred
/// bytes of them).
const V2_MAX: usize = 4096;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads the header; the client's address, or `None` for a header that names none (v2
/// `LOCAL`, a load balancer's own health check; v1 `UNKNOWN`).
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, String> {
    let mut buf = vec![0u8; 16];
    // Both kinds are at least 15 bytes long; reading 8 cannot overrun a header.
    stream.read_exact(&mut buf[..8]).await.map_err(|e| format!("reading the PROXY header: {e}"))?;
    if buf.starts_with(b"PROXY ") {
        buf.truncate(8);
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err("PROXY v1 header longer than 107 bytes".into());
            }
            let b = stream.read_u8().await.map_err(|e| format!("reading the PROXY header: {e}"))?;
            buf.push(b);
        }
    } else if buf[..8] == V2_SIGNATURE[..8] {
        stream.read_exact(&mut buf[8..16]).await.map_err(|e| format!("reading the PROXY header: {e}"))?;
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if 16 + len > V2_MAX {
            return Err(format!("PROXY v2 header of {} bytes; at most {V2_MAX} are accepted", 16 + len));
        }
        buf.resize(16 + len, 0);
        stream.read_exact(&mut buf[16..]).await.map_err(|e| format!("reading the PROXY header: {e}"))?;
    } else {
        return Err("the connection does not start with a PROXY protocol header".into());
    }
    parse(&buf)
}

fn parse(buf: &[u8]) -> Result<Option<SocketAddr>, String> {
    match ppp::HeaderResult::parse(buf) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(h)) => {
            if h.command == ppp::v2::Command::Local {
                return Ok(None);
            }
            Ok(match h.addresses {
                ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
            })
        }
        ppp::HeaderResult::V1(Err(e)) => Err(format!("malformed PROXY v1 header: {e}")),
        ppp::HeaderResult::V2(Err(e)) => Err(format!("malformed PROXY v2 header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let mut r = bytes;
        let got = read_header(&mut r).await;
        (got, r.to_vec())
    }

    #[tokio::test]
    async fn headers_are_read_exactly_and_name_the_client() {
        let (got, rest) = read(b"PROXY TCP4 198.51.100.4 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(got.unwrap(), Some("198.51.100.4:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n", "nothing behind the header is consumed");
        let (got, rest) = read(b"PROXY UNKNOWN\r\nX").await;
        assert_eq!((got.unwrap(), rest.as_slice()), (None, &b"X"[..]));
        let (got, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 443 8443\r\n").await;
        assert_eq!(got.unwrap(), Some("[2001:db8::7]:443".parse().unwrap()));

        // v2, PROXY over TCP/IPv4, with one TLV, then data.
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0, 16, 198, 51, 100, 4, 10, 0, 0, 1, 0xC8, 0x22, 0x01, 0xBB, 0x04, 0, 1, 42]);
        v2.extend(b"\x16\x03\x01");
        let (got, rest) = read(&v2).await;
        assert_eq!(got.unwrap(), Some("198.51.100.4:51234".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01");
        // v2 LOCAL (a health check): no client named.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 198.51.100.4 10.0.0.1 51234 443 and a lot more text after it that never ends with a line break at all...",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
            b"PROX",
        ] {
            assert!(read(bad).await.0.is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
