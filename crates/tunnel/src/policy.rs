//! The exit policy: a node must never become a door into its owner's LAN
//! (issue 5). Checked by the exit on every address a destination resolves
//! to, after resolution, so a name that points at 192.168.1.1 is refused
//! like the address itself.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tollway_types::ip::{embedded_ipv4, Embedding};

/// Which class of address an exit refuses by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forbidden {
    Loopback,
    Private,
    LinkLocal,
    /// Cloud metadata services (169.254.169.254, fd00:ec2::254).
    Metadata,
    /// 0.0.0.0/8, ::, broadcast, multicast, documentation and reserved.
    Special,
    /// 100.64.0.0/10: the ISP's side of carrier-grade NAT.
    SharedAddressSpace,
    /// A port the operator denied (e.g. SMTP 25).
    Port(u16),
    /// One of the node's own public addresses: behind a home router that
    /// is the router itself (its admin page, through hairpin NAT), and on
    /// a server every service bound to all interfaces.
    OwnAddress,
    /// In the /64 of one of the node's own IPv6 addresses: a home's IPv6
    /// LAN is global, so its router, NAS and printers there are public
    /// addresses, kept apart from the internet only by the router's
    /// firewall, which the exit sits behind.
    OwnNetwork,
}

impl Forbidden {
    pub fn describe(&self) -> String {
        match self {
            Forbidden::Loopback => "a loopback address".into(),
            Forbidden::Private => "a private (LAN) address".into(),
            Forbidden::LinkLocal => "a link-local address".into(),
            Forbidden::Metadata => "a cloud metadata address".into(),
            Forbidden::Special => "a reserved, multicast or unspecified address".into(),
            Forbidden::SharedAddressSpace => "a carrier-grade NAT address".into(),
            Forbidden::Port(p) => format!("port {p}, which this exit denies"),
            Forbidden::OwnAddress => "the exit's own address".into(),
            Forbidden::OwnNetwork => "an address on the exit's own IPv6 network (its /64)".into(),
        }
    }
}

/// What an exit may connect to. The default refuses every local class;
/// the devnet turns `allow_loopback` on for its test servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub denied_ports: Vec<u16>,
    /// The node's own addresses (its ledger record's and the one it
    /// listens on), refused like its LAN; a local one is judged by its
    /// class alone, so the devnet's loopback node still reaches its
    /// loopback test servers.
    pub own_addrs: Vec<IpAddr>,
}

impl ExitPolicy {
    /// `Ok` if the exit may connect to `ip:port`.
    pub fn check(&self, ip: IpAddr, port: u16) -> Result<(), Forbidden> {
        let public = check_port_and_class(self.allow_loopback, self.allow_private, &self.denied_ports, ip, port)?;
        // A local address is judged by its class alone: the devnet's
        // loopback node still reaches its loopback test servers.
        if !public {
            Ok(())
        } else if self.own_addrs.iter().any(|own| own.to_canonical() == ip.to_canonical()) {
            Err(Forbidden::OwnAddress)
        } else if self.own_addrs.iter().any(|own| same_64(*own, ip)) {
            Err(Forbidden::OwnNetwork)
        } else {
            Ok(())
        }
    }

    /// What the node's hello tells its clients of this policy.
    pub fn announced(&self) -> AnnouncedPolicy {
        AnnouncedPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private,
            denied_ports: self.denied_ports.clone(),
        }
    }
}

/// What a node's hello tells its clients of its exit policy (since protocol
/// version 4): the local classes it allows and the ports it denies. A
/// client then refuses an IP-literal destination the exit would refuse at
/// once, with a reply its program can read, where its optimistic answer
/// (a success, for time to first byte) was followed by a closed connection.
/// The node's own addresses stay out of it: they are its host's to keep,
/// and a client could not know them all anyway (the exit refuses those
/// itself, as it does names that resolve into its LAN).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub denied_ports: Vec<u16>,
}

