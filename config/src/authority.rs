//! `host[:port]` as written in the URLs of the configuration (`upstream.url`, `--redis`):
//! one parser, so both say the same thing about the same mistake.

/// Splits `host[:port]` (IPv6 in brackets); `default_port` when none is written.
pub(crate) fn parse(authority: &str, default_port: u16) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "an IPv6 address must be closed with ]".to_string())?;
        match after.strip_prefix(':') {
            Some(p) => (host, parse_port(p)?),
            None if after.is_empty() => (host, default_port),
            None => return Err("unexpected text after the IPv6 address".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err("must name a host".into());
    }
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{p}` is not a port (1-65535)")),
    }
}
