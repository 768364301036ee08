// SPDX-License-Identifier: Apache-2.0
//! Host name facts: reads `/proc/sys/kernel/{hostname,domainname,osrelease}` and `/etc/hosts`.

use std::path::Path;

use super::{Error, read_text, read_text_opt};

/// Reads the host name from `proc/sys/kernel/hostname` under `root`, trimmed.
pub fn read_hostname(root: &Path) -> Result<String, Error> {
    Ok(read_text(root, "proc/sys/kernel/hostname")?
        .trim()
        .to_owned())
}

/// Reads the kernel release (`uname -r`) from `proc/sys/kernel/osrelease` under `root`,
/// trimmed.
pub fn read_os_release_kernel(root: &Path) -> Result<String, Error> {
    Ok(read_text(root, "proc/sys/kernel/osrelease")?
        .trim()
        .to_owned())
}

/// The fully qualified domain name of `hostname`, worked out without DNS (guestd has no
/// resolver), from the text of `/etc/hosts` and the kernel's NIS domain name:
///
/// 1. a `hostname` that already contains a `.` is the FQDN;
/// 2. otherwise, on the first `/etc/hosts` line (comments and blank lines ignored; fields are
///    an address then names) whose names include `hostname` exactly: the line's first
///    (canonical) name if it contains a `.`, else the first name on the line that starts
///    with `"<hostname>."`;
/// 3. otherwise, if `domainname` is non-empty and not `(none)`, `"<hostname>.<domainname>"`;
/// 4. otherwise `hostname` itself.
pub fn fqdn(hostname: &str, hosts: Option<&str>, domainname: Option<&str>) -> String {
    if hostname.is_empty() || hostname.contains('.') {
        return hostname.to_owned();
    }
    if let Some(name) = hosts.and_then(|text| fqdn_from_hosts(hostname, text)) {
        return name.to_owned();
    }
    match domainname.map(str::trim) {
        Some(domain) if !domain.is_empty() && domain != "(none)" => {
            format!("{hostname}.{domain}")
        }
        _ => hostname.to_owned(),
    }
}

/// Step 2 of [`fqdn`]: the dotted name of `hostname` on its first `/etc/hosts` line.
fn fqdn_from_hosts<'a>(hostname: &str, hosts: &'a str) -> Option<&'a str> {
    let names = hosts.lines().find_map(|line| {
        let line = line.split_once('#').map_or(line, |(before, _)| before);
        let mut fields = line.split_whitespace();
        fields.next()?; // the address
        let names: Vec<&str> = fields.collect();
        names.contains(&hostname).then_some(names)
    })?;
    let canonical = names.first()?;
    if canonical.contains('.') {
        return Some(canonical);
    }
    names.into_iter().find(|name| {
        name.strip_prefix(hostname)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
    })
}

/// The FQDN of `hostname` (see [`fqdn`]), reading `etc/hosts` and
/// `proc/sys/kernel/domainname` under `root`. Missing or unreadable files count as absent.
pub fn read_fqdn(root: &Path, hostname: &str) -> String {
    let read = |rel: &str| match read_text_opt(root, rel) {
        Ok(text) => text,
        Err(e) => {
            log::debug!("{e}");
            None
        }
    };
    let hosts = read("etc/hosts");
    let domainname = read("proc/sys/kernel/domainname");
    fqdn(hostname, hosts.as_deref(), domainname.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    const HOSTS: &str = "# static table\n\
                         127.0.0.1\tlocalhost\n\
                         \n\
                         ::1 localhost ip6-localhost # vm1 in a comment\n\
                         192.0.2.10   vm1   vm1.lab.example   vm1-alias\n\
                         192.0.2.11   db.example.com db\n\
                         192.0.2.12   web.example.net web\n\
                         192.0.2.13   web\n";

    #[test]
    fn dotted_hostname_is_already_fqdn() {
        assert_eq!(fqdn("a.b.c", Some(HOSTS), Some("x.org")), "a.b.c");
    }

    #[test]
    fn canonical_name_from_hosts() {
        assert_eq!(fqdn("db", Some(HOSTS), None), "db.example.com");
        assert_eq!(
            fqdn("web", Some(HOSTS), Some("other.org")),
            "web.example.net"
        );
    }

    #[test]
    fn hostname_prefixed_alias_from_hosts() {
        assert_eq!(
            fqdn("vm1", Some(HOSTS), Some("other.org")),
            "vm1.lab.example"
        );
    }

    #[test]
    fn comments_and_partial_matches_do_not_count() {
        // "vm1" inside a comment and "vm1-alias" never match "vm" or a comment word.
        assert_eq!(fqdn("vm", Some(HOSTS), None), "vm");
        assert_eq!(fqdn("static", Some(HOSTS), None), "static");
        // The line matches but has no dotted name: fall through to the domain name.
        assert_eq!(
            fqdn("localhost", Some(HOSTS), Some("lab.org")),
            "localhost.lab.org"
        );
    }

    #[test]
    fn domainname_fallback() {
        assert_eq!(fqdn("vm", None, Some("example.org\n")), "vm.example.org");
        assert_eq!(fqdn("vm", None, Some("(none)\n")), "vm");
        assert_eq!(fqdn("vm", None, Some("  ")), "vm");
        assert_eq!(fqdn("vm", Some(""), None), "vm");
        assert_eq!(fqdn("", Some(HOSTS), Some("example.org")), "");
    }

    #[test]
    fn reads_fixture_tree() {
        let root = fixtures().join("host-basic");
        let name = read_hostname(&root).unwrap();
        assert_eq!(name, "vm1");
        assert_eq!(read_os_release_kernel(&root).unwrap(), "6.1.0-18-amd64");
        assert_eq!(read_fqdn(&root, &name), "vm1.lab.example.com");
    }

    #[test]
    fn reads_domainname_without_hosts() {
        let root = fixtures().join("host-domain");
        let name = read_hostname(&root).unwrap();
        assert_eq!(name, "web");
        assert_eq!(read_fqdn(&root, &name), "web.example.org");
    }

    #[test]
    fn missing_files() {
        let root = fixtures().join("host-missing");
        assert!(read_hostname(&root).unwrap_err().is_not_found());
        assert!(read_os_release_kernel(&root).unwrap_err().is_not_found());
        assert_eq!(read_fqdn(&root, "vm"), "vm");
    }
}