impl AnnouncedPolicy {
    /// `Err` if the exit refuses `ip:port` whatever else it knows: a
    /// refusal here is one the exit makes too (`ExitPolicy::check`), an
    /// `Ok` may still be refused there.
    pub fn check(&self, ip: IpAddr, port: u16) -> Result<(), Forbidden> {
        check_port_and_class(self.allow_loopback, self.allow_private, &self.denied_ports, ip, port).map(|_| ())
    }

    /// `Err` if the exit refuses every address on `port`: a destination
    /// named, not numbered, is refused on it too.
    pub fn check_port(&self, port: u16) -> Result<(), Forbidden> {
        check_port(&self.denied_ports, port)
    }
}

fn check_port(denied_ports: &[u16], port: u16) -> Result<(), Forbidden> {
    if denied_ports.contains(&port) {
        Err(Forbidden::Port(port))
    } else {
        Ok(())
    }
}

/// The part of the exit policy a client can apply too: the denied ports
/// and the address classes. `Ok(true)` for a public address.
fn check_port_and_class(
    allow_loopback: bool,
    allow_private: bool,
    denied_ports: &[u16],
    ip: IpAddr,
    port: u16,
) -> Result<bool, Forbidden> {
    check_port(denied_ports, port)?;
    match classify(ip) {
        None => Ok(true),
        Some(Forbidden::Loopback) if allow_loopback => Ok(false),
        Some(Forbidden::Private) if allow_private => Ok(false),
        Some(class) => Err(class),
    }
}

