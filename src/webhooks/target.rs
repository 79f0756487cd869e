//! Where deliveries may go (SSRF): only public addresses, unless the operator allows
//! private ones (`serve --webhook-allow-private`). A URL's host is checked when it is an
//! address, and every address a name resolves to is checked when the request connects (a
//! name that resolves to a private address is refused at connect time, so DNS rebinding
//! gains nothing). Redirects are never followed, proxies never used: a 3xx is a failed
//! attempt.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address on the public internet (not loopback, private, link-local —
/// cloud metadata services live there —, shared, reserved, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // Documentation (2001:db8::/32) and the deprecated site-local fec0::/10.
                || segments[0] == 0x2001 && segments[1] == 0xdb8
                || segments[0] & 0xffc0 == 0xfec0
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || a == 100 && (64..128).contains(&b)
        // IETF protocol assignments, 192.0.0.0/24.
        || a == 192 && b == 0 && c == 0
        // Benchmarking, 198.18.0.0/15.
        || a == 198 && (b == 18 || b == 19)
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

/// Checks a URL an endpoint is registered with: `https` or `http`, a host, no user or
/// password, and — unless `allow_private` — not an address outside the public internet.
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|err| format!("is not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("must be an https:// (or http://) URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user or password (the signature authenticates)".into());
    }
    let refused = |ip: IpAddr| {
        format!("{ip} is not a public address; allow private ones with --webhook-allow-private")
    };
    match parsed.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Ipv4(ip)) if !allow_private && !is_public(ip.into()) => {
            return Err(refused(ip.into()));
        }
        Some(url::Host::Ipv6(ip)) if !allow_private && !is_public(ip.into()) => {
            return Err(refused(ip.into()));
        }
        Some(url::Host::Domain(name))
            if !allow_private && (name == "localhost" || name.ends_with(".localhost")) =>
        {
            return Err(format!(
                "{name} is this machine; allow private addresses with --webhook-allow-private"
            ));
        }
        _ => {}
    }
    Ok(parsed)
}

/// Resolves names, refusing any that resolves to a private address (unless allowed).
struct Guard {
    allow_private: bool,
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(format!(
                    "{host} resolves to {}, not a public address (--webhook-allow-private \
                     allows it)",
                    bad.ip()
                )
                .into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client of deliveries: `timeout` for each whole attempt, no redirects, no
/// proxies, names resolved through the guard.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(Guard { allow_private }))
        .user_agent(concat!("allot-webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("a client of fixed settings builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public}");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hooks.example.com/allot", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://localhost/",
            "http://169.254.169.254/latest/meta-data",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
    }
}
