//! IP prefixes (`10.0.0.0/8`, `2001:db8::/32`, or a bare address) for config that
//! matches a connection's source: PROXY protocol `allowed_sources`, RBAC `source_ip`.

use std::net::IpAddr;

/// An address prefix. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// `ADDR/LEN` or `ADDR`; the host bits must be zero so a typo like `10.1.2.3/8`
    /// is not silently widened.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR (e.g. `10.0.0.0/8`)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("`{s}`: prefix length must be 0..={max}")),
            },
        };
        let c = Cidr { addr, len };
        if c.masked(addr) != addr {
            return Err(format!(
                "`{s}` has host bits set; write `{}/{len}`",
                c.masked(addr)
            ));
        }
        Ok(c)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v) => {
                let m = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(v) & m))
            }
            IpAddr::V6(v) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(v) & m))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn prefixes_match_their_range() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains(ip("10.255.1.2")));
        assert!(c.contains(ip("::ffff:10.1.1.1")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("any")
            .contains(ip("1.2.3.4")));
        assert!(!Cidr::parse("0.0.0.0/0").expect("any").contains(ip("::1")));
        let one = Cidr::parse("127.0.0.1").expect("host");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::")));
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        for bad in [
            "10.0.0.0/33",
            "10.1.0.0/8",
            "x/8",
            "10.0.0.0/+8",
            "::1/129",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