/// Whether `a` and `b` are IPv6 addresses in one /64 (a LAN's prefix).
fn same_64(a: IpAddr, b: IpAddr) -> bool {
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

/// The local class `ip` belongs to, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4-mapped address reaches the IPv4 host.
            if let Some((Embedding::Mapped, v4)) = embedded_ipv4(&v6) {
                return classify_v4(v4);
            }
            classify_v6(v6)
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, _, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some(Forbidden::Metadata)
    } else if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if ip.is_private() {
        Some(Forbidden::Private)
    } else if ip.is_link_local() {
        Some(Forbidden::LinkLocal)
    } else if a == 100 && (64..128).contains(&b) {
        Some(Forbidden::SharedAddressSpace)
    } else if a == 0
        || a >= 224
        || ip.is_broadcast()
        || ip.is_documentation()
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
    {
        Some(Forbidden::Special)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let first = ip.segments()[0];
    // A constant, not the text parsed: a client checks every IPv6 literal
    // its programs ask for before it answers them.
    const EC2_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if ip == EC2_METADATA {
        Some(Forbidden::Metadata)
    } else if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        // fc00::/7, unique local: the IPv6 LAN; and fec0::/10, site-local,
        // deprecated, but still routed like any LAN prefix.
        Some(Forbidden::Private)
    } else if first & 0xffc0 == 0xfe80 {
        Some(Forbidden::LinkLocal)
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || first == 0x2001 && ip.segments()[1] == 0x0db8
    {
        Some(Forbidden::Special)
    } else if first == 0x64 && ip.segments()[1..3] == [0xff9b, 1] {
        // NAT64's local-use 64:ff9b:1::/48 (RFC 8215) is refused whole: an
        // operator may lay it out as a /48 to /64 prefix, whose IPv4
        // address sits elsewhere, so no reading of it can be trusted.
        Some(Forbidden::Special)
    } else {
        match embedded_ipv4(&ip) {
            // ::a.b.c.d (deprecated IPv4-compatible) still names an IPv4 host.
            Some((Embedding::Mapped | Embedding::Compatible, v4)) => classify_v4(v4).or(Some(Forbidden::Special)),
            // 6to4 (RFC 3056): on a host with a 6to4 route the kernel sends
            // 2002:c0a8:101:: to the IPv4 host it embeds, 192.168.1.1. On an
            // IPv6-only line with NAT64 (mobile networks, some ISPs) the
            // gateway connects to the embedded IPv4 host: 64:ff9b::c0a8:101
            // is the owner's 192.168.1.1.
            Some((Embedding::SixToFour | Embedding::Nat64, v4)) => classify_v4(v4),
            // A Teredo address embeds its client's public address, not a
            // host the relay would connect to.
            Some((Embedding::Teredo, _)) | None => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(policy: &ExitPolicy, addr: &str, port: u16) -> Result<(), Forbidden> {
        policy.check(addr.parse().unwrap(), port)
    }

    #[test]
    fn default_policy_refuses_the_owners_lan_and_metadata() {
        let p = ExitPolicy::default();
        assert_eq!(check(&p, "10.0.0.1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "192.168.1.1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "172.16.5.4", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "169.254.169.254", 80), Err(Forbidden::Metadata));
        assert_eq!(check(&p, "169.254.1.1", 80), Err(Forbidden::LinkLocal));
        assert_eq!(check(&p, "127.0.0.1", 80), Err(Forbidden::Loopback));
        assert_eq!(check(&p, "::1", 80), Err(Forbidden::Loopback));
        assert_eq!(check(&p, "::ffff:192.168.1.1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "::ffff:127.0.0.1", 80), Err(Forbidden::Loopback));
        assert_eq!(check(&p, "fd12::1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "fe80::1", 80), Err(Forbidden::LinkLocal));
        assert_eq!(check(&p, "0.0.0.0", 80), Err(Forbidden::Special));
        assert_eq!(check(&p, "::", 80), Err(Forbidden::Special));
        assert_eq!(
            check(&p, "100.64.0.1", 80),
            Err(Forbidden::SharedAddressSpace)
        );
        assert_eq!(check(&p, "224.0.0.1", 80), Err(Forbidden::Special));
        assert_eq!(check(&p, "93.184.216.34", 443), Ok(()));
        assert_eq!(check(&p, "2a00:1450::1", 443), Ok(()));
    }

    /// Through a NAT64 gateway the IPv6 address reaches the IPv4 host it
    /// embeds: the LAN and metadata stay refused, the public internet not.
    #[test]
    fn nat64_addresses_are_judged_by_the_ipv4_host_inside() {
        let p = ExitPolicy::default();
        assert_eq!(check(&p, "64:ff9b::192.168.1.1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "64:ff9b::a00:1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "64:ff9b::169.254.169.254", 80), Err(Forbidden::Metadata));
        assert_eq!(check(&p, "64:ff9b::127.0.0.1", 80), Err(Forbidden::Loopback));
        // The local-use /48 is refused whole: an operator may lay it out so
        // that 64:ff9b:1:c0a8:1:100:5db8:d822, read as a /96, looks like
        // 93.184.216.34 while it is translated to 192.168.1.1.
        assert_eq!(check(&p, "64:ff9b:1::c0a8:101", 80), Err(Forbidden::Special));
        assert_eq!(check(&p, "64:ff9b:1:c0a8:1:100:5db8:d822", 80), Err(Forbidden::Special));
        assert_eq!(check(&p, "64:ff9b::93.184.216.34", 443), Ok(()));
        // Not NAT64: an ordinary global address that shares the first bits.
        assert_eq!(check(&p, "64:ff9c::a00:1", 443), Ok(()));
    }

    /// Site-local fec0::/10 is a LAN prefix too, and a 6to4 address is
    /// judged by the IPv4 host inside it.
    #[test]
    fn site_local_and_6to4_addresses_are_judged_like_the_lan_they_reach() {
        let p = ExitPolicy::default();
        assert_eq!(check(&p, "fec0::1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "feff::1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "2002:c0a8:101::1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "2002:7f00:1::1", 80), Err(Forbidden::Loopback));
        assert_eq!(check(&p, "2002:a9fe:a9fe::1", 80), Err(Forbidden::Metadata));
        assert_eq!(check(&p, "2002:5db8:d822::1", 443), Ok(()), "93.184.216.34 inside");
    }

    #[test]
    fn devnet_allows_loopback_but_still_not_the_lan() {
        let p = ExitPolicy {
            allow_loopback: true,
            ..ExitPolicy::default()
        };
        assert_eq!(check(&p, "127.0.0.1", 8080), Ok(()));
        assert_eq!(check(&p, "10.0.0.1", 80), Err(Forbidden::Private));
        assert_eq!(check(&p, "169.254.169.254", 80), Err(Forbidden::Metadata));
    }

    #[test]
    fn the_nodes_own_public_addresses_are_refused() {
        let p = ExitPolicy {
            own_addrs: vec!["93.184.216.7".parse().unwrap(), "2a00:1450::7".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            allow_loopback: true,
            ..ExitPolicy::default()
        };
        assert_eq!(check(&p, "93.184.216.7", 22), Err(Forbidden::OwnAddress));
        assert_eq!(check(&p, "::ffff:93.184.216.7", 80), Err(Forbidden::OwnAddress));
        assert_eq!(check(&p, "2a00:1450::7", 443), Err(Forbidden::OwnAddress));
        // Its IPv6 LAN's neighbours (the router at ::1, a NAS), in its /64;
        // the next /64 is someone else's.
        assert_eq!(check(&p, "2a00:1450::1", 80), Err(Forbidden::OwnNetwork));
        assert_eq!(check(&p, "2a00:1450:0:0:aaaa:bbbb:cccc:dddd", 445), Err(Forbidden::OwnNetwork));
        assert_eq!(check(&p, "2a00:1450:0:1::1", 80), Ok(()));
        assert_eq!(check(&p, "93.184.216.8", 80), Ok(()));
        // A loopback one is a matter of allow_loopback (the devnet's).
        assert_eq!(check(&p, "127.0.0.1", 8080), Ok(()));
    }

    /// What a node announces refuses only what its whole policy refuses,
    /// and everything it does but the node's own addresses.
    #[test]
    fn the_announced_policy_refuses_what_the_exit_refuses_but_its_own_addresses() {
        let addrs = [
            "10.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "64:ff9b::a00:1",
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "169.254.169.254",
            "fd00:ec2::254",
            "fd12::1",
            "93.184.216.34",
            "93.184.216.7",
            "2a00:1450::1",
        ];
        for allow_loopback in [false, true] {
            for allow_private in [false, true] {
                let full = ExitPolicy {
                    allow_loopback,
                    allow_private,
                    denied_ports: vec![25],
                    own_addrs: vec!["93.184.216.7".parse().unwrap(), "2a00:1450::7".parse().unwrap()],
                };
                let announced = full.announced();
                for addr in addrs {
                    for port in [25, 80] {
                        let (exit, client) = (check(&full, addr, port), announced.check(addr.parse().unwrap(), port));
                        match client {
                            Err(_) => assert_eq!(client, exit, "{addr}:{port}"),
                            Ok(()) => assert!(
                                exit.is_ok() || matches!(exit, Err(Forbidden::OwnAddress | Forbidden::OwnNetwork)),
                                "{addr}:{port}: {exit:?}"
                            ),
                        }
                    }
                }
            }
        }
        let strict = ExitPolicy::default().announced();
        assert_eq!(strict.check("fd00:ec2::254".parse().unwrap(), 80), Err(Forbidden::Metadata));
    }

    #[test]
    fn denied_ports_apply_to_public_addresses() {
        let p = ExitPolicy {
            denied_ports: vec![25],
            ..ExitPolicy::default()
        };
        assert_eq!(check(&p, "93.184.216.34", 25), Err(Forbidden::Port(25)));
        assert_eq!(check(&p, "93.184.216.34", 587), Ok(()));
    }
}
