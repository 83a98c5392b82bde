//! Whose request this is, by address, when a service (the gateway, a realtime node)
//! runs behind load balancers.
//!
//! The TCP peer is the client unless it is a trusted proxy (`limits.trusted_proxies`,
//! a comma-separated list of CIDRs). A trusted proxy's word is believed: the hops it
//! reports in the one header it is set to write (`limits.forwarded_header`:
//! `x-forwarded-for`, the default, or `forwarded`, RFC 7239) are walked from the
//! right, skipping further trusted proxies, and the first untrusted hop is the
//! client. The other header is never read: proxies that append to one header pass a
//! client's own copy of the other through untouched. Left of that hop the list is whatever the client chose to send, so it is
//! never read: a client cannot pick its own bucket by sending a forged header. A
//! hop that does not parse as an address ends the walk at the proxy that reported it.
//!
//! Rate limits key on [`bucket`]: an IPv4 address as it is, an IPv6 address by its
//! /64 (one subscriber's whole allocation, which one client can rotate through).

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The networks whose forwarding header is believed, and which header that is.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

/// The header trusted proxies write the client's address into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

impl FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            other => Err(format!(
                "limits.forwarded_header: {other:?} is neither x-forwarded-for nor forwarded"
            )),
        }
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// `"10.0.0.0/8, 127.0.0.1, fd00::/8"`: CIDRs or single addresses; empty: none.
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("limits.trusted_proxies: {item:?} is not an address or CIDR")
                    })
            })
            .collect::<Result<_, _>>()
            .map(|nets| TrustedProxies {
                nets,
                header: ForwardedHeader::default(),
            })
    }
}

impl TrustedProxies {
    /// The proxies of a service's settings (`limits.trusted_proxies`,
    /// `limits.forwarded_header`), or what is wrong with them.
    pub fn from_settings(list: &str, header: &str) -> Result<Self, String> {
        Ok(list
            .parse::<Self>()?
            .reading(header.parse::<ForwardedHeader>()?))
    }

    /// The same proxies, read through `header`.
    pub fn reading(self, header: ForwardedHeader) -> Self {
        Self { header, ..self }
    }

    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.nets.iter().any(|net| net.contains(&address))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The client's address: the peer's, or the right-most untrusted hop that
    /// trusted proxies reported.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        for hop in reported_hops(headers, self.header).iter().rev() {
            match hop {
                Some(address) => {
                    client = canonical(*address);
                    if !self.trusts(client) {
                        return client;
                    }
                }
                None => return client,
            }
        }
        client
    }
}

/// The hops `header` reports, left (first) to right (nearest); `None` for one
/// that is not an address (`unknown`, an obfuscated name, garbage).
fn reported_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    if header == ForwardedHeader::Forwarded {
        return headers
            .get_all("forwarded")
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.eq_ignore_ascii_case("for")
                        .then(|| forwarded_for(value))
                })?
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect()
}

/// A `for=` value of `Forwarded`: `192.0.2.1`, `"192.0.2.1:4711"`,
/// `"[2001:db8::1]:4711"`.
fn forwarded_for(value: &str) -> Option<IpAddr> {
    parse_hop(value.trim().trim_matches('"'))
}

/// An address, possibly with a port, IPv6 possibly in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket
/// reports) is the IPv4 address it maps.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The rate-limit bucket of an address: IPv4 as it is, IPv6 by its /64.
pub fn bucket(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let forged = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client(ip("10.0.0.1"), &forged), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_taken_and_left_of_it_is_ignored() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.1".parse().unwrap();
        // The client forged "6.6.6.6"; the edge proxy appended the real address,
        // an inner proxy appended the edge's.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &chain), ip("198.51.100.7"));
        // The same hops split over two header lines read the same.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7, 192.168.1.1"),
        ]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &split), ip("198.51.100.7"));
    }

    #[test]
    fn only_the_configured_header_is_read_and_forwarded_s_quoted_forms_parse() {
        let both = headers(&[
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        let by_xff: TrustedProxies = "127.0.0.1".parse().unwrap();
        assert_eq!(by_xff.client(ip("127.0.0.1"), &both), ip("198.51.100.7"));
        let by_forwarded = by_xff.clone().reading(ForwardedHeader::Forwarded);
        assert_eq!(
            by_forwarded.client(ip("127.0.0.1"), &both),
            ip("2001:db8:cafe::17")
        );
        let port = headers(&[("forwarded", "for=\"192.0.2.60:8080\";by=10.0.0.1")]);
        assert_eq!(
            by_forwarded.client(ip("127.0.0.1"), &port),
            ip("192.0.2.60")
        );
        // A client's own Forwarded, passed through by a proxy that appends to
        // X-Forwarded-For, chooses nothing.
        let forged = headers(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(by_xff.client(ip("127.0.0.1"), &forged), ip("198.51.100.7"));
        assert!("via".parse::<ForwardedHeader>().is_err());
    }

    #[test]
    fn a_hop_that_is_not_an_address_stops_at_the_proxy_that_reported_it() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let garbage = headers(&[("x-forwarded-for", "1.2.3.4, unknown, 10.0.0.5")]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &garbage), ip("10.0.0.5"));
        let only_proxies = headers(&[("x-forwarded-for", "10.0.0.7")]);
        assert_eq!(
            trusted.client(ip("10.0.0.9"), &only_proxies),
            ip("10.0.0.7")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.9"), &HeaderMap::new()),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn ipv6_addresses_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa::1")),
            bucket(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_ne!(bucket(ip("192.0.2.1")), bucket(ip("192.0.2.2")));
        let trusted: TrustedProxies = "127.0.0.1".parse().unwrap();
        assert!(trusted.trusts(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn a_bad_list_is_refused_naming_the_entry() {
        let error = "10.0.0.0/8, nonsense"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(error.contains("\"nonsense\""), "{error}");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }
}
