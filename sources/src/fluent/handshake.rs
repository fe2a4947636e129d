//! The forward protocol's shared-key handshake: the server sends HELO with a nonce, the client
//! answers PING with `sha512_hex(salt + client_hostname + nonce + shared_key)`, and the server
//! answers PONG with its own digest `sha512_hex(salt + server_hostname + nonce + shared_key)`
//! so the client can check the server too. User/password authentication is not offered (the
//! HELO's `auth` salt is empty).

use rmpv::Value;
use sha2::{Digest, Sha512};

/// The HELO message for a nonce.
pub fn helo(nonce: &[u8]) -> Value {
    Value::Array(vec![
        Value::from("HELO"),
        Value::Map(vec![
            (Value::from("nonce"), Value::Binary(nonce.to_vec())),
            (Value::from("auth"), Value::Binary(Vec::new())),
            (Value::from("keepalive"), Value::Boolean(true)),
        ]),
    ])
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::String(s) => Some(s.as_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// `sha512_hex(salt + hostname + nonce + key)`.
pub fn digest(salt: &[u8], hostname: &[u8], nonce: &[u8], key: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(salt);
    h.update(hostname);
    h.update(nonce);
    h.update(key);
    hex::encode(h.finalize())
}

/// Checks a PING; returns the PONG to send and whether the client is authenticated.
pub fn pong(ping: &Value, nonce: &[u8], shared_key: &str, server_hostname: &str) -> (Value, bool) {
    let reply = |ok: bool, reason: &str, salt: &[u8]| {
        Value::Array(vec![
            Value::from("PONG"),
            Value::Boolean(ok),
            Value::from(reason),
            Value::from(server_hostname),
            Value::from(if ok {
                digest(
                    salt,
                    server_hostname.as_bytes(),
                    nonce,
                    shared_key.as_bytes(),
                )
            } else {
                String::new()
            }),
        ])
    };
    let Value::Array(p) = ping else {
        return (reply(false, "expected a PING array", b""), false);
    };
    if p.len() < 4 || p[0].as_str() != Some("PING") {
        return (reply(false, "expected PING", b""), false);
    }
    let (Some(host), Some(salt), Some(got)) = (bytes(&p[1]), bytes(&p[2]), bytes(&p[3])) else {
        return (reply(false, "malformed PING", b""), false);
    };
    let want = digest(salt, host, nonce, shared_key.as_bytes());
    // Compare without an early exit on the first differing byte.
    let same = want.len() == got.len()
        && want
            .bytes()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        (reply(true, "", salt), true)
    } else {
        (reply(false, "shared key mismatch", salt), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_accepts_the_right_key_only() {
        let nonce = b"0123456789abcdef";
        let ping = |key: &str| {
            Value::Array(vec![
                Value::from("PING"),
                Value::from("client-1"),
                Value::from("salt"),
                Value::from(digest(b"salt", b"client-1", nonce, key.as_bytes())),
                Value::from(""),
                Value::from(""),
            ])
        };
        let (reply, ok) = pong(&ping("secret"), nonce, "secret", "weir");
        assert!(ok);
        let Value::Array(r) = reply else {
            panic!("PONG is an array")
        };
        assert_eq!(
            r[4].as_str(),
            Some(digest(b"salt", b"weir", nonce, b"secret").as_str())
        );
        let (_, ok) = pong(&ping("wrong"), nonce, "secret", "weir");
        assert!(!ok);
        assert!(!pong(&Value::from(1), nonce, "secret", "weir").1);
    }
}
