//! Value parsers for the client's command line: addresses, metadata headers, durations and
//! route-guide points/notes.
//!
//! They run inside clap, so a malformed value is reported by clap, names the offending flag and
//! exits with status 2 before anything touches the network.

use std::time::Duration;

use http::uri::Authority;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

/// One `-H key:value` flag, already validated as gRPC ASCII metadata.
#[derive(Debug, Clone)]
pub struct Header {
    pub key: AsciiMetadataKey,
    pub value: AsciiMetadataValue,
}

/// `host:port`, as FC's Go sample takes it; a URI scheme is rejected because `--tls` decides it.
pub fn addr(s: &str) -> Result<Authority, String> {
    if s.contains("://") {
        return Err("expected host:port without a scheme (use --tls for TLS)".into());
    }
    let authority: Authority = s.parse().map_err(|e| format!("not a host:port: {e}"))?;
    if authority.port_u16().is_none() {
        return Err("missing port (expected host:port)".into());
    }
    // userinfo (`user@host`) would leak into :authority and means nothing to gRPC.
    if authority.as_str().contains('@') {
        return Err("expected host:port without user information".into());
    }
    Ok(authority)
}

/// Keys the gRPC layer owns: tonic drops or overwrites them, so accepting them from `-H` would
/// silently send something other than what the user asked for.
const RESERVED: [&str; 6] = [
    "te",
    "content-type",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
    "grpc-timeout",
];

/// `key:value`, in the spirit of curl's `-H`; spaces around the value are dropped so that
/// `-H 'authorization: Bearer x'` works.
pub fn header(s: &str) -> Result<Header, String> {
    let (key, value) = s
        .split_once(':')
        .ok_or_else(|| "expected key:value".to_string())?;
    let key = key.trim();
    if key.is_empty() {
        return Err("empty metadata key".into());
    }
    // HTTP/2 forbids uppercase field names; normalising silently would hide a typo in a key
    // that a gateway (e.g. NVCF's `function-id`) matches exactly.
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("metadata key '{key}' must be lowercase"));
    }
    if key.ends_with("-bin") {
        return Err(format!(
            "metadata key '{key}' is binary (-bin); only ASCII metadata is supported"
        ));
    }
    if RESERVED.contains(&key) {
        return Err(format!(
            "metadata key '{key}' is reserved by gRPC (use --timeout for the deadline)"
        ));
    }
    let key = AsciiMetadataKey::from_bytes(key.as_bytes())
        .map_err(|_| format!("'{key}' is not a valid metadata key"))?;
    let value = value.trim();
    // gRPC's ASCII-Value is printable ASCII only; `http` would also let Latin-1 bytes through,
    // which gateways may reject or mangle.
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(format!("value of '{key}' must be printable ASCII"));
    }
    let value = AsciiMetadataValue::try_from(value)
        .map_err(|_| format!("value of '{key}' is not valid ASCII metadata"))?;
    Ok(Header { key, value })
}

/// A humantime duration (`10s`, `1500ms`, `2m`); zero is refused since it would fail every call.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// `LAT,LON` in E7 integers (degrees × 10⁷), as route_guide.proto defines them.
pub fn point(s: &str) -> Result<(i32, i32), String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| "expected LAT,LON".to_string())?;
    Ok((coordinate(lat, "latitude")?, coordinate(lon, "longitude")?))
}

/// `LAT,LON,MESSAGE`; the message is everything after the second comma, commas included.
pub fn note(s: &str) -> Result<(i32, i32, String), String> {
    let mut parts = s.splitn(3, ',');
    let (Some(lat), Some(lon), Some(message)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected LAT,LON,MESSAGE".into());
    };
    Ok((
        coordinate(lat, "latitude")?,
        coordinate(lon, "longitude")?,
        message.to_string(),
    ))
}

fn coordinate(s: &str, what: &str) -> Result<i32, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what} '{}' is not a 32-bit integer (E7)", s.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_requires_host_and_port() {
        assert_eq!(addr("127.0.0.1:8089").unwrap().as_str(), "127.0.0.1:8089");
        assert_eq!(addr("[::1]:8089").unwrap().host(), "[::1]");
        assert!(addr("localhost").is_err());
        assert!(addr("http://localhost:80").is_err());
        assert!(addr("user@host:80").is_err());
    }

    #[test]
    fn header_is_validated() {
        let h = header("authorization: Bearer abc").unwrap();
        assert_eq!(h.key.as_str(), "authorization");
        assert_eq!(h.value.to_str().unwrap(), "Bearer abc");
        assert_eq!(header("function-id:x:y").unwrap().value, "x:y");
        assert_eq!(header("k:").unwrap().value, "");
        assert!(header("novalue").is_err());
        assert!(header(":v").is_err());
        assert!(header("Function-ID:x").is_err());
        assert!(header("bad key:x").is_err());
        assert!(header("trace-bin:x").is_err());
        assert!(header("grpc-timeout:1S").is_err());
        assert!(header("k:caf\u{e9}").is_err());
        assert!(header("k:a\tb").is_err());
    }

    #[test]
    fn points_and_notes() {
        assert_eq!(
            point("409146138,-746188906").unwrap(),
            (409146138, -746188906)
        );
        assert!(point("1").is_err());
        assert!(point("1,x").is_err());
        assert_eq!(
            note("1,-2,hello, world").unwrap(),
            (1, -2, "hello, world".to_string())
        );
        assert!(note("1,2").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert!(duration("0s").is_err());
        assert!(duration("soon").is_err());
    }
}
